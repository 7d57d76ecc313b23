"""Comparing two finished runs: metric differences, per-class compactness paired by class name, and the shared
test images whose nearest neighbours changed most. One code path for `dmlscope compare` and `GET /api/compare`.

Every difference is B − A. Runs on different image sets share no images, so they have no changed neighbours,
but their metrics and same-named classes still compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pytorch_metric_learning.distances import BaseDistance

from models.headline import GEOMETRY_KEYS
from models.runfolder import SPLITS, RunFolder

# Per-class values compared between runs (from stats.json).
CLASS_KEYS = ("count", "radius_mean", "radius_max", "radius_p95", "density", "relative_density", "gap", "delta1",
              "margin")


@dataclass(frozen=True)
class Diff:
    a: float | None
    b: float | None
    diff: float | None  # b − a; None when either is missing


@dataclass(frozen=True)
class ClassDiff:
    name: str
    a: dict[str, float | None]
    b: dict[str, float | None]
    diff: dict[str, float | None]


@dataclass(frozen=True)
class Changed:
    """A shared test image and its k nearest shared images in each run (image ids), by Jaccard overlap."""
    image_id: int
    label: int
    jaccard: float
    a_neighbors: list[int]
    b_neighbors: list[int]


@dataclass(frozen=True)
class Comparison:
    metrics: dict[str, dict[str, Diff]]  # split → every numeric metric of metrics.json
    geometry: dict[str, dict[str, Diff]]  # split → the summary's headline geometry (models.headline.GEOMETRY_KEYS)
    classes: list[ClassDiff]  # the unseen (test) classes both runs have, in A's order
    changed: list[Changed]  # most changed first; empty for runs on different image sets


def number(v: Any) -> float | None:
    """A JSON value as a float, None for anything that is not a number (bools, lists, missing)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def diff(a: Any, b: Any) -> Diff:
    x, y = number(a), number(b)
    return Diff(x, y, None if x is None or y is None else y - x)


def diffs_per_split(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] | None = None
                    ) -> dict[str, dict[str, Diff]]:
    """Per split, B − A of `keys` (default: every key numeric in either run)."""
    out = {}
    for split in SPLITS:
        sa, sb = a.get(split) or {}, b.get(split) or {}
        names = keys or [k for k in {**sa, **sb} if number(sa.get(k)) is not None or number(sb.get(k)) is not None]
        out[split] = {k: diff(sa.get(k), sb.get(k)) for k in names}
    return out


def class_diffs(a: RunFolder, b: RunFolder, split: str = "test") -> list[ClassDiff]:
    rows = [{name: {k: number(row.get(k)) for k in CLASS_KEYS} for name, row in run.class_compactness(split).items()}
            for run in (a, b)]
    return [ClassDiff(name, rows[0][name], rows[1][name], {k: diff(rows[0][name][k], rows[1][name][k]).diff
                                                         for k in CLASS_KEYS})
            for name in rows[0] if name in rows[1]]


def changed_neighbours(a: RunFolder, b: RunFolder, distances: tuple[BaseDistance, BaseDistance],
                       image_labels: np.ndarray, k: int, limit: int) -> list[Changed]:
    """Shared test images whose k-NN sets (among the shared images, each run's own distance) differ most."""
    from models.retrieval import RetrievalIndex

    shared, ia, ib = np.intersect1d(a.split["test"], b.split["test"], return_indices=True)
    if len(shared) < 2:
        return []
    k = min(k, len(shared) - 1)
    sets = []
    for run, rows, distance in ((a, ia, distances[0]), (b, ib, distances[1])):
        emb = np.asarray(run.embeddings("test"))[rows]  # a copy: torch wants writable memory
        sets.append(RetrievalIndex(emb, distance).neighbours(emb, k, exclude_self_ids=np.arange(len(shared))))
    inter = np.array([len(np.intersect1d(x, y)) for x, y in zip(*sets)])
    jaccard = inter / (2 * k - inter)
    return [Changed(int(shared[i]), int(image_labels[shared[i]]), float(jaccard[i]),
                    [int(shared[j]) for j in sets[0][i]], [int(shared[j]) for j in sets[1][i]])
            for i in np.argsort(jaccard, kind="stable")[:limit]]


def compare_runs(a: RunFolder, b: RunFolder, image_labels: np.ndarray | None, k: int = 10, limit: int = 20,
                 distances: tuple[BaseDistance, BaseDistance] | None = None) -> Comparison:
    """A against B. `image_labels` is the shared image set's label per image id, or None when the runs are on
    different image sets (then nothing is `changed`). `distances` default to each run's own distance
    (models.inference.load_distance: from the checkpoint, or from the config of an import without one)."""
    changed: list[Changed] = []
    if image_labels is not None and limit > 0:
        if distances is None:
            from models.inference import load_distance

            distances = (load_distance(a.dir), load_distance(b.dir))
        changed = changed_neighbours(a, b, distances, image_labels, k, limit)
    return Comparison(metrics=diffs_per_split(a.metrics or {}, b.metrics or {}),
                      geometry=diffs_per_split(a.summary or {}, b.summary or {}, GEOMETRY_KEYS),
                      classes=class_diffs(a, b), changed=changed)
