"""The zero-shot split (train on some classes, test on the unseen rest) and the P×K batch sampler."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from models.config import RunConfig, SplitConfig
from models.data.errors import DatasetError
from models.data.imageset import ImageSet


def zero_shot_split(image_set: ImageSet, split: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): sorted int64 image indices whose classes do not overlap.

    `first_half`: the first ⌈C/2⌉ classes in the set's class order (sorted names; class ids for
    benchmarks); `random_half`: ⌈C/2⌉ classes drawn with `split.seed`; `predefined`: the benchmark's own.
    Each side needs at least 2 classes, since both training and retrieval compare classes. With
    `split.validation` the training classes are split again (`_validation_split`) and the pair returned is
    (train', validation): the test classes are never touched.
    """
    labels = image_set.labels
    if split.mode == "predefined":
        if image_set.split is None:
            raise DatasetError("this image set has no predefined split (only benchmark imports have one); "
                               "use split mode 'first_half' or 'random_half'")
        train = image_set.split
    else:
        num_classes = len(image_set.class_names)
        order = (np.arange(num_classes) if split.mode == "first_half"
                 else np.random.default_rng(split.seed).permutation(num_classes))
        train = np.isin(labels, order[: (num_classes + 1) // 2])
    train_idx, test_idx = np.flatnonzero(train), np.flatnonzero(~train)
    _check_sides(labels, train_idx, test_idx, split.mode, "training", "test", "the set", len(image_set.class_names))
    if split.validation:
        train_idx, test_idx = _validation_split(labels, train_idx, split)
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def _validation_split(labels: np.ndarray, train_idx: np.ndarray, split: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train', validation): the training classes split again, ⌈T/2⌉ / ⌊T/2⌋ with `split.seed`.

    Seeded by (seed, 1), a stream apart from the one random_half draws its classes from, so the two splits of
    one seed are not the same permutation twice.
    """
    classes = np.unique(labels[train_idx])
    order = np.random.default_rng([split.seed, 1]).permutation(classes)
    inner = np.isin(labels[train_idx], order[: (len(classes) + 1) // 2])
    train_idx, val_idx = train_idx[inner], train_idx[~inner]
    _check_sides(labels, train_idx, val_idx, f"{split.mode} validation", "training", "validation",
                 "its training side", len(classes))
    return train_idx, val_idx


def _check_sides(labels: np.ndarray, a: np.ndarray, b: np.ndarray, what: str, name_a: str, name_b: str,
                 whole: str, num_classes: int) -> None:
    for name, idx in ((name_a, a), (name_b, b)):
        n = len(np.unique(labels[idx]))
        if n < 2:
            raise DatasetError(f"the {what} split leaves {n} class(es) for {name}; it needs at least 2 classes on "
                               f"each side, so {whole} needs 4 or more classes (it has {num_classes})")


def check_trainable(image_set: ImageSet, config: RunConfig) -> None:
    """Raise DatasetError now for what would stop training this set later: split, batch classes, image size.

    The server calls it before queueing a run, so a run that cannot start is refused with a message that says
    what to change, instead of failing in its worker minutes later.
    """
    if not image_set.has_images:
        raise DatasetError("this dataset holds the labels of imported embeddings; it has no images to train on")
    train_idx, _ = zero_shot_split(image_set, config.split)
    _, per_class = np.unique(image_set.labels[train_idx], return_counts=True)
    train_classes = len(per_class)
    if config.classes_per_batch > train_classes:
        raise DatasetError(f"classes_per_batch is {config.classes_per_batch} but the {config.split.mode} split trains "
                           f"on {train_classes} of this set's {len(image_set.class_names)} classes; set "
                           f"classes_per_batch to at most {train_classes}")
    if config.image_size is None and image_set.native_size is None:
        raise DatasetError("the images of this set have different sizes; set image_size (e.g. 64 or 224)")
    if config.samples_per_class > per_class.max():
        raise DatasetError(f"samples_per_class is {config.samples_per_class} but the largest training class has "
                           f"{per_class.max()} images, so every batch would repeat images of every class; set "
                           f"samples_per_class to at most {per_class.max()}")


class MPerClassSampler:
    """Batches of P distinct classes × K images each (lists of image indices), drawn only from `indices`.

    A class with fewer than K images contributes all of them, topped up with repeats drawn with replacement.
    Written here rather than taken from pytorch-metric-learning, whose sampler draws from numpy's global RNG:
    with a `torch.Generator` the batches are reproducible per run and resumable from the generator's state.
    Use as `batch_sampler=` of a DataLoader, or index the pixel array with each batch directly.
    """

    def __init__(self, labels: np.ndarray | Sequence[int], indices: np.ndarray | Sequence[int],
                 classes_per_batch: int, samples_per_class: int, num_batches: int,
                 generator: torch.Generator | None = None):
        if classes_per_batch < 1 or samples_per_class < 1 or num_batches < 1:
            raise DatasetError("classes_per_batch, samples_per_class and num_batches must all be positive")
        labels = np.asarray(labels)
        indices = np.asarray(indices, dtype=np.int64)
        own = labels[indices]
        classes, counts = np.unique(own, return_counts=True)
        if len(classes) < classes_per_batch:
            raise DatasetError(f"classes_per_batch is {classes_per_batch} but the training split has only "
                               f"{len(classes)} classes; lower classes_per_batch to at most {len(classes)}")
        # each class's members in `indices` order: one stable sort, not a mask over all samples per class
        by_class = indices[np.argsort(own, kind="stable")]
        self._members = [torch.from_numpy(m) for m in np.split(by_class, np.cumsum(counts)[:-1])]
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.num_batches = num_batches
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        g, k = self.generator, self.samples_per_class
        for _ in range(self.num_batches):
            batch = []
            for c in torch.randperm(len(self._members), generator=g)[: self.classes_per_batch].tolist():
                members = self._members[c]
                n = len(members)
                if n >= k:
                    pick = torch.randperm(n, generator=g)[:k]
                else:
                    pick = torch.cat([torch.randperm(n, generator=g), torch.randint(n, (k - n,), generator=g)])
                batch += members[pick].tolist()
            yield batch
