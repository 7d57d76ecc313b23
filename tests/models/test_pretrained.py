"""Pretrained backbones: every torchvision architecture takes its own ImageNet-shaped state_dict (generated
here with weights=None, never downloaded), `pretrained="imagenet"` reads the torch hub cache and fails fast
and clearly offline, and frozen BatchNorm keeps its statistics and affine weights through training steps."""
import time

import pytest
import torch
import torchvision

from models.backbones import BackboneWeightsError, create_backbone, imagenet_weights_file
from models.config import RunConfig
from models.network import EmbeddingNet

# name → (torchvision factory kwargs, out_features); the files are the full ImageNet classifiers, head included
ARCHS = {"resnet18": ({}, 512), "resnet34": ({}, 512), "efficientnet_b0": ({}, 1280),
         "googlenet": ({"aux_logits": True, "init_weights": False}, 1024), "vit_b_16": ({}, 768),
         "resnet50": ({}, 2048), "resnet101": ({}, 2048)}


@pytest.mark.parametrize("name", ["resnet34", "efficientnet_b0", "googlenet", "vit_b_16"])
def test_features_shape_of_new_backbones(name):
    size = 224 if name == "vit_b_16" else 64
    net = create_backbone(name, 3, size).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, size, size))
    assert out.shape == (1, ARCHS[name][1]) == (1, net.out_features)


def test_grey_images_get_a_one_channel_first_conv():
    net = create_backbone("efficientnet_b0", 1, 32).eval()
    assert net.features[0][0].in_channels == 1
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1280)


def _imagenet_file(path, name="resnet18"):
    """A torchvision classifier's state_dict with distinctive values, as the published files hold it."""
    kwargs, _ = ARCHS[name]
    full = getattr(torchvision.models, name)(weights=None, **kwargs)
    with torch.no_grad():
        for p in full.parameters():
            p.uniform_(-1, 1)
    torch.save(full.state_dict(), path)
    return full.state_dict()


def test_a_googlenet_file_with_aux_heads_loads(tmp_path):
    state = _imagenet_file(tmp_path / "g.pt", "googlenet")
    net = create_backbone("googlenet", 3, 64, weights=str(tmp_path / "g.pt"))
    assert torch.equal(net.state_dict()["conv1.conv.weight"], state["conv1.conv.weight"])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache; downloads go through a proxy on a closed local port, so they fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_weights_come_from_the_cache(hub):
    expected = hub / torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    hub.mkdir(parents=True)
    state = _imagenet_file(expected)
    assert imagenet_weights_file("resnet18") == expected
    net = create_backbone("resnet18", 3, 32, pretrained="imagenet")
    assert torch.equal(net.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    model = EmbeddingNet(RunConfig(backbone="resnet18", pretrained="imagenet"), 3, 32)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], state["conv1.weight"])


def test_offline_imagenet_is_a_clear_error_within_seconds(hub):
    start = time.monotonic()
    with pytest.raises(BackboneWeightsError) as err:
        create_backbone("resnet18", 3, 32, pretrained="imagenet")
    took = time.monotonic() - start
    message = str(err.value)
    assert "could not download the ImageNet weights of resnet18" in message
    assert str(hub) in message and "POST /api/weights" in message and "--pretrained-weights" in message
    assert not any(hub.glob("*.pth")), "no partial file may stay in the cache"
    assert took < 30, took  # bounded attempt, not a hang; generous for a loaded machine


def test_pretrained_needs_published_weights_and_excludes_a_file(tmp_path):
    with pytest.raises(BackboneWeightsError, match="no published weights"):
        create_backbone("small_cnn", 3, 16, pretrained="imagenet")
    with pytest.raises(ValueError, match="exclude each other"):
        RunConfig(backbone="resnet18", pretrained="imagenet", weights_id="0123456789ab")


def test_an_unresolved_weights_id_never_trains_from_scratch_silently():
    config = RunConfig(backbone="resnet18", weights_id="0123456789ab")
    with pytest.raises(ValueError, match="only the server can resolve"):
        EmbeddingNet(config, 3, 32)
    assert EmbeddingNet(config.skeleton(), 3, 32).backbone.out_features == 512  # a checkpoint's skeleton builds


def test_frozen_batchnorm_keeps_statistics_and_affine_weights():
    config = RunConfig(backbone="small_cnn", freeze_bn=True, embedding_dim=8)
    model = EmbeddingNet(config, 3, 16)
    bn = model.backbone.features[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert not bn.training and model.head.training
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(8, 3, 16, 16) * 255).embedding.pow(2).sum().backward()
        opt.step()
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert bn.weight.grad is None
    unfrozen = EmbeddingNet(config.model_copy(update={"freeze_bn": False}), 3, 16).train()
    unfrozen(torch.rand(8, 3, 16, 16) * 255)
    assert unfrozen.backbone.features[1].training
    assert not torch.equal(unfrozen.backbone.features[1].running_mean, torch.zeros_like(bn.running_mean))
