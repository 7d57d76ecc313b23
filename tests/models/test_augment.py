"""The images a model sees: torchvision-equal random crops, seeded training views, the evaluation view shared by
evaluation and queries, and ImageNet normalisation applied exactly once, inside the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF

from models.augment import (IMAGENET_MEAN, IMAGENET_STD, eval_pixels, eval_resize, input_normalisation,
                            resized_crop_box, sample_generator, train_view)
from models.config import RunConfig
from models.data import import_builtin
from models.data.imageset import center_crop
from models.trainer import build_model

STANDARD = {"augment": {"mode": "standard"}}


@pytest.mark.parametrize("shape", [(40, 30), (30, 40), (20, 200), (200, 20), (9, 9)])
def test_crop_box_draws_exactly_what_torchvision_draws(shape: tuple[int, int]) -> None:
    # The reference is torchvision's own RandomResizedCrop.get_params on the global generator in the same state.
    h, w = shape
    image = torch.zeros(3, h, w)
    for seed in range(200):
        torch.manual_seed(seed)
        expected = T.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        assert resized_crop_box(h, w, (0.08, 1.0), torch.Generator().manual_seed(seed)) == tuple(expected)


def test_train_view_shape_range_and_determinism_under_a_seed() -> None:
    image = torch.randint(0, 256, (3, 37, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = train_view(image, 24, 0.08, True, sample_generator(7, 1, 2, 3))
    b = train_view(image, 24, 0.08, True, sample_generator(7, 1, 2, 3))
    assert a.shape == (3, 24, 24) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    # another image slot, step, epoch or seed draws another crop
    others = [train_view(image, 24, 0.08, True, sample_generator(*key))
              for key in [(7, 1, 2, 4), (7, 1, 3, 3), (7, 2, 2, 3), (8, 1, 2, 3)]]
    assert all(not torch.equal(a, o) for o in others)


def test_train_view_flips_half_the_time_and_never_when_off() -> None:
    # scale 1 on a square image with ratio bounds around 1 leaves the whole image: the view is it or its mirror
    image = torch.arange(3 * 16 * 16, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 16, 16)
    whole, mirror = image, TF.horizontal_flip(image)
    flipped = 0
    for slot in range(64):
        view = train_view(image, 16, 1.0, True, sample_generator(0, 0, 0, slot))
        assert torch.equal(view, whole) or torch.equal(view, mirror)
        flipped += torch.equal(view, mirror)
        assert torch.equal(train_view(image, 16, 1.0, False, sample_generator(0, 0, 0, slot)), whole)
    assert 16 <= flipped <= 48


def test_eval_view_is_resize_then_centre_crop_for_the_set_and_for_queries(tmp_path: Path) -> None:
    image_set = import_builtin("synthetic", tmp_path / "s", num_classes=2, per_class=3, size=20).image_set
    config = RunConfig(image_size=14, **STANDARD)
    resize = eval_resize(config, 14)
    assert resize == 16 and eval_resize(RunConfig(image_size=224, **STANDARD), 224) == 256
    assert eval_resize(RunConfig(), 14) == 14  # no augmentation: the image itself at image_size
    view = eval_pixels(image_set, resize, 14)
    assert view.shape == (len(image_set), image_set.channels, 14, 14)
    np.testing.assert_array_equal(view, image_set.pixels(16)[:, :, 1:15, 1:15])
    # an uploaded query goes through the same two steps as the set's own images
    for i in range(len(image_set)):
        query = image_set.query_pixels(image_set.image_path(i).read_bytes(), 14, resize=resize)
        np.testing.assert_array_equal(query, view[i])
    np.testing.assert_array_equal(center_crop(view, 14), view)
    with pytest.raises(ValueError, match="cannot centre-crop"):
        center_crop(view, 15)


def test_resize_smaller_than_the_crop_is_refused() -> None:
    with pytest.raises(ValueError, match="augment.resize"):
        RunConfig(image_size=32, augment={"mode": "standard", "resize": 24})


def test_imagenet_statistics_for_pretrained_torchvision_backbones_only(tmp_path: Path) -> None:
    data = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert input_normalisation(RunConfig(), *data, 3) == data
    assert input_normalisation(RunConfig(backbone="resnet18", pretrained="imagenet"), *data, 3) == \
        (IMAGENET_MEAN, IMAGENET_STD)
    grey = input_normalisation(RunConfig(backbone="resnet18", pretrained="imagenet"), (0.5,), (0.2,), 1)
    assert grey == ((pytest.approx(np.mean(IMAGENET_MEAN)),), (pytest.approx(np.mean(IMAGENET_STD)),))
    assert input_normalisation(RunConfig(backbone="resnet18", pretrained_weights="w.pt"), *data, 3)[0] == \
        IMAGENET_MEAN  # a weights file for a torchvision architecture is taken as ImageNet-trained
    assert input_normalisation(RunConfig(pretrained_weights="w.pt"), *data, 3) == data  # small_cnn: its own data's


def test_normalisation_is_applied_exactly_once_inside_the_model(tmp_path: Path) -> None:
    weights = tmp_path / "r18.pt"
    torch.save(build_model(RunConfig(backbone="resnet18", embedding_dim=8), 3, 32).backbone.state_dict(), weights)
    config = RunConfig(backbone="resnet18", pretrained_weights=str(weights), embedding_dim=8)
    model = build_model(config, 3, 32, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)).eval()
    assert model.pixel_mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert model.pixel_std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    seen: list[torch.Tensor] = []
    model.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        model.embed(x)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (x.float() / 255 - mean) / std)
    # the buffers travel with the state_dict: a model rebuilt from it (no weights source) normalises the same way
    rebuilt = build_model(config.skeleton(), 3, 32)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.pixel_mean, model.pixel_mean)
