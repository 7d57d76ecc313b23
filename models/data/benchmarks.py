"""The standard DML benchmarks, read from their published on-disk layouts (users bring local copies).

Each keeps its zero-shot protocol (SPEC §4) as the image set's predefined split: CUB-200-2011 trains on
classes 1–100 and tests on 101–200, Cars196 on 1–98 / 99–196 (the first half of the class ids), Stanford
Online Products as its Ebay_train.txt / Ebay_test.txt say, In-Shop as its list_eval_partition.txt says (train
vs query + gallery; each image's role is kept as the set's `partition`, and a run on it also reports In-Shop's
own query → gallery Recall@K, models/query_gallery.py, next to the all-against-all metrics of the test side).
Labels follow class-id order, so `first_half` equals the published split for CUB and Cars. Images go through
the same safe decoding as uploads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.data.errors import DatasetError, SkippedFile
from models.data.imageset import ImportReport
from models.data.importers import FileProgress, add_file, multi_frame_warning, read_local
from models.data.safety import UploadLimits
from models.data.writer import ImageSetWriter


@dataclass(frozen=True)
class _Record:
    class_id: int
    class_name: str
    path: str  # relative to the benchmark root
    train: bool
    partition: str | None = None  # In-Shop: train | query | gallery


def _locate(root: Path, marker: str, subfolder: str, layout: str) -> Path:
    """The folder holding `marker`: `root` itself or its usual sub-folder (as the archives unpack)."""
    for base in (root, root / subfolder):
        if (base / marker).is_file():
            return base
    raise DatasetError(f"{root} does not look like {layout}: {marker} not found there or in {subfolder}/")


def _table(path: Path, layout: str) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path.name} is missing; {layout}")
    return [line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_CUB = "the CUB-200-2011 layout: images/, images.txt, image_class_labels.txt, classes.txt"


def _cub(root: Path) -> tuple[Path, list[_Record]]:
    base = _locate(root, "images.txt", "CUB_200_2011", _CUB)
    classes = {int(i): name for i, name in _table(base / "classes.txt", _CUB)}
    labels = {i: int(c) for i, c in _table(base / "image_class_labels.txt", _CUB)}
    half = len(classes) // 2
    records = []
    for image_id, rel in _table(base / "images.txt", _CUB):
        if image_id not in labels or labels[image_id] not in classes:
            raise DatasetError(f"image {image_id} ({rel}) has no class in image_class_labels.txt/classes.txt")
        cid = labels[image_id]
        records.append(_Record(cid, classes[cid], f"images/{rel}", cid <= half))
    return base, records


_CARS = ("the Cars196 layout: cars_annos.mat with car_ims/, or the devkit (devkit/cars_meta.mat, "
         "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/, cars_test/)")


def _mat(path: Path) -> dict:
    from scipy.io import loadmat

    return loadmat(path, squeeze_me=True)


def _cars(root: Path) -> tuple[Path, list[_Record]]:
    if (root / "cars_annos.mat").is_file():
        mat = _mat(root / "cars_annos.mat")
        names = [str(n) for n in np.atleast_1d(mat["class_names"])]
        annos = np.atleast_1d(mat["annotations"])
        # relative_im_path is "car_ims/000001.jpg"
        rows = [(int(a["class"]), str(a["relative_im_path"])) for a in annos]
    elif (root / "devkit" / "cars_meta.mat").is_file():
        names = [str(n) for n in np.atleast_1d(_mat(root / "devkit" / "cars_meta.mat")["class_names"])]
        rows = []
        for folder, candidates in (("cars_train", ("devkit/cars_train_annos.mat",)),
                                   ("cars_test", ("cars_test_annos_withlabels.mat",
                                                  "devkit/cars_test_annos_withlabels.mat"))):
            found = next((root / c for c in candidates if (root / c).is_file()), None)
            if found is None:
                raise DatasetError(f"{candidates[0]} is missing; {_CARS}")
            rows += [(int(a["class"]), f"{folder}/{a['fname']}") for a in np.atleast_1d(_mat(found)["annotations"])]
    else:
        raise DatasetError(f"{root} does not look like {_CARS}")
    half = len(names) // 2
    for cid, rel in rows:
        if not 1 <= cid <= len(names):
            raise DatasetError(f"{rel} has class {cid}, but the class list has {len(names)} names")
    return root, [_Record(cid, names[cid - 1], rel, cid <= half) for cid, rel in rows]


_SOP = "the Stanford Online Products layout: Ebay_train.txt, Ebay_test.txt and the <category>_final/ folders"


def _sop(root: Path) -> tuple[Path, list[_Record]]:
    base = _locate(root, "Ebay_train.txt", "Stanford_Online_Products", _SOP)
    records = []
    for file, train in (("Ebay_train.txt", True), ("Ebay_test.txt", False)):
        path = base / file
        if not path.is_file():
            raise DatasetError(f"{file} is missing; {_SOP}")
        lines = path.read_text(encoding="utf-8").splitlines()[1:]  # header: image_id class_id super_class_id path
        for line in filter(str.strip, lines):
            _, class_id, _, rel = line.split(maxsplit=3)
            category = rel.split("/")[0].removesuffix("_final")
            records.append(_Record(int(class_id), f"{category} {class_id}", rel, train))
    return base, records


_INSHOP = ("the In-Shop (DeepFashion) layout: list_eval_partition.txt (or Eval/list_eval_partition.txt) and the "
           "img/ folder it names")


def _inshop(root: Path) -> tuple[Path, list[_Record]]:
    partition = next((p for p in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt")
                      if p.is_file()), None)
    if partition is None:
        raise DatasetError(f"list_eval_partition.txt is missing (looked in {root} and {root / 'Eval'}); {_INSHOP}")
    lines = partition.read_text(encoding="utf-8").splitlines()[2:]  # a count, then "image_name item_id evaluation_status"
    records = []
    for number, line in enumerate(filter(str.strip, lines), start=3):
        parts = line.split()
        if len(parts) != 3 or parts[2] not in ("train", "query", "gallery") or not parts[1].startswith("id_"):
            raise DatasetError(f"{partition.name} line {number} is not 'img/… id_NNNNNNNN train|query|gallery': "
                               f"{line[:120]!r}")
        rel, item, status = parts
        records.append(_Record(int(item.removeprefix("id_")), item, rel, status == "train", status))
    return root, records


BENCHMARKS: dict[str, Callable[[Path], tuple[Path, list[_Record]]]] = {"cub200": _cub, "cars196": _cars, "sop": _sop,
                                                                      "inshop": _inshop}
ALIASES = {"cub": "cub200", "cars": "cars196"}  # the short names of the CLI
# Stored images keep their longest side ≤ 512 (uploads: 256): the standard recipe resizes the *short* side to 256
# for evaluation and crops 224-px training views from the whole image, so a 4:3 photo needs ≥ 341 × 256 to be
# used without upscaling. 512 keeps CUB (≤ 500 px), In-Shop (256) and most SOP photos as published and shrinks
# only large Cars images (JPEG decodes those at a reduced scale, safety.decode_image). The store keeps them as
# JPEG (writer.py): the published files as they are where no downscale is needed, so a training loader decodes
# JPEG rather than the ~3× slower PNG, and no photo is encoded twice.
BENCHMARK_MAX_SIDE = 512


def import_benchmark(kind: str, root: str | Path, dest: str | Path, limits: UploadLimits | None = None,
                     max_side: int = BENCHMARK_MAX_SIDE, on_file: FileProgress | None = None) -> ImportReport:
    """Import a local copy of a benchmark (`kind` in BENCHMARKS or ALIASES) with its predefined zero-shot split."""
    kind = ALIASES.get(kind, kind)
    if kind not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark {kind!r}; choose one of: {', '.join([*ALIASES, *BENCHMARKS])}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; give the folder the {kind} archive unpacked into")
    base, records = BENCHMARKS[kind](root)
    if not records:
        raise DatasetError(f"{root} lists no images")
    limits = limits or UploadLimits()
    skipped: list[SkippedFile] = []
    names = _unique_names(records)
    with ImageSetWriter(dest, max_side, image_format="jpeg") as writer:
        frames = []
        for done, r in enumerate(records, 1):
            frames.append(add_file(writer, names[r.class_id], r.path, lambda r=r: read_local(base / r.path, limits),
                                   limits, skipped, r.train, r.partition))
            if on_file is not None:
                on_file(done, len(records))
        return writer.finish(class_order=[names[c] for c in sorted(names)], skipped=skipped,
                             warnings=multi_frame_warning(frames))


def _unique_names(records: list[_Record]) -> dict[int, str]:
    """class id → display name; a name shared by several ids gets the id appended, so classes never merge."""
    names = {r.class_id: r.class_name for r in records}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {cid: name if counts[name] == 1 else f"{name} ({cid})" for cid, name in names.items()}
