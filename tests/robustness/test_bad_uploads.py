"""Hostile and messy uploads through POST /api/datasets (tests/models/test_upload_safety.py covers the importers).

Archive-level attacks and uploads without class folders answer 400 with a message that says what to fix, and
the store is left exactly as it was. What only decoding can find (too few usable images) fails the import
job: the dataset ends `failed` with the reasons, and deleting it leaves the store as it was. Bad files inside a
sound upload are skipped and listed with their reason.
"""
from __future__ import annotations

import io
import unicodedata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import create_app
from tests.support.app import Stored, make_settings, settled, upload, upload_ready
from tests.support.images import class_files, encode, huge_png, solid
from tests.support.zips import good_zip, symlink_zip, zip_of

MiB = 1 << 20


def _random_bytes(n: int, values: int = 256) -> bytes:
    return np.random.default_rng(0).integers(0, values, n, dtype=np.uint8).tobytes()


# (case, zip bytes, what the 400's detail must say): refused by the request, before anything is stored
REJECTED: list[tuple[str, Callable[[], bytes], str]] = [
    ("zip-slip ../", lambda: good_zip(extra=[("class0/../../../evil.png", solid(0))]), "outside the upload"),
    ("zip-slip absolute path", lambda: good_zip(extra=[("/tmp/evil.png", solid(0))]), "absolute path"),
    ("zip-slip symlink", lambda: symlink_zip(class_files(), "class0/link.png", "/etc/passwd"), "symbolic link"),
    ("zip bomb (ratio)", lambda: good_zip(extra=[("class0/bomb.png", b"\0" * (8 * MiB))]), "zip bomb"),
    ("not a zip", lambda: b"PK\x03\x04 this is no archive", "not a readable zip"),
    ("empty archive", lambda: zip_of([]), "archive is empty"),
    ("only folders", lambda: zip_of([("cats/", b""), ("dogs/", b"")]), "holds no files"),
    ("no class folders", lambda: zip_of([("a.png", solid(0)), ("b.png", solid(1))]), "no class folders"),
    ("a zip of a zip", lambda: zip_of([("photos.zip", good_zip())]), "'photos.zip' is an archive inside"),
    ("one class only", lambda: zip_of(class_files(1, 4)), "only one class folder ('class0')"),
]
# (case, zip bytes, what the failed import's error must say): accepted, then failed by the import job
FAILED: list[tuple[str, Callable[[], bytes], str]] = [
    ("classes of one image", lambda: zip_of(class_files(3, 1)),
     "need at least 2 classes with 2 or more usable images each; found 0"),
    ("nothing decodable", lambda: zip_of([(f"{c}/{i}.png", b"text, not pixels") for c in "ab" for i in range(3)]),
     "need at least 2 classes with 2 or more usable images each; found 0"),
    ("one class left after skipping", lambda: zip_of(class_files(1, 3) + [("class1/a.png", b"x"),
                                                                            ("class1/b.png", solid(1)[:20])]),
     "found 1 ('class0')"),
]


@pytest.mark.parametrize("case,build,message", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_uploads_change_nothing(stored: Stored, case: str, build: Callable[[], bytes], message: str) -> None:
    before = stored.snapshot()
    r = upload(stored.client, build())
    assert r.status_code == 400, (case, r.text)
    assert r.json()["error"] == "bad_request" and message in r.json()["detail"], (case, r.json())
    assert stored.snapshot() == before, case
    assert not (stored.settings.data_dir.parent / "evil.png").exists() and not Path("/tmp/evil.png").exists()


@pytest.mark.parametrize("case,build,message", FAILED, ids=[c[0] for c in FAILED])
def test_unusable_uploads_fail_their_import_with_the_reasons(stored: Stored, case: str, build: Callable[[], bytes],
                                                             message: str) -> None:
    before = stored.snapshot()
    state, dataset = settled(stored.client, upload(stored.client, build()))
    assert state == "failed" and message in dataset["error"], (case, dataset)
    assert dataset["num_images"] == 0 and not (stored.settings.data_dir / "datasets" / dataset["id"]).exists()
    r = stored.client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {}})
    assert r.status_code == 409 and "failed to import" in r.json()["detail"], r.text
    assert stored.client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    assert stored.snapshot() == before, case  # the record was all a failed import kept


def test_folder_upload_with_traversal_in_a_file_name_changes_nothing(stored: Stored) -> None:
    before = stored.snapshot()
    files = [("files", (name, data, "image/png")) for name, data in class_files(2, 2, prefix="pick/")]
    r = stored.client.post("/api/datasets", files=[*files, ("files", ("pick/../../escape.png", solid(0), "image/png"))])
    assert r.status_code == 400 and "outside the upload" in r.json()["detail"], r.text
    assert stored.snapshot() == before


def _messy_members() -> list[tuple[str, bytes]]:
    """Every kind of odd file a real folder holds, next to three sound classes."""
    png = solid(0, (16, 16))
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    nfc, nfd = unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png")
    return class_files(3, 3) + [
        ("class0/notes.png", b"meeting notes, not an image"),
        ("class0/cut.png", png[: len(png) // 2]),
        ("class0/garbage.jpg", b"\xff\xd8\xff\xe0" + _random_bytes(2000)),
        ("class0/inner.zip", good_zip()),
        ("class0/" + nfc, solid(0, seed=7)), ("class0/" + nfd, solid(0, seed=8)),
        ("class1/really_a_png.jpg", solid(1, seed=5)),
        ("class1/animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)),
        ("class1/deep16.png", encode(Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)))),
        ("class2/cmyk.jpg", encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")),
        ("class2/one_pixel.png", solid(2, (1, 1))),
        ("class2/20000x20000.png", huge_png(20_000)),
        ("class2/9000x9000.png", huge_png(9_000)),
        ("lonely/only.png", solid(3)),
        ("chat noir/été 1.png", solid(4)), ("chat noir/été 2.png", solid(4, seed=1)),
    ]


def test_bad_files_are_skipped_and_listed_with_their_reason(stored: Stored) -> None:
    body = upload_ready(stored.client, zip_of(_messy_members()), "messy folder.zip")
    reasons = {s["path"]: s["reason"] for s in body["skipped"]}
    assert reasons["class0/notes.png"].startswith("not an image")
    assert "truncated" in reasons["class0/cut.png"]
    assert reasons["class0/garbage.jpg"]
    assert "nested archives are not opened" in reasons["class0/inner.zip"]
    assert any(p.startswith("class0/caf") and "same name" in why for p, why in reasons.items())
    # The configured limit, named, not Pillow's own 178,956,970-pixel guard that used to fire first:
    assert "20000×20000 pixels exceeds the limit of 64,000,000" in reasons["class2/20000x20000.png"]
    assert "DMLSCOPE_MAX_IMAGE_PIXELS" in reasons["class2/20000x20000.png"]
    assert "9000×9000 pixels exceeds the limit of 64,000,000" in reasons["class2/9000x9000.png"]
    assert "fewer than 2 usable images" in reasons["lonely/only.png"]
    assert len(reasons) == 8
    assert any("multi-frame" in w for w in body["warnings"]) and any("'lonely' was dropped" in w
                                                                     for w in body["warnings"])
    counts = {c["name"]: c["count"] for c in body["classes"]}
    assert counts == {"chat noir": 2, "class0": 4, "class1": 6, "class2": 5}, counts
    assert body["name"] == "messy folder" and body["channels"] == 3
    assert stored.client.get(f"/api/datasets/{body['id']}").json()["skipped"] == body["skipped"]  # kept, for the UI
    page = stored.client.get(f"/api/datasets/{body['id']}/images", params={"class_name": "chat noir"}).json()
    assert [im["path"] for im in page["data"]] == ["chat noir/été 1.png", "chat noir/été 2.png"]
    image = stored.client.get(page["data"][0]["url"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).format == "PNG"  # re-encoded


# (setting, its value, the upload, what the answer must say when the setting is tight). Each upload is accepted
# under the defaults, so the difference is the setting's doing.
# The answer: a refusal's status, or the state the import ended in.
LIMITS: list[tuple[str, Any, Callable[[], bytes], int | str, str]] = [
    ("max_unpacked_mb", 1, lambda: good_zip(extra=[("class0/blob.bin", _random_bytes(MiB + MiB // 2))]), 400,
     "unpacks to 1.5 MiB; the limit is 1.0 MiB"),
    ("max_zip_ratio", 2.0, lambda: good_zip(extra=[("class0/bits.bin", _random_bytes(2 * MiB, values=2))]), 400,
     "limit 2×): this looks like a zip bomb"),
    ("max_upload_files", 5, good_zip, 400, "9 entries; the limit is 5"),
    ("max_image_pixels", 100, lambda: good_zip(extra=[("class0/big.png", solid(0, (16, 16)))]), "ready",
     "16×16 pixels exceeds the limit of 100 pixels"),
    ("max_file_mb", 1, lambda: good_zip(extra=[("class0/noise.png", encode(Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8))))]), "ready",
     "the limit is 1.0 MiB per file"),
    ("max_request_mb", 1, lambda: good_zip(extra=[("class0/blob.bin", _random_bytes(2 * MiB))]), 413,
     "larger than 1 MiB"),
]


@pytest.mark.parametrize("setting,value,build,status,message", LIMITS, ids=[c[0] for c in LIMITS])
def test_upload_limits_come_from_the_settings(stored: Stored, tmp_path: Path, setting: str, value: Any,
                                              build: Callable[[], bytes], status: int | str, message: str) -> None:
    data = build()
    assert settled(stored.client, upload(stored.client, data))[0] == "ready"  # the defaults accept it
    with TestClient(create_app(make_settings(tmp_path / "data", **{setting: value}))) as client:
        got, body = settled(client, upload(client, data))
        assert got == status, body
        shown = {"ready": lambda: " ".join(s["reason"] for s in body["skipped"]),
                 "failed": lambda: body["error"]}.get(got, lambda: body["detail"])()
        assert message in shown, shown
        if got != "ready":
            assert [d["state"] for d in client.get("/api/datasets").json()["data"]] in ([], ["failed"])
