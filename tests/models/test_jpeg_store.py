"""Benchmark imports store JPEG: published JPEGs that need no downscale keep their bytes, the rest are encoded
once at JPEG_QUALITY; the safety checks still apply to kept bytes, and every reader handles PNG and JPEG sets."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.support.benchmarks import write_tree
from tests.support.images import encode, huge_png

from models.config import AugmentConfig
from models.data import UploadLimits, export_zip, import_benchmark, import_builtin
from models.data.imageset import downscale
from models.data.loader import TrainImages
from models.data.safety import decode_image
from models.data.writer import JPEG_QUALITY

MAX_SIDE = 32


def _photo(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """Smooth gradient plus noise: decodes like a photo, so a second JPEG encode would change its bytes."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.add.outer(np.linspace(0, 120, h), np.linspace(0, 100, w))[..., None] + rng.integers(0, 90, 3)
    arr = np.clip(ramp + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., 0] if mode == "L" else arr)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    return encode(_photo((20, 12), 5), "JPEG", exif=exif.tobytes())


# class → {file name: bytes}; what each file tests is in its name
FILES: dict[int, dict[str, bytes]] = {
    1: {"kept_a.jpg": encode(_photo((24, 20), 1), "JPEG", quality=80),
        "kept_b.jpg": encode(_photo((20, 24), 2), "JPEG", quality=90)},
    2: {"large.jpg": encode(_photo((64, 40), 3), "JPEG"),
        "grey.jpg": encode(_photo((20, 20), 4, "L"), "JPEG")},
    3: {"rotated.jpg": _rotated_jpeg(),
        "cmyk.jpg": encode(_photo((16, 16), 6).convert("CMYK"), "JPEG")},
    4: {"lossless.png": encode(_photo((20, 20), 7)),
        "truncated.jpg": encode(_photo((20, 20), 8), "JPEG")[:-60],  # a sound header, the scan cut short
        "kept_c.jpg": encode(_photo((18, 18), 9), "JPEG")},
}


def _cub(root: Path, classes: dict[int, dict[str, bytes]] = FILES,
         extra: dict[int, dict[str, bytes]] | None = None) -> Path:
    """A CUB-200-2011 layout holding `classes` (plus `extra`)."""
    files: dict[str, bytes | str] = {}
    images, labels = [], []
    for c, members in {c: classes[c] | (extra or {}).get(c, {}) for c in classes}.items():
        for name, data in members.items():
            rel = f"{c:03d}.Class_{c}/{name}"
            files[f"images/{rel}"] = data
            images.append(f"{len(images) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {c}")
    files |= {"images.txt": "\n".join(images) + "\n", "image_class_labels.txt": "\n".join(labels) + "\n",
              "classes.txt": "".join(f"{c} {c:03d}.Class_{c}\n" for c in classes)}
    write_tree(root / "CUB_200_2011", files)
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("jpeg")
    return import_benchmark("cub", _cub(root / "cub"), root / "set", max_side=MAX_SIDE)


def _index(image_set, name: str) -> int:
    return next(i for i, p in enumerate(image_set.paths) if p.endswith("/" + name))


def _source(name: str) -> bytes:
    return next(files[name] for files in FILES.values() if name in files)


def test_published_jpegs_that_fit_keep_their_bytes(imported) -> None:
    s = imported.image_set
    assert s.image_format == "jpeg" and s.media_type == "image/jpeg"
    assert sorted(p.suffix for p in (s.root / "images").iterdir()) == [".jpg"] * len(s)
    assert {p.suffix for p in (s.root / "thumbs").iterdir()} == {".png"}
    for name in ("kept_a.jpg", "kept_b.jpg", "grey.jpg", "kept_c.jpg"):
        assert s.image_path(_index(s, name)).read_bytes() == _source(name), name


def test_other_images_are_encoded_once_as_jpeg_at_the_stored_size(imported) -> None:
    s = imported.image_set
    expected = {"large.jpg": (32, 20), "rotated.jpg": (12, 20), "cmyk.jpg": (16, 16), "lossless.png": (20, 20)}
    for name, size in expected.items():
        data = s.image_path(_index(s, name)).read_bytes()
        assert data != _source(name), name
        with Image.open(io.BytesIO(data)) as im:
            assert (im.format, im.size) == ("JPEG", size), name
            assert im.mode == "RGB", name
    # encoded once, from the decoded (and downscaled) source, at JPEG_QUALITY
    for name in ("lossless.png", "large.jpg"):
        with Image.open(io.BytesIO(_source(name))) as src:
            once = encode(downscale(src.convert("RGB"), MAX_SIDE), "JPEG", quality=JPEG_QUALITY)
        assert s.image_path(_index(s, name)).read_bytes() == once, name


def test_kept_bytes_pass_the_same_checks(imported) -> None:
    assert [f.path for f in imported.skipped] == ["images/004.Class_4/truncated.jpg"]
    assert "corrupt or truncated" in imported.skipped[0].reason


def test_decompression_bomb_guard_applies_to_benchmark_jpegs(tmp_path: Path) -> None:
    big = encode(_photo((300, 200), 11), "JPEG")
    report = import_benchmark("cub", _cub(tmp_path / "cub", extra={1: {"big.jpg": big, "bomb.png": huge_png(4000)}}),
                              tmp_path / "set", UploadLimits(max_image_pixels=50_000), max_side=MAX_SIDE)
    reasons = {f.path.rsplit("/", 1)[1]: f.reason for f in report.skipped}
    assert "exceeds the limit of 50,000 pixels" in reasons["big.jpg"]
    assert "exceeds the limit of 50,000 pixels" in reasons["bomb.png"]


def test_plain_jpeg_flag() -> None:
    limits = UploadLimits()
    assert decode_image(_source("kept_a.jpg"), limits).plain_jpeg
    assert decode_image(_source("grey.jpg"), limits).plain_jpeg
    assert not decode_image(_source("rotated.jpg"), limits).plain_jpeg  # its pixels are the rotated ones
    assert not decode_image(_source("cmyk.jpg"), limits).plain_jpeg  # converted to RGB
    assert not decode_image(_source("lossless.png"), limits).plain_jpeg
    large = encode(_photo((200, 100), 12), "JPEG")
    assert decode_image(large, limits, max_side=200).plain_jpeg
    assert not decode_image(large, limits, max_side=40).plain_jpeg  # decoded at a reduced scale (draft)


def _decoded_files(image_set) -> list[np.ndarray]:
    """A slow reference: every stored file decoded on its own, in the set's channel count."""
    out = []
    for i in range(len(image_set)):
        with Image.open(image_set.image_path(i)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0)
    return out


def test_statistics_describe_the_stored_pixels(imported) -> None:
    s = imported.image_set
    assert s.channels == 3  # colour set with a grey member
    pixels = np.concatenate([a.reshape(-1, 3) for a in _decoded_files(s)])
    np.testing.assert_allclose(s.mean, pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(s.std, pixels.std(axis=0), atol=1e-6)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_loader_cache_and_queries_read_both_formats(tmp_path: Path, kind: str) -> None:
    if kind == "jpeg":
        square = {c: {f"sq{c}_{k}.jpg": encode(_photo((16, 16), 20 + 2 * c + k), "JPEG") for k in range(2)}
                  for c in (1, 2)}
        square[2]["sq2_1.jpg"] = encode(_photo((16, 16), 30, "L"), "JPEG")  # grey file in a colour set
        s = import_benchmark("cub", _cub(tmp_path / "cub", square), tmp_path / "set", max_side=MAX_SIDE).image_set
    else:
        s = import_builtin("synthetic", tmp_path / "set", num_classes=2, per_class=2, size=16).image_set
    assert s.image_format == kind and s.native_size == 16 and s.channels == 3
    cache = s.pixels(16)
    loader = TrainImages(s, 16, AugmentConfig(mode="standard"), seed=0)
    for i in range(len(s)):
        np.testing.assert_array_equal(loader._decode(i).numpy(), cache[i])
        np.testing.assert_array_equal(s.query_pixels(s.image_path(i).read_bytes(), 16), cache[i])
    if kind == "jpeg":
        grey = np.asarray(Image.open(io.BytesIO(encode(_photo((16, 16), 30, "L"), "JPEG"))))
        assert all(np.array_equal(c, grey) for c in cache[3])  # the grey JPEG, as three equal channels
    with zipfile.ZipFile(export_zip(s, tmp_path / "export.zip")) as zf:
        assert {Path(n).suffix for n in zf.namelist()} == {".png" if kind == "png" else ".jpg"}
