"""Backbones: output shapes across channels and sizes, local weight round trips, and clear weight errors."""
import pytest
import torch

from models.backbones import BACKBONES, BackboneWeightsError, create_backbone

SHAPE_CASES = [("small_cnn", 1, 8), ("small_cnn", 3, 28), ("small_cnn", 1, 64),
               ("resnet18", 1, 28), ("resnet18", 3, 64), ("resnet50", 3, 32), ("resnet50", 1, 16)]


def test_registry_lists_the_backbones():
    assert BACKBONES.names() == ["efficientnet_b0", "googlenet", "resnet101", "resnet18", "resnet34", "resnet50",
                                 "small_cnn", "vit_b_16"]
    assert {p["name"] for p in BACKBONES.entry("small_cnn").schema()["params"]} == {"width", "blocks"}


@pytest.mark.parametrize("name,channels,size", SHAPE_CASES)
def test_output_shape_matches_out_features(name, channels, size):
    net = create_backbone(name, channels, size).eval()
    with torch.no_grad():
        out = net(torch.randn(2, channels, size, size))
    assert out.shape == (2, net.out_features)
    assert torch.isfinite(out).all()


def test_out_features_per_backbone():
    assert create_backbone("small_cnn", 1, 28).out_features == 128
    assert create_backbone("small_cnn", 1, 28, width=8, blocks=2).out_features == 16
    assert create_backbone("resnet18", 3, 32).out_features == 512


def test_small_cnn_gradients_reach_the_first_layer():
    net = create_backbone("small_cnn", 3, 16)
    net(torch.randn(4, 3, 16, 16)).pow(2).sum().backward()
    assert net.features[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,channels,size", [("small_cnn", 3, 16), ("resnet18", 1, 32)])
def test_weights_round_trip(tmp_path, name, channels, size):
    src = create_backbone(name, channels, size)
    with torch.no_grad():  # distinctive values, so a silent no-load would show
        for p in src.parameters():
            p.uniform_(-1, 1)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = create_backbone(name, channels, size, weights=str(path))
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_wrappers_and_classifier_head_are_unpacked(tmp_path):
    src = create_backbone("small_cnn", 1, 16)
    path = tmp_path / "ckpt.pt"
    state = {f"backbone.{k}": v for k, v in src.state_dict().items()} | {"head.weight": torch.zeros(4, 128)}
    torch.save({"model": state, "epoch": 3}, path)
    dst = create_backbone("small_cnn", 1, 16, weights=str(path))
    assert torch.equal(dst.features[0].weight, src.features[0].weight)


def test_rgb_first_conv_is_summed_for_grey_and_fc_dropped(tmp_path):
    rgb = create_backbone("resnet18", 3, 32)
    path = tmp_path / "imagenet_like.pt"
    torch.save(rgb.state_dict() | {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    grey = create_backbone("resnet18", 1, 32, weights=str(path))
    assert torch.allclose(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grey.eval()(x), rgb.eval()(x.expand(1, 3, 32, 32)), atol=1e-5)


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(BackboneWeightsError, match="not found"):
        create_backbone("small_cnn", 1, 16, weights=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(BackboneWeightsError, match="not a readable torch weights file"):
        create_backbone("small_cnn", 1, 16, weights=str(bad))


def test_non_tensor_pickle_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"weight": torch.nn.Linear(2, 2)}, path)  # a module object needs code to unpickle
    with pytest.raises(BackboneWeightsError, match="not a plain state_dict"):
        create_backbone("small_cnn", 1, 16, weights=str(path))


def test_mismatched_weights_name_the_keys(tmp_path):
    path = tmp_path / "narrow.pt"
    torch.save(create_backbone("small_cnn", 1, 16, width=8).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match=r"shape mismatches \(\d+\): features.0.weight"):
        create_backbone("small_cnn", 1, 16, weights=str(path))
    torch.save(create_backbone("resnet18", 3, 32).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match=r"missing keys .*layer1.0.conv3.weight"):
        create_backbone("resnet50", 3, 32, weights=str(path))


def test_torchvision_weight_names_come_only_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneWeightsError, match="not in the torch hub cache .*Fetch https://"):
        create_backbone("resnet18", 3, 32, weights="IMAGENET1K_V1")
    with pytest.raises(BackboneWeightsError, match="known names: IMAGENET1K_V1"):
        create_backbone("resnet18", 3, 32, weights="IMAGENET9K")
    with pytest.raises(BackboneWeightsError, match="no published weights"):
        create_backbone("small_cnn", 3, 32, weights="IMAGENET1K_V1")
    src = create_backbone("resnet18", 3, 32)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    dst = create_backbone("resnet18", 3, 32, weights="ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_channels must be 1"):
        create_backbone("small_cnn", 4, 16)
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        create_backbone("vgg", 3, 32)
