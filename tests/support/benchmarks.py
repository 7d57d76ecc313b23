"""Fabricated benchmark folder trees (CUB-200-2011, Cars196, Stanford Online Products, In-Shop) in the published
layouts, a few tiny images each, for the importers' tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.images import COLOURS, solid


def write_tree(root: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)


def cub_tree(root: Path, n_classes: int = 4, per_class: int = 2) -> None:
    """CUB_200_2011/ with images.txt, image_class_labels.txt, classes.txt and images/NNN.Name/*.jpg."""
    base = root / "CUB_200_2011"
    files: dict[str, bytes | str] = {}
    images, labels, classes = [], [], []
    for c in range(1, n_classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {folder}")
        for k in range(per_class):
            image_id = len(images) + 1
            rel = f"{folder}/Bird_{c}_{k}.jpg"
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            files[f"images/{rel}"] = solid(COLOURS[c % len(COLOURS)], (12, 10), fmt="JPEG", seed=image_id)
    files |= {"images.txt": "\n".join(images) + "\n", "image_class_labels.txt": "\n".join(labels) + "\n",
              "classes.txt": "\n".join(classes) + "\n"}
    write_tree(base, files)


def _mat_records(fields: dict[str, list]) -> np.ndarray:
    n = len(next(iter(fields.values())))
    rec = np.empty(n, dtype=[(k, "O") for k in fields])
    for k, values in fields.items():
        for i, v in enumerate(values):
            rec[k][i] = v
    return rec


def cars_tree(root: Path, n_classes: int = 4, per_class: int = 2, devkit: bool = False) -> None:
    """Cars196 as cars_annos.mat + car_ims/, or in the devkit layout (train/test folders + devkit/*.mat)."""
    from scipy.io import savemat

    names = np.array([f"Make {c} Model/V {2000 + c}" for c in range(1, n_classes + 1)], dtype=object)
    ids = [c for c in range(1, n_classes + 1) for _ in range(per_class)]
    if not devkit:
        paths = [f"car_ims/{i + 1:06d}.jpg" for i in range(len(ids))]
        write_tree(root, {p: solid(COLOURS[c % 6], (10, 8), fmt="JPEG", seed=i)
                          for i, (p, c) in enumerate(zip(paths, ids))})
        savemat(root / "cars_annos.mat", {"class_names": names, "annotations": _mat_records(
            {"relative_im_path": paths, "bbox_x1": [1] * len(ids), "class": ids, "test": [0] * len(ids)})})
        return
    savemat_dir = root / "devkit"
    savemat_dir.mkdir(parents=True)
    savemat(savemat_dir / "cars_meta.mat", {"class_names": names})
    for folder, annos, sel in (("cars_train", savemat_dir / "cars_train_annos.mat", slice(0, None, 2)),
                               ("cars_test", root / "cars_test_annos_withlabels.mat", slice(1, None, 2))):
        part = ids[sel]
        fnames = [f"{i + 1:05d}.jpg" for i in range(len(part))]
        write_tree(root / folder, {f: solid(COLOURS[c % 6], (10, 8), fmt="JPEG", seed=i)
                                   for i, (f, c) in enumerate(zip(fnames, part))})
        savemat(annos, {"annotations": _mat_records({"bbox_x1": [1] * len(part), "class": part, "fname": fnames})})


def sop_tree(root: Path) -> None:
    """Stanford_Online_Products/ with Ebay_train.txt / Ebay_test.txt; classes 1–2 train, 3–4 test."""
    base = root / "Stanford_Online_Products"
    rows = {True: [], False: []}
    files = {}
    image_id = 0
    for class_id, (category, train) in enumerate([("bicycle", True), ("chair", True), ("mug", False),
                                                  ("lamp", False)], start=1):
        for k in range(2):
            image_id += 1
            rel = f"{category}_final/{class_id}{k}_{k}.JPG"
            files[rel] = solid(COLOURS[class_id], (9, 9), fmt="JPEG", seed=image_id)
            rows[train].append(f"{image_id} {class_id} {class_id} {rel}")
    header = "image_id class_id super_class_id path\n"
    files["Ebay_train.txt"] = header + "\n".join(rows[True]) + "\n"
    files["Ebay_test.txt"] = header + "\n".join(rows[False]) + "\n"
    write_tree(base, files)


def inshop_tree(root: Path, eval_folder: bool = True) -> None:
    """In-Shop (DeepFashion): Eval/list_eval_partition.txt (a count, a header, then `img/… id_N status`) and
    img/; items 1–2 train, 3–4 split between query and gallery as in the published list."""
    rows, files = [], {}
    for item, status_of in ((1, "train"), (7, "train"), (12, "query gallery"), (30, "gallery query")):
        for k, status in enumerate((status_of.split() * 2)[:2]):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{k:02d}_1_front.jpg"
            files[rel] = solid(COLOURS[item % 6], (8, 11), fmt="JPEG", seed=item * 10 + k)
            rows.append(f"{rel:<60} id_{item:08d}   {status}")
    listing = f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n"
    files["Eval/list_eval_partition.txt" if eval_folder else "list_eval_partition.txt"] = listing
    write_tree(root, files)
