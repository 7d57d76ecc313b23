"""Untrusted uploads: archive-level attacks reject the whole upload; bad files inside are skipped with reasons.

Every fixture is generated here (see tests/support); none is committed.
"""
import io
import subprocess
import sys
import textwrap
import unicodedata
import zipfile

import numpy as np
import pytest
from tests.support.images import class_files, encode, huge_png, solid
from tests.support.zips import patch_central_directory, symlink_zip, zip_of
from PIL import Image

from models.data import DatasetError, ImageSet, UploadLimits, import_files, import_folder, import_zip
from models.data.safety import ByteBudget


def skipped_reasons(report) -> dict[str, str]:
    return {s.path: s.reason for s in report.skipped}


def assert_nothing_left(tmp_path, dest_name="set"):
    """A rejected import leaves neither the destination nor its temp folder behind."""
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((dest_name, f".{dest_name}"))]
    assert leftovers == []


# ---- archive-level attacks: DatasetError, nothing written ----

@pytest.mark.parametrize("name,message", [
    ("../evil.png", "outside the upload"),
    ("class0/../../evil.png", "outside the upload"),
    ("/etc/evil.png", "absolute path"),
    ("C:/evil.png", "absolute path"),
    ("class0\\evil.png", "backslashes"),
    ("class0/e\x1bvil.png", "control characters"),
])
def test_zip_slip_names_reject_the_upload(tmp_path, name, message):
    data = zip_of(class_files() + [(name, solid(0))])
    with pytest.raises(DatasetError, match=message):
        import_zip(data, tmp_path / "set")
    assert_nothing_left(tmp_path)


def test_symlink_member_rejects_the_upload(tmp_path):
    data = symlink_zip(class_files(), "class0/link.png", "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        import_zip(data, tmp_path / "set")


def test_zip_bomb_by_ratio(tmp_path):
    data = zip_of(class_files() + [("class0/bomb.png", b"\0" * (8 << 20))])
    assert len(data) < 100_000
    with pytest.raises(DatasetError, match="zip bomb"):
        import_zip(data, tmp_path / "set")


def test_total_uncompressed_limit(tmp_path):
    data = zip_of(class_files(), compression=zipfile.ZIP_STORED)
    with pytest.raises(DatasetError, match="unpacks to"):
        import_zip(data, tmp_path / "set", UploadLimits(max_total_bytes=500))


def test_archive_size_and_member_limits(tmp_path):
    data = zip_of(class_files())
    with pytest.raises(DatasetError, match="the limit is 100 bytes"):
        import_zip(data, tmp_path / "set", UploadLimits(max_archive_bytes=100))
    with pytest.raises(DatasetError, match="9 entries; the limit is 5"):
        import_zip(data, tmp_path / "set", UploadLimits(max_members=5))


def test_lying_size_header_is_caught_while_streaming(tmp_path):
    # The directory says 100 bytes, the stream holds 2 MB: the reader stops at 100 and the CRC then fails.
    payload = np.random.default_rng(0).integers(0, 255, 2 << 20, dtype=np.uint8).tobytes()
    data = patch_central_directory(zip_of(class_files() + [("class0/liar.png", payload)]), "class0/liar.png",
                                   file_size=100)
    with pytest.raises(DatasetError, match="class0/liar.png.*damaged"):
        import_zip(data, tmp_path / "set")
    assert_nothing_left(tmp_path)


def test_byte_budget_counts_what_is_really_read():
    budget = ByteBudget(10)
    budget.take(6)
    with pytest.raises(DatasetError, match="more than"):
        budget.take(6)


def test_not_a_zip_and_empty_archives(tmp_path):
    with pytest.raises(DatasetError, match="not a readable zip"):
        import_zip(b"hello, not a zip", tmp_path / "set")
    with pytest.raises(DatasetError, match="archive is empty"):
        import_zip(zip_of([]), tmp_path / "set")
    with pytest.raises(DatasetError, match="no files"):
        import_zip(zip_of([("class0/", b""), ("__MACOSX/._x.png", b"x"), (".DS_Store", b"x")]), tmp_path / "set")


def test_no_class_folders(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        import_zip(zip_of([("a.png", solid(0)), ("b.png", solid(1))]), tmp_path / "set")


def test_one_class_only(tmp_path):
    with pytest.raises(DatasetError, match="only one class folder \\('class0'\\)"):
        import_zip(zip_of(class_files(1, 4, prefix="wrap/")), tmp_path / "set")


def test_too_few_classes_left_after_dropping(tmp_path):
    files = class_files(2, 3)[:4]  # class0: 3 images, class1: 1 image
    with pytest.raises(DatasetError, match="need at least 2 classes with 2 or more usable images each; found 1"):
        import_zip(zip_of(files), tmp_path / "set")
    assert_nothing_left(tmp_path)


def test_encrypted_member_is_skipped(tmp_path):
    data = patch_central_directory(zip_of(class_files() + [("class0/secret.png", solid(0))]), "class0/secret.png",
                                   flag_bits=0x1)
    report = import_zip(data, tmp_path / "set")
    assert "encrypted" in skipped_reasons(report)["class0/secret.png"]


def test_bzip2_member_is_skipped(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in class_files():
            zf.writestr(name, data)
        zf.writestr("class0/bz.png", solid(0), compress_type=zipfile.ZIP_BZIP2)
    report = import_zip(buf.getvalue(), tmp_path / "set")
    assert "only stored or deflated" in skipped_reasons(report)["class0/bz.png"]


def test_browser_upload_with_traversal_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="outside the upload"):
        import_files(class_files() + [("pick/../../x.png", solid(0))], tmp_path / "set")
    with pytest.raises(DatasetError, match="no files were uploaded"):
        import_files([], tmp_path / "set")


# ---- bad files inside: skipped with a reason, the rest imported ----

def test_wrapper_folder_and_litter(tmp_path):
    files = class_files(2, 2, prefix="mydata/") + [
        ("__MACOSX/mydata/class0/._img0.png", b"junk"), ("mydata/.DS_Store", b"junk"),
        ("mydata/class0/.hidden.png", solid(0)), ("mydata/.git/config", b"x"), ("mydata/readme.txt", b"hi"),
        ("mydata/class1/deeper/img9.png", solid(1)),
    ]
    report = import_zip(zip_of(files), tmp_path / "set")
    assert report.image_set.class_names == ["class0", "class1"]
    assert len(report.image_set) == 4
    assert skipped_reasons(report) == {
        "mydata/readme.txt": "not inside a class folder; expected <class>/<image>",
        "mydata/class1/deeper/img9.png": "in a sub-folder of class folder 'class1'; expected <class>/<image>"}
    assert report.image_set.paths[0] == "mydata/class0/img0.png"


def test_non_images_truncated_nested_and_empty_files(tmp_path):
    png = solid(0, (16, 16))
    jpeg = solid((90, 90, 90), (32, 32), fmt="JPEG")
    files = class_files() + [
        ("class0/notes.png", b"just some text, not an image"),
        ("class0/cut.png", png[: len(png) // 2]),
        ("class1/cut.jpg", jpeg[: jpeg.find(b"\xff\xda") + 20]),  # headers intact, scan data cut
        ("class1/inner.zip", zip_of(class_files())),
        ("class2/empty.png", b""),
    ]
    reasons = skipped_reasons(import_zip(zip_of(files), tmp_path / "set"))
    assert reasons["class0/notes.png"].startswith("not an image")
    assert "truncated" in reasons["class0/cut.png"]
    assert "truncated" in reasons["class1/cut.jpg"]
    assert "nested archives" in reasons["class1/inner.zip"]
    assert reasons["class2/empty.png"] == "empty file"


def test_class_with_one_image_is_dropped_and_reported(tmp_path):
    files = class_files(2, 2) + [("lonely/only.png", solid(3))]
    report = import_zip(zip_of(files), tmp_path / "set")
    assert report.image_set.class_names == ["class0", "class1"]
    assert any("'lonely' was dropped" in w for w in report.warnings)
    assert "fewer than 2" in skipped_reasons(report)["lonely/only.png"]


def test_unicode_and_spaces_in_names(tmp_path):
    files = [("chat noir/été 1.png", solid(0)), ("chat noir/été 2.png", solid(0, seed=1)),
             ("Straße 7/ß.png", solid(1)), ("Straße 7/日本.png", solid(1, seed=2))]
    report = import_files(files, tmp_path / "set")
    assert report.image_set.class_names == ["chat noir", "Straße 7"]
    assert "chat noir/été 1.png" in report.image_set.paths


def test_duplicate_names_after_normalisation(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png")
    assert nfc != nfd
    files = class_files(2, 2) + [(f"class0/{nfc}", solid(0)), (f"class0/{nfd}", solid(0, seed=5)),
                                 ("Class1/img0.png", solid(1, seed=9)), ("Class1/extra.png", solid(1, seed=8))]
    report = import_zip(zip_of(files), tmp_path / "set")
    reasons = skipped_reasons(report)
    assert any("same name" in r for p, r in reasons.items() if "caf" in p)
    assert "same name as 'Class1/img0.png'" in reasons["class1/img0.png"]
    assert report.image_set.class_names == ["class0", "Class1"]  # 'class1' merged into 'Class1', sorted first
    assert any("differ only in letter case" in w for w in report.warnings)
    assert len(report.image_set) == 2 + 1 + 2 + 1


def test_content_decides_not_the_extension(tmp_path):
    files = class_files(2, 2) + [("class0/really_png.jpg", solid(0)), ("class1/really_jpeg.txt",
                                                                       solid(1, fmt="JPEG"))]
    report = import_zip(zip_of(files), tmp_path / "set")
    assert report.skipped == []
    assert len(report.image_set) == 6


def test_animated_gif_keeps_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(gif)).n_frames == 3
    report = import_zip(zip_of(class_files(2, 2) + [("class0/anim.gif", gif)]), tmp_path / "set")
    i = report.image_set.paths.index("class0/anim.gif")
    assert tuple(report.image_set.pixels(8)[i, :, 4, 4]) == (255, 0, 0)
    assert any("multi-frame" in w and "first frame" in w for w in report.warnings)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    deep = [encode(Image.fromarray(np.full((4, 4), v, dtype=np.uint16))) for v in (65535, 32896, 4112)]
    assert Image.open(io.BytesIO(deep[0])).mode.startswith("I;16")
    files = [("a/1.png", deep[0]), ("a/2.png", deep[1]), ("b/1.png", deep[2]), ("b/2.png", deep[2])]
    report = import_files(files, tmp_path / "set")
    assert report.image_set.channels == 1
    assert report.image_set.pixels(4)[:3, 0, 0, 0].tolist() == [255, 128, 16]


def test_cmyk_converts_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    files = class_files(2, 2) + [("class0/cmyk.jpg", encode(cmyk, "JPEG", quality=95)),
                                 ("class0/cmyk.tif", encode(cmyk, "TIFF"))]
    report = import_files(files, tmp_path / "set")
    px = report.image_set.pixels(8)
    for name in ("class0/cmyk.jpg", "class0/cmyk.tif"):
        r, g, b = px[report.image_set.paths.index(name), :, 4, 4].astype(int)
        assert r > 240 and g < 15 and b < 15, name


def test_alpha_is_composited_over_white_and_palette_is_expanded(tmp_path):
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    palette = Image.new("RGB", (8, 8), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE)
    files = class_files(2, 2) + [("class0/alpha.png", encode(transparent)), ("class0/pal.png", encode(palette))]
    report = import_files(files, tmp_path / "set")
    px = report.image_set.pixels(8)
    assert tuple(px[report.image_set.paths.index("class0/alpha.png"), :, 0, 0]) == (255, 255, 255)
    assert tuple(px[report.image_set.paths.index("class0/pal.png"), :, 0, 0]) == (0, 0, 200)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (16, 8), (10, 120, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    files = class_files(2, 2) + [("class0/rot.jpg", encode(im, "JPEG", exif=exif.tobytes()))]
    report = import_files(files, tmp_path / "set")
    with Image.open(report.image_set.image_path(report.image_set.paths.index("class0/rot.jpg"))) as stored:
        assert stored.size == (8, 16)


def test_one_pixel_images_are_accepted(tmp_path):
    files = [("a/1.png", solid(0, (1, 1))), ("a/2.png", solid(0, (1, 1), seed=1)),
             ("b/1.png", solid(1, (1, 1))), ("b/2.png", solid(1, (1, 1), seed=1))]
    s = import_files(files, tmp_path / "set").image_set
    assert s.native_size == 1
    assert s.pixels(4).shape == (4, 3, 4, 4)


def test_pixel_limit_skips_a_large_image(tmp_path):
    files = class_files(2, 2) + [("class0/big.png", solid(0, (300, 300)))]
    report = import_files(files, tmp_path / "set", UploadLimits(max_image_pixels=200 * 200))
    assert "300×300 pixels exceeds the limit of 40,000" in skipped_reasons(report)["class0/big.png"]


def test_file_size_limit_skips_a_large_file(tmp_path):
    big = solid(0, (64, 64))
    report = import_zip(zip_of(class_files(2, 2) + [("class0/big.png", big)]), tmp_path / "set",
                        UploadLimits(max_file_bytes=len(big) - 1))
    assert "the limit is" in skipped_reasons(report)["class0/big.png"]


@pytest.mark.slow
def test_decompression_bomb_is_skipped_without_allocating_it(tmp_path):
    """A valid 20 000 × 20 000 PNG (400 M pixels, ~50 kB): skipped from its header, peak memory stays low."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png())
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from models.data.safety import BadImage, UploadLimits, decode_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image(Path({str(bomb)!r}).read_bytes(), UploadLimits())
        except BadImage as exc:
            print(exc.reason)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)  # MiB (Linux: KiB units)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "decompression-bomb guard" in out[0]
    assert int(out[1]) < 100
    report = import_files(class_files(2, 2) + [("class0/bomb.png", bomb.read_bytes())], tmp_path / "set")
    assert "decompression-bomb guard" in skipped_reasons(report)["class0/bomb.png"]


def test_local_folder_ignores_hidden_files_and_skips_bad_ones(tmp_path):
    src = tmp_path / "src"
    for rel, data in class_files(2, 2) + [("class0/.secret.png", solid(0)), ("class1/bad.png", b"nope"),
                                          (".cache/x.png", solid(0))]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    report = import_folder(src, tmp_path / "set")
    assert len(report.image_set) == 4
    assert list(skipped_reasons(report)) == ["class1/bad.png"]
    assert isinstance(ImageSet(tmp_path / "set"), ImageSet)
