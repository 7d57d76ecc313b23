"""Training throughput: models.trainer.train vs a bare torch loop over the same pixels already in memory.

Same image set (mnist5k: 5 000 × 1 × 28 × 28), same model, loss, miner, optimizer and P × K batches (the bare
loop replays the trainer's own sampler). The bare loop is an upper bound: no progress events, no per-term
diagnostics, no NaN checks, no per-epoch checkpoint. A ratio ≥ 0.9 means the data path is not the bottleneck.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import Section, ratio
from bench.timing import compare

FULL: dict[str, Any] = {"epochs": 3}


def _bare_loop(config: Any, image_set: Any, batches: list[list[int]], class_ids: np.ndarray) -> None:
    from models.losses import create_criterion
    from models.trainer import build_distance, build_model

    size = config.image_size or image_set.native_size
    pixels = torch.from_numpy(image_set.pixels(size))
    label_of = torch.full((len(image_set.class_names),), -1, dtype=torch.int64)
    label_of[torch.from_numpy(class_ids)] = torch.arange(len(class_ids))
    labels = label_of[torch.from_numpy(image_set.labels)]
    torch.manual_seed(config.seed)
    model = build_model(config, image_set.channels, size, image_set.mean, image_set.std)
    distance = build_distance(config)
    criterion = create_criterion(config.loss, config.miner, distance, len(class_ids), config.embedding_dim)
    params = {id(p): p for m in (model, criterion, distance) for p in m.parameters()}  # each parameter once
    optimizer = torch.optim.Adam(list(params.values()), lr=config.optimizer.lr)
    model.train()
    for batch in batches:
        index = torch.tensor(batch)
        loss = criterion(model(pixels[index]).embedding, labels[index]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _image_set(root: Path, dataset: str, params: dict[str, Any]) -> Any:
    from models.data import import_builtin

    return import_builtin(dataset, root / "images", **params).image_set


def run(dataset: str = "mnist5k", dataset_params: dict[str, Any] | None = None, epochs: int = 1,
        steps_per_epoch: int = 30, repeat: int = 5, classes_per_batch: int = 5, samples_per_class: int = 16,
        image_size: int | None = None) -> list[Section]:
    """Images/s of both over `epochs` × `steps_per_epoch` steps of the default RunConfig (small_cnn, triplet)."""
    from models.config import RunConfig
    from models.data import MPerClassSampler, zero_shot_split
    from models.trainer import train

    config = RunConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, device="cpu", image_size=image_size,
                       classes_per_batch=classes_per_batch, samples_per_class=samples_per_class)
    with tempfile.TemporaryDirectory(prefix="dmlscope-bench-") as tmp:
        root = Path(tmp)
        image_set = _image_set(root, dataset, dataset_params or {})
        train_idx, _ = zero_shot_split(image_set, config.split)
        image_set.pixels(config.image_size or image_set.native_size)  # decoded once, as a run's cache would be
        # The trainer's exact batches, replayed by the bare loop: same sampler, same seed.
        sampler = MPerClassSampler(image_set.labels, train_idx, config.classes_per_batch, config.samples_per_class,
                                   steps_per_epoch * epochs, generator=torch.Generator().manual_seed(config.seed))
        batches = list(sampler)
        class_ids = np.unique(image_set.labels[train_idx])  # the trainer's label order: sorted class ids
        runs = iter(range(1_000_000))
        (_, t_trainer), (_, t_bare) = compare(
            lambda: train(config, image_set, train_idx, root / f"run{next(runs)}"),
            lambda: _bare_loop(config, image_set, batches, class_ids), repeat=repeat)
    images = len(batches) * config.batch_size
    section = Section("Training throughput: models.trainer vs a bare torch loop",
                      ["data", "steps × batch", "trainer img/s", "bare loop img/s", "trainer / bare"])
    section.add(f"{dataset} ({len(image_set)} × {image_set.channels}×{image_set.native_size}²)",
                f"{len(batches)} × {config.batch_size}", f"{images / t_trainer:,.0f}", f"{images / t_bare:,.0f}",
                ratio(images / t_trainer, images / t_bare))
    section.notes += [
        f"Default RunConfig ({config.backbone}, {config.embedding_dim}-d, {config.loss.name} + {config.miner.name}, "
        f"{config.optimizer.name}), CPU, {epochs} epoch(s) of {steps_per_epoch} steps; median of {repeat} calls, "
        "interleaved, after a warm-up call, each building the model afresh. The trainer's time includes its per-epoch "
        "checkpoint and history writes.",
        "Here the ratio is throughput (higher is better): ≥ 0.9× means the trainer's data path and bookkeeping "
        "cost at most 10 % over the bare loop.",
    ]
    return [section]
