"""The run folder: the one place that knows its file names, for reading and for writing.

A run folder (docs/architecture.md) holds everything one run measured: its config and split, metrics, stats,
summary and training history (JSON), per-split arrays (embeddings, centroids and per-sample maps), 2-D/3-D
maps, the model (a dmlscope checkpoint or an imported TorchScript module), the checked input of an embeddings
import, and the caches a server adds later (correct@1 columns, UMAP maps). Every writer here is atomic
(temp file + os.replace), so a reader sees the old file or the new one, never half of one; that is what lets
the web process read a folder while the worker still writes it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.config import RunConfig
from models.projection import MapParams

CONFIG = "config.json"
SPLIT = "split.json"
SUMMARY = "summary.json"
METRICS = "metrics.json"
STATS = "stats.json"
HISTORY = "history.json"
CHECKPOINT = "checkpoint.pt"  # a dmlscope checkpoint (models.checkpoint), trained here or imported
TORCHSCRIPT = "model.torchscript.pt"  # an imported TorchScript embedder, kept instead of CHECKPOINT
EMBEDDINGS_INPUT = "embeddings_input.npz"  # the checked vectors of an embeddings import: `vectors`, `ids`, `train`

SPLITS = ("train", "test")
PROJECTION_SPLITS = ("train", "test", "all")  # "all": train then test, in one shared map
PER_SAMPLE = ("logdet", "saturation", "lipschitz", "lipschitz_network")  # (N,) maps a model may offer
ARRAYS = ("embeddings", "centroids", *PER_SAMPLE)  # per-split arrays, `<kind>_<split>.npy`
CORRECT_AT_1 = "correct_at_1"  # per-split server cache: 1 where the nearest other sample has the same class
MODEL_FILES = (CHECKPOINT, TORCHSCRIPT, EMBEDDINGS_INPUT)  # what an import places before its worker runs


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` via a temp file in the same folder and os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, allow_nan=False)))


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
            np.save(f, array)

    atomic_write(path, write)


def projection_file(method: str, split: str, params: MapParams = MapParams()) -> str:
    """A cached map's file name: one per method, split and `MapParams`."""
    return f"projection_{method}_{split}{params.suffix(method)}.npy"


def _array_file(kind: str, split: str) -> str:
    if kind not in ARRAYS and kind != CORRECT_AT_1:
        raise ValueError(f"unknown run-folder array {kind!r}; one of {', '.join((*ARRAYS, CORRECT_AT_1))}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    return f"{kind}_{split}.npy"


def split_ids(split: dict[str, np.ndarray], which: str) -> np.ndarray:
    """The image ids of `which` ("train", "test" or "all" = train then test), in the row order of its maps."""
    return np.concatenate([split["train"], split["test"]]) if which == "all" else split[which]


class RunFolder:
    """One run's folder: lazy readers (arrays memory-mapped, None when absent) and atomic writers.

    `load_run` opens a folder that must already be a run (config.json written); the writers also work on a
    fresh folder, which `write_start` begins.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    # ---- paths of the files other modules open themselves (a checkpoint, a TorchScript module, a zip of arrays)
    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT

    @property
    def torchscript_path(self) -> Path:
        return self.dir / TORCHSCRIPT

    @property
    def embeddings_input_path(self) -> Path:
        return self.dir / EMBEDDINGS_INPUT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def is_torchscript(self) -> bool:
        """An imported TorchScript module (its code runs only in a worker), not a dmlscope checkpoint."""
        return not self.has_checkpoint() and self.torchscript_path.is_file()

    # ---- reading
    def _json(self, name: str) -> Any:
        path = self.dir / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _npy(self, name: str) -> np.ndarray | None:
        path = self.dir / name
        return np.load(path, mmap_mode="r") if path.is_file() else None

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.model_validate(self._json(CONFIG))

    @cached_property
    def split(self) -> dict[str, np.ndarray]:
        """Image indices (into the ImageSet) of each split, in the row order of every per-split array."""
        raw = self._json(SPLIT) or {}
        return {s: np.asarray(raw.get(s, []), dtype=np.int64) for s in SPLITS}

    @property
    def summary(self) -> dict[str, Any] | None:
        return self._json(SUMMARY)

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self._json(METRICS)

    @property
    def stats(self) -> dict[str, Any] | None:
        return self._json(STATS)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._json(HISTORY) or []

    def array(self, kind: str, split: str) -> np.ndarray | None:
        """A per-split array (`ARRAYS` or the correct@1 cache), memory-mapped; None when not written."""
        return self._npy(_array_file(kind, split))

    def embeddings(self, split: str) -> np.ndarray | None:
        return self.array("embeddings", split)

    def centroids(self, split: str) -> np.ndarray | None:
        return self.array("centroids", split)

    def logdet(self, split: str) -> np.ndarray | None:
        """(N,) log|det J| of the flow per sample; None when the run has no flow layer."""
        return self.array("logdet", split)

    def lipschitz(self, split: str) -> np.ndarray | None:
        return self.array("lipschitz", split)

    def lipschitz_network(self, split: str) -> np.ndarray | None:
        """(N,) the whole network's local Lipschitz constant, NaN where not sampled (models.diagnostics)."""
        return self.array("lipschitz_network", split)

    def correct_at_1(self, split: str) -> np.ndarray | None:
        """The server's cached correct@1 column of `split`, if computed."""
        return self.array(CORRECT_AT_1, split)

    def projection(self, method: str, split: str, params: MapParams = MapParams()) -> np.ndarray | None:
        """(N, dim) map if computed (the 2-D PCA always is; the others after `models.maps.ensure_projection`)."""
        return self._npy(projection_file(method, split, params))

    def class_compactness(self, split: str) -> dict[str, dict[str, Any]]:
        """Per-class stats of one split keyed by class name (what a comparison aligns two runs on)."""
        stats = self.stats or {}
        return {c["name"]: c for c in stats.get(split, {}).get("per_class", [])}

    # ---- writing (atomic)
    def write_start(self, config: RunConfig, split: dict[str, np.ndarray]) -> None:
        """Begin a run: its config (a portable copy; the store holds the truth) and its split."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / CONFIG, config.model_dump(mode="json"))
        atomic_write_json(self.dir / SPLIT, {s: np.asarray(split[s]).tolist() for s in SPLITS})
        self.__dict__.pop("config", None)
        self.__dict__.pop("split", None)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.dir / METRICS, metrics)

    def write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write_json(self.dir / STATS, stats)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, summary)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        atomic_write_json(self.dir / HISTORY, history)

    def write_array(self, kind: str, split: str, values: np.ndarray) -> None:
        save_npy(self.dir / _array_file(kind, split), np.ascontiguousarray(values))

    def write_correct_at_1(self, split: str, values: np.ndarray) -> None:
        self.write_array(CORRECT_AT_1, split, values.astype(np.int32))

    def write_projection(self, method: str, split: str, xy: np.ndarray, params: MapParams = MapParams()) -> None:
        if split not in PROJECTION_SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(PROJECTION_SPLITS)}")
        save_npy(self.dir / projection_file(method, split, params), np.ascontiguousarray(xy))

    def copy_checkpoint_from(self, source: Path) -> None:
        """A dmlscope checkpoint file copied in (an import), unless it already is this folder's."""
        if Path(source).resolve() != self.checkpoint_path.resolve():
            atomic_write(self.checkpoint_path, lambda tmp: shutil.copyfile(source, tmp))

    def adopt(self, tmp: Path, name: str) -> None:
        """Move a checked upload (`MODEL_FILES`: checkpoint, TorchScript module, embeddings input) into the
        folder; `tmp` must be on the same file system (the store's temp folder is)."""
        if name not in MODEL_FILES:
            raise ValueError(f"{name!r} is not a model file of a run folder; one of {', '.join(MODEL_FILES)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.dir / name)


def load_run(run_dir: str | Path) -> RunFolder:
    """An existing run folder (its config.json written), for reading."""
    folder = RunFolder(run_dir)
    if not (folder.dir / CONFIG).is_file():
        raise FileNotFoundError(f"{folder.dir} is not a dmlscope run folder (config.json is missing)")
    return folder
