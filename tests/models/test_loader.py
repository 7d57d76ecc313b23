"""Training batches through the DataLoader: the same pixels with 0 or 2 workers, and exact resume under
augmentation (each image's crop is a function of seed, epoch, step and slot, not of worker state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import AugmentConfig, RunConfig
from models.data import ImageSet, MPerClassSampler, import_builtin, zero_shot_split
from models.data.loader import EpochJobs, TrainImages, loader_workers, train_loader
from models.progress import Cancelled
from models.checkpoint import load_checkpoint
from models.runfolder import CHECKPOINT
from models.trainer import train

STANDARD = AugmentConfig(mode="standard", resize=20)
TINY = {"embedding_dim": 8, "epochs": 2, "steps_per_epoch": 2, "classes_per_batch": 2, "samples_per_class": 4,
        "device": "cpu", "amp": False, "image_size": 16, "augment": {"mode": "standard", "workers": 0}}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return import_builtin("synthetic", tmp_path_factory.mktemp("data") / "shapes", num_classes=4, per_class=6,
                          size=24).image_set


def _epochs(image_set: ImageSet, augment: AugmentConfig, workers: int, epochs: int = 2) -> list[tuple]:
    sampler = MPerClassSampler(image_set.labels, np.arange(len(image_set)), 2, 3, 3,
                               generator=torch.Generator().manual_seed(5))
    jobs = EpochJobs(sampler, lambda n: range(n))
    loader = train_loader(TrainImages(image_set, 16, augment, seed=3), jobs, workers, False, seed=3)
    out = []
    for epoch in range(epochs):
        jobs.epoch = epoch
        out += [(x.clone(), b.clone()) for x, b in loader]
    return out


def test_batches_without_augmentation_are_the_pixel_cache(shapes: ImageSet) -> None:
    for x, batch in _epochs(shapes, AugmentConfig(), 0, epochs=1):
        assert x.dtype == torch.uint8 and x.shape == (6, shapes.channels, 16, 16)
        np.testing.assert_array_equal(x.numpy(), shapes.pixels(16)[batch.numpy()])


@pytest.mark.slow  # spawns worker processes
def test_two_workers_give_the_same_batches_as_none(shapes: ImageSet) -> None:
    inline = _epochs(shapes, STANDARD, 0)
    workers = _epochs(shapes, STANDARD, 2)
    assert len(inline) == len(workers) == 6
    for (xa, ba), (xb, bb) in zip(inline, workers):
        assert torch.equal(ba, bb) and torch.equal(xa, xb)
        assert xa.shape == (6, shapes.channels, 16, 16) and xa.dtype == torch.uint8
    # the two epochs draw different crops of the same images
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(inline[:3], inline[3:]))


def test_loader_workers_default() -> None:
    assert loader_workers(AugmentConfig()) == 0
    assert loader_workers(AugmentConfig(mode="standard", workers=3)) == 3
    assert 0 <= loader_workers(AugmentConfig(mode="standard")) <= 8


@pytest.mark.slow  # trains
def test_augmented_training_is_reproducible_and_resumes_exactly(shapes: ImageSet, tmp_path: Path) -> None:
    config = RunConfig(**TINY)
    train_idx, _ = zero_shot_split(shapes, config.split)
    first = train(config, shapes, train_idx, tmp_path / "a")
    assert first.model.eval_resize == 18 and first.model.image_size == 16
    calls = iter(range(10_000))
    with pytest.raises(Cancelled):  # interrupted in epoch 2, resumed from the epoch-1 checkpoint
        train(config, shapes, train_idx, tmp_path / "b", should_cancel=lambda: next(calls) >= 3)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT)["epoch"] == 1
    torch.manual_seed(99)
    resumed = train(config, shapes, train_idx, tmp_path / "b")
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # augmentation changes what is learned: the same run without it ends elsewhere
    plain = train(config.with_patch({"augment": {"mode": "none"}}), shapes, train_idx, tmp_path / "c")
    assert not torch.equal(plain.model.head.weight, first.model.head.weight)
