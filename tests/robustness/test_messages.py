"""Refusals a user can act on: each says what arrived, what was wrong with it, and what to send instead; and a
dataset's list entry stays small however many files its import skipped."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.schemas import SKIPPED_SHOWN
from tests.support.app import Stored, make_settings, settled, upload, upload_ready
from tests.support.images import class_files, huge_png, solid
from tests.support.zips import good_zip, zip_of


def test_a_zip_with_nothing_usable_lists_the_files_and_why(stored: Stored) -> None:
    before = stored.snapshot()
    png = solid(0, (64, 64), fmt="BMP")
    junk = [("a/notes.png", b"plain text"), ("a/cut.bmp", png[: len(png) // 2]), ("b/readme.txt", b"hello")]
    state, dataset = settled(stored.client, upload(stored.client, zip_of(junk)))
    assert state == "failed", dataset
    detail = dataset["error"]
    assert "found 0" in detail and "3 file(s) were skipped" in detail, detail
    for path, why in (("a/notes.png", "not an image"), ("a/cut.bmp", "corrupt or truncated"), ("b/readme.txt", "not an image")):
        assert f"'{path}': {why}" in detail, detail
    assert stored.client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    assert stored.snapshot() == before


def test_hidden_class_folders_are_reported_not_dropped_silently(stored: Stored) -> None:
    hidden = [(f"{folder}/{i}.png", solid(9)) for folder in (".net", "...") for i in range(3)]
    dataset = upload_ready(stored.client, zip_of(class_files(2, 3) + hidden))
    warning = next(w for w in dataset["warnings"] if "hidden folders" in w)
    assert "6 file(s)" in warning and "'.net'" in warning and "'...'" in warning and "rename" in warning
    assert {c["name"] for c in dataset["classes"]} == {"class0", "class1"}
    assert stored.client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    before = stored.snapshot()
    r = upload(stored.client, zip_of(hidden))  # nothing but hidden folders: the refusal names them
    assert r.status_code == 400 and "'.net'" in r.json()["detail"] and "'...'" in r.json()["detail"], r.text
    r = stored.client.post("/api/datasets", files=[("files", (p, data, "image/png")) for p, data in hidden])
    assert r.status_code == 400 and "6 file(s) in hidden folders ('...', '.net')" in r.json()["detail"], r.text
    assert stored.snapshot() == before


def test_a_malformed_upload_says_what_arrived(stored: Stored) -> None:
    before = stored.snapshot()
    for body, content_type in ((b"garbage", "multipart/form-data; boundary=xyz"),
                               (b"garbage", "multipart/form-data")):
        for url in ("/api/datasets", "/api/models/import"):
            r = stored.client.post(url, content=body, headers={"Content-Type": content_type})
            assert r.status_code == 400, r.text
            assert "multipart/form-data body is malformed" in r.json()["detail"], (url, r.json()["detail"])
    wrong_name = stored.client.post("/api/datasets", files={"upload": ("a.zip", good_zip(), "application/zip")})
    assert wrong_name.status_code == 422 and "(the form held upload)" in wrong_name.json()["detail"], wrong_name.text
    as_json = stored.client.post("/api/datasets", json={"file": "a.zip"})
    assert as_json.status_code == 422 and "sent as application/json" in as_json.json()["detail"], as_json.text
    assert stored.snapshot() == before


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_named_as_such(stored: Stored, depth: int) -> None:
    body = '{"dataset_id": "%s", "config": %s1%s}' % (stored.dataset["id"], '{"a": ' * depth, "}" * depth)
    r = stored.client.post("/api/runs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text
    detail = r.json()["detail"]
    assert "nested too deeply" in detail or detail.startswith("config.a: Extra inputs"), detail
    assert "There was an error parsing the body" not in detail
    assert stored.client.get("/api/runs").json()["count"] == 0


def test_the_configured_pixel_limit_is_the_one_that_applies_and_is_named(tmp_path: Path) -> None:
    big = huge_png(14_000)  # 196 M pixels: over Pillow's own 178,956,970-pixel guard
    for limit, accepted in ((100_000_000, False), (200_000_000, True)):
        with TestClient(create_app(make_settings(tmp_path / str(limit), max_image_pixels=limit))) as client:
            dataset = upload_ready(client, good_zip(extra=[("class0/huge.png", big)]))
            reasons = {s["path"]: s["reason"] for s in dataset["skipped"]}
            if accepted:  # above Pillow's default, the configured limit still decides
                assert "class0/huge.png" not in reasons and dataset["num_images"] == 10, reasons
            else:
                why = reasons["class0/huge.png"]
                assert f"exceeds the limit of {limit:,} pixels" in why and "DMLSCOPE_MAX_IMAGE_PIXELS" in why, why
                assert "178956970" not in why


def test_the_dataset_list_carries_a_count_and_the_first_skipped_files(stored: Stored) -> None:
    junk = [(f"class0/junk{i:03d}.png", b"not pixels") for i in range(150)]
    ds = upload_ready(stored.client, good_zip(extra=junk))
    assert ds["skipped_count"] == 150 and len(ds["skipped"]) == SKIPPED_SHOWN
    listed = next(d for d in stored.client.get("/api/datasets").json()["data"] if d["id"] == ds["id"])
    assert listed["skipped_count"] == 150 and listed["skipped"] == ds["skipped"]
    everything = stored.client.get(f"/api/datasets/{ds['id']}/skipped").json()
    assert everything["count"] == 150 and [s["path"] for s in everything["data"]] == [p for p, _ in junk]
    assert all(s["reason"].startswith("not an image") for s in everything["data"])
    page = stored.client.get(f"/api/datasets/{ds['id']}/skipped", params={"offset": 140, "limit": 20}).json()
    assert [s["path"] for s in page["data"]] == [p for p, _ in junk[140:]] and page["count"] == 150
    assert stored.client.get("/api/datasets/0123456789ab/skipped").status_code == 404
    assert stored.client.delete(f"/api/datasets/{ds['id']}").status_code == 204
