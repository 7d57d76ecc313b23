"""Embeddings import: a run measured from vectors a user already has (N × D + labels), with no model.

What users of TensorBoard's projector do first. The file is untrusted in every field: it is read with
`allow_pickle=False`, every array's header (shape, dtype) is checked before its data is read, and every field is
held to limits, so a bad file is refused with a message naming the field (`EmbeddingsFileError`) and nothing
is written. Accepted layouts (`read_embeddings_file`):

- `.npz` with arrays `vectors` (N, D) float, `labels` (N,) integers or strings, and optionally `image_ids` (N,)
  integers (images of the linked dataset) and `split` (N,) "train"/"test" or 0 (train) / 1 (test);
- `.npy` holding one structured array with those fields (`vectors` a (D,) float sub-array).

Parquet is refused with a message: reading it needs pyarrow, which dmlscope does not depend on.

The run is then measured by `models.measure.measure_embeddings`, the code every trained or imported run uses
(metrics, statistics, PCA maps); only the per-sample maps that need a network (log|det J|, local Lipschitz)
are absent. Its run folder keeps the checked file (models.runfolder.EMBEDDINGS_INPUT: rows, vectors, split),
written by the caller before the worker measures it.
"""
from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import numpy as np
import torch

from models.config import RunConfig, SplitConfig
from models.data import DatasetError, ImageSet, ImportReport, zero_shot_split
from models.progress import CancelCheck, ProgressCallback, ignore_progress, never_cancel

FIELDS = ("vectors", "labels", "image_ids", "split")
MAX_DIM = next(m.le for m in RunConfig.model_fields["embedding_dim"].metadata if hasattr(m, "le"))  # as trained
MAX_NAME = 200  # characters of one class name
MIN_CLASSES, MIN_PER_CLASS = 4, 2  # the zero-shot protocol: ≥ 2 classes a side, each class a positive pair


class EmbeddingsFileError(ValueError):
    """The file breaks a rule; the message names the field and says what to fix."""


@dataclass
class EmbeddingsFile:
    vectors: np.ndarray  # (N, D) float32, finite
    labels: np.ndarray | None  # (N,) int64 (class numbers) or str; None only with image_ids (the dataset's labels)
    image_ids: np.ndarray | None  # (N,) int64, distinct
    train: np.ndarray | None  # (N,) bool from the file's `split`, else None (the zero-shot split decides)

    def __len__(self) -> int:
        return len(self.vectors)


# ---- reading the untrusted file ---------------------------------------------------------------------------
def read_embeddings_file(path: str | Path, max_bytes: int) -> EmbeddingsFile:
    """The checked content of an .npz / .npy file; `max_bytes` bounds what its arrays may occupy once read."""
    path = Path(path)
    with path.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PAR1"):
        raise EmbeddingsFileError("file: Parquet is not supported (reading it needs pyarrow, which dmlscope does not "
                                  "install); save the arrays with numpy.savez as vectors, labels[, image_ids, split]")
    if magic == b"\x93NUMPY":
        with path.open("rb") as f:
            arrays = _structured(_read_array(f, "file", max_bytes))
    elif zipfile.is_zipfile(path):
        arrays = _read_npz(path, max_bytes)
    else:
        raise EmbeddingsFileError("file: not an .npz or .npy file (save it with numpy.savez or numpy.save)")
    return _checked(arrays)


def _read_array(f: BinaryIO, field: str, max_bytes: int) -> np.ndarray:
    """One .npy array, its header checked before any data is read (no object arrays, a bounded size)."""
    try:
        version = np.lib.format.read_magic(f)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                  np.lib.format.read_array_header_2_0)(f)
    except (ValueError, SyntaxError, OSError) as e:
        raise EmbeddingsFileError(f"{field}: not a readable .npy array ({str(e)[:120]})") from None
    shape, _, dtype = header
    if dtype.hasobject:
        raise EmbeddingsFileError(f"{field}: Python objects are not accepted; store numbers or fixed-width strings")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size > max_bytes:
        raise EmbeddingsFileError(f"{field}: {size / 2**20:.0f} MiB once read, over the {max_bytes / 2**20:.0f} MiB "
                                  f"limit; send fewer rows or dimensions")
    f.seek(0)
    try:
        return np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise EmbeddingsFileError(f"{field}: the array is truncated or damaged ({str(e)[:120]})") from None


def _read_npz(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                key = name.removesuffix(".npy")
                if key not in FIELDS:
                    raise EmbeddingsFileError(f"file: unexpected array {name[:60]!r}; an .npz holds "
                                              f"{', '.join(FIELDS)} only")
                with zf.open(name) as f:
                    arrays[key] = _read_array(f, key, max_bytes - sum(a.nbytes for a in arrays.values()))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as e:
        raise EmbeddingsFileError(f"file: a damaged .npz archive ({str(e)[:120]})") from None
    return arrays


def _structured(array: np.ndarray) -> dict[str, np.ndarray]:
    if array.dtype.names is None or array.ndim != 1:
        raise EmbeddingsFileError("file: an .npy file must hold one structured array (N,) with fields "
                                  f"{', '.join(FIELDS)}; for plain arrays use an .npz")
    unknown = [n for n in array.dtype.names if n not in FIELDS]
    if unknown:
        raise EmbeddingsFileError(f"file: unexpected field {unknown[0][:60]!r}; the fields are {', '.join(FIELDS)}")
    return {n: np.ascontiguousarray(array[n]) for n in array.dtype.names}


def _checked(arrays: dict[str, Any]) -> EmbeddingsFile:
    vectors = arrays.get("vectors")
    if vectors is None:
        raise EmbeddingsFileError("vectors: missing; the file needs an (N, D) float array named vectors")
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise EmbeddingsFileError(f"vectors: expected an (N, D) float array, got {vectors.dtype} of shape "
                                  f"{vectors.shape}")
    n, dim = vectors.shape
    if n < MIN_CLASSES * MIN_PER_CLASS:
        raise EmbeddingsFileError(f"vectors: {n} rows; the zero-shot protocol needs at least "
                                  f"{MIN_CLASSES * MIN_PER_CLASS} ({MIN_CLASSES} classes of {MIN_PER_CLASS})")
    if not 2 <= dim <= MAX_DIM:
        raise EmbeddingsFileError(f"vectors: {dim} dimensions; a run records 2 to {MAX_DIM}")
    vectors = vectors.astype(np.float32)
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise EmbeddingsFileError(f"vectors: row {row} is not finite (NaN or infinity, perhaps after the conversion "
                                  f"to float32)")
    labels, ids, split = (arrays.get(k) for k in ("labels", "image_ids", "split"))
    for field, a in (("labels", labels), ("image_ids", ids), ("split", split)):
        if a is not None and a.shape != (n,):
            raise EmbeddingsFileError(f"{field}: expected shape ({n},), one per row of vectors, got {a.shape}")
    if labels is None and ids is None:
        raise EmbeddingsFileError("labels: missing; give a class for every row (integers or strings)")
    return EmbeddingsFile(vectors, None if labels is None else _labels(labels),
                          None if ids is None else _image_ids(ids), None if split is None else _split(split))


def _labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "iu":
        if labels.min() < 0:
            raise EmbeddingsFileError(f"labels: class numbers must be ≥ 0, got {labels.min()}")
        return labels.astype(np.int64)
    if labels.dtype.kind == "S":
        try:
            labels = np.char.decode(labels, "utf-8")
        except UnicodeDecodeError:
            raise EmbeddingsFileError("labels: byte strings that are not UTF-8") from None
    if labels.dtype.kind != "U":
        raise EmbeddingsFileError(f"labels: expected integers or strings, got {labels.dtype}")
    if labels.dtype.itemsize // 4 > MAX_NAME:
        raise EmbeddingsFileError(f"labels: class names may have up to {MAX_NAME} characters")
    if (np.char.str_len(np.char.strip(labels)) == 0).any():
        raise EmbeddingsFileError("labels: empty class name")
    return labels


def _image_ids(ids: np.ndarray) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise EmbeddingsFileError(f"image_ids: expected integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise EmbeddingsFileError("image_ids: each image may appear once")
    return ids


def _split(split: np.ndarray) -> np.ndarray:
    if split.dtype.kind in "US":
        values = np.char.decode(split, "ascii", "replace") if split.dtype.kind == "S" else split
        bad = ~np.isin(values, ["train", "test"])
        if bad.any():
            raise EmbeddingsFileError(f"split: expected 'train' or 'test', got {str(values[bad][0])[:40]!r}")
        return values == "train"
    if split.dtype.kind in "iu":
        if not np.isin(split, [0, 1]).all():
            raise EmbeddingsFileError("split: expected 0 (train) or 1 (test)")
        return split == 0
    raise EmbeddingsFileError(f"split: expected 'train'/'test' strings or 0/1, got {split.dtype}")


# ---- resolving against the dataset, and the split ----------------------------------------------------------
def resolve(ef: EmbeddingsFile, image_set: ImageSet | None) -> np.ndarray:
    """Each row's image id in `image_set`: the file's `image_ids`, checked to exist and to carry the file's
    labels; without a dataset (None) the row numbers, which index the labels-only set written for the file."""
    if image_set is not None and not image_set.has_images:
        raise EmbeddingsFileError("dataset_id: that dataset holds the labels of other imported embeddings, not "
                                  "images; leave dataset_id out")
    if image_set is None:
        if ef.image_ids is not None:
            raise EmbeddingsFileError("image_ids: they refer to a stored dataset; send its dataset_id too")
        return np.arange(len(ef), dtype=np.int64)
    if ef.image_ids is None:
        raise EmbeddingsFileError("image_ids: missing; with a dataset_id each row names its image in that dataset")
    ids = ef.image_ids
    if ids.min() < 0 or ids.max() >= len(image_set):
        bad = int(ids[(ids < 0) | (ids >= len(image_set))][0])
        raise EmbeddingsFileError(f"image_ids: {bad} is not an image of this dataset (ids 0 to {len(image_set) - 1})")
    if ef.labels is not None:
        truth = image_set.labels[ids]
        if ef.labels.dtype.kind != "U":  # class numbers of the dataset
            wrong = np.flatnonzero(ef.labels != truth)
        else:
            wrong = np.flatnonzero(ef.labels != np.asarray(image_set.class_names)[truth])
        if len(wrong):
            r = int(wrong[0])
            raise EmbeddingsFileError(f"labels: row {r} says {ef.labels[r]!s:.40} but image {ids[r]} of the dataset "
                                      f"is {image_set.class_names[truth[r]]!r}; omit labels to use the dataset's")
    return ids


def split_rows(ef: EmbeddingsFile, labels: np.ndarray, split: SplitConfig) -> dict[str, np.ndarray]:
    """Row indices per split: the file's own split, else the zero-shot split of its classes (`split`); each
    side held to the protocol's minimum (≥ 2 classes, each with ≥ 2 rows)."""
    _, compact = np.unique(labels, return_inverse=True)
    counts = np.bincount(compact)
    if len(counts) < MIN_CLASSES:
        raise EmbeddingsFileError(f"labels: {len(counts)} classes; the zero-shot protocol needs at least {MIN_CLASSES}")
    if ef.train is None:
        # zero_shot_split reads only labels, class_names and split: the file's classes stand in for an image set
        classes = SimpleNamespace(labels=compact, class_names=[str(c) for c in range(len(counts))], split=None)
        try:
            train, test = zero_shot_split(classes, split)
        except DatasetError as e:
            raise EmbeddingsFileError(f"split: {e}") from None
    else:
        train, test = np.flatnonzero(ef.train), np.flatnonzero(~ef.train)
    for name, rows in (("train", train), ("test", test)):
        side = np.bincount(compact[rows], minlength=len(counts))
        present = side[side > 0]
        if len(present) < 2 or present.min() < MIN_PER_CLASS:
            raise EmbeddingsFileError(f"labels: the {name} side has {len(present)} classes, the smallest with "
                                      f"{present.min() if len(present) else 0} rows; each side needs ≥ 2 classes "
                                      f"with ≥ {MIN_PER_CLASS} rows each")
    return {"train": train.astype(np.int64), "test": test.astype(np.int64)}


def write_labels_only_set(dest: Path, class_names: list[str], labels: np.ndarray) -> ImportReport:
    """A dataset folder with classes and labels but no images: what an embeddings file with no linked dataset
    belongs to. `ImageSet.has_images` is False for it; views that need pixels answer that there are none."""
    dest.mkdir(parents=True)
    meta = {"format_version": 1, "images": False, "class_names": class_names, "labels": labels.tolist(),
            "paths": [f"row {i}" for i in range(len(labels))], "channels": 0, "native_size": None, "max_side": 0,
            "mean": [], "std": [], "split": None}
    (dest / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return ImportReport(ImageSet(dest))


def save_input(path: Path, ef: EmbeddingsFile, ids: np.ndarray) -> None:
    """The checked vectors, their image ids and the file's split (if any) for the worker."""
    extra = {} if ef.train is None else {"train": ef.train}
    np.savez(path, vectors=ef.vectors, ids=ids, **extra)


# ---- measuring (the worker) ----------------------------------------------------------------------------------
def measure_embeddings_file(image_set: ImageSet, run_dir: str | Path, config: RunConfig,
                            on_progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                            parent_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure the run folder's embeddings input as a run of origin `embeddings`; returns the summary."""
    from models.measure import SPANS_IMPORTED, Stages, measure_embeddings, summary
    from models.runfolder import RunFolder
    from models.trainer import build_distance, select_device

    folder = RunFolder(run_dir)
    stages = Stages(on_progress or ignore_progress, should_cancel or never_cancel, SPANS_IMPORTED)
    t0 = time.perf_counter()
    with np.load(folder.embeddings_input_path, allow_pickle=False) as data:
        vectors, ids = data["vectors"], data["ids"]
        ef = EmbeddingsFile(vectors, None, ids, data["train"] if "train" in data else None)
    device = select_device(config.device)  # before any work: "cuda" on a machine without one fails here
    rows = split_rows(ef, image_set.labels[ids], config.split)
    rows = {s: r[np.argsort(ids[r], kind="stable")] for s, r in rows.items()}  # image order, as in every run
    split = {s: ids[rows[s]] for s in rows}
    folder.write_start(config, split)
    heads, timings = measure_embeddings({s: vectors[rows[s]] for s in rows}, build_distance(config), image_set,
                                        split, folder, stages, Path(parent_dir) if parent_dir else None,
                                        config.seed, lambda s: {}, device=device)
    timings["total_s"] = time.perf_counter() - t0
    out = {**summary("embeddings", config, split, heads, timings, [], device, None),
           "notes": ["imported embeddings: no network, so no log|det J|, local Lipschitz or image queries"]}
    folder.write_summary(out)
    stages.done()
    return out
