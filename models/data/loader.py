"""Training batches through a torch DataLoader, decoded and augmented in worker processes so a GPU is not starved.

The P×K sampler stays in the trainer's process (its generator is part of the checkpoint); the loader receives
one `BatchJob` per step (epoch, step, the global batch, this process's share) and a worker turns it into this
process's uint8 pixels. Workers hold no random state that matters: each image's augmentation is drawn from a
generator seeded by (run seed, epoch, step, slot) (models/augment.py), so the batches are identical with 0, 1
or 8 workers, in one process or under torchrun, fresh or resumed.

Without augmentation a batch is a slice of the in-memory pixel cache and the loader runs in the trainer's
process (workers would only copy memory); with `standard` each worker decodes the stored files (PNG, or JPEG for
benchmark sets) itself.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from models.augment import sample_generator, train_view
from models.config import AugmentConfig
from models.data.imageset import ImageSet, image_file
from models.data.splits import MPerClassSampler

MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class BatchJob:
    epoch: int
    step: int
    batch: tuple[int, ...]  # the global batch's image indices
    slots: tuple[int, ...]  # positions in `batch` this process forwards (all of them in a lone process)


class EpochJobs:
    """The loader's sampler: one BatchJob per step of the current `epoch`, drawn from the P×K `batches`."""

    def __init__(self, batches: Sequence[Sequence[int]] | MPerClassSampler,
                 slots_of: Callable[[int], Iterable[int]]):
        self.batches = batches  # the global batches (lists of image indices), e.g. an MPerClassSampler
        self.slots_of = slots_of  # global batch length → this process's positions in it
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[BatchJob]:
        for step, batch in enumerate(self.batches):
            yield BatchJob(self.epoch, step, tuple(batch), tuple(self.slots_of(len(batch))))


class TrainImages(Dataset):
    """BatchJob → (uint8 (B_local, C, size, size) pixels, int64 (B,) global batch indices)."""

    def __init__(self, image_set: ImageSet, size: int, augment: AugmentConfig, seed: int):
        self.size, self.augment, self.seed = size, augment, seed
        self.mode = "L" if image_set.channels == 1 else "RGB"  # the set's stored modes (writer.py)
        self.root, self.image_format = image_set.root, image_set.image_format
        # without augmentation the (cached, possibly memory-mapped) pixels; with it, each worker decodes files
        self.pixels = image_set.pixels(size) if augment.mode == "none" else None

    def __getitem__(self, job: BatchJob) -> tuple[Tensor, Tensor]:
        batch = torch.tensor(job.batch, dtype=torch.int64)
        local = [job.batch[s] for s in job.slots]
        if self.pixels is not None:
            return torch.from_numpy(np.ascontiguousarray(self.pixels[local])), batch
        a = self.augment
        views = [train_view(self._decode(i), self.size, a.scale_min, a.flip,
                            sample_generator(self.seed, job.epoch, job.step, s)) for i, s in zip(local, job.slots)]
        return torch.stack(views), batch

    def _decode(self, i: int) -> Tensor:
        # PIL, not torchvision.io: its decoders are deprecated since torchvision 0.29 (for TorchCodec)
        with Image.open(image_file(self.root, i, self.image_format)) as im:
            arr = np.asarray(im if im.mode == self.mode else im.convert(self.mode), dtype=np.uint8)
        return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


def loader_workers(augment: AugmentConfig) -> int:
    """The configured worker count, or automatically 0 without augmentation and else one per spare core (≤ 8)."""
    if augment.workers is not None:
        return augment.workers
    if augment.mode == "none":
        return 0
    return min(MAX_AUTO_WORKERS, max(0, (os.cpu_count() or 1) - 1))


def _seed_worker(worker_id: int) -> None:
    # Each worker's python/numpy RNG from torch's per-worker seed (itself from the loader's seeded generator), so
    # a library that draws from them inside a worker is still reproducible.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def train_loader(dataset: TrainImages, jobs: EpochJobs, workers: int, pin_memory: bool, seed: int) -> DataLoader:
    """A DataLoader over `jobs`: persistent seeded workers, pinned memory on CUDA; never draws from the
    global torch RNG (its base seed comes from its own generator), so the trainer's random streams stay put."""
    return DataLoader(dataset, sampler=jobs, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None,
                      worker_init_fn=_seed_worker if workers else None,
                      generator=torch.Generator().manual_seed(seed))
