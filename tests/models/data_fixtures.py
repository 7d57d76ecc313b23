"""Generated test inputs for the data tests: image bytes, zips (sound and hostile) and benchmark trees.

Nothing binary is committed; every fixture is made here, small, from a seed.
"""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 220), (220, 200, 40), (180, 40, 200), (40, 190, 200)]


def encode(im: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def solid(colour: tuple[int, ...] | int, size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str = "PNG",
          seed: int = 0) -> bytes:
    """A near-solid image with a little noise (so re-encoding is not trivially constant)."""
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.asarray(colour, dtype=np.int16), (size[1], size[0], 3 if mode == "RGB" else 1))
    arr = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(arr[..., 0] if mode == "L" else arr), fmt)


def class_files(n_classes: int = 3, per_class: int = 3, prefix: str = "", size: tuple[int, int] = (8, 8)
                ) -> list[tuple[str, bytes]]:
    """(relative path, PNG bytes) for a class-per-folder set: class c is colour c."""
    return [(f"{prefix}class{c}/img{k}.png", solid(COLOURS[c % len(COLOURS)], size, seed=10 * c + k))
            for c in range(n_classes) for k in range(per_class)]


def make_zip(entries: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


def symlink_zip(entries: list[tuple[str, bytes]], link_name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        info = zipfile.ZipInfo(link_name)
        info.external_attr = (0o120777 << 16)  # S_IFLNK: the member is a symbolic link to `target`
        zf.writestr(info, target)
    return buf.getvalue()


def patch_central_directory(data: bytes, member: str, *, file_size: int | None = None,
                            flag_bits: int | None = None) -> bytes:
    """Rewrite one member's declared size or flags in the central directory (and its local header): lying headers."""
    out = bytearray(data)
    name = member.encode()
    pos = out.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46: pos + 46 + name_len] == name:
            local = struct.unpack_from("<I", out, pos + 42)[0]
            if file_size is not None:
                struct.pack_into("<I", out, pos + 24, file_size)
                struct.pack_into("<I", out, local + 22, file_size)
            if flag_bits is not None:
                struct.pack_into("<H", out, pos + 8, flag_bits)
                struct.pack_into("<H", out, local + 6, flag_bits)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise KeyError(member)


def huge_png(side: int = 20_000) -> bytes:
    """A valid side × side 1-bit PNG of ~50 kB: decoding it would allocate side² bytes."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


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
