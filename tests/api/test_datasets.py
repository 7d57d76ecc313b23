"""Datasets over HTTP: zip, folder and built-in uploads, listing, paging, images, deletion, hostile input."""
from __future__ import annotations

import io
import zipfile
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from tests.support.app import import_dataset
from tests.support.images import png_bytes
from tests.support.zips import make_zip


def test_zip_upload_reports_classes_counts_and_skipped_files(client: TestClient) -> None:
    zip_bytes = make_zip(3, 5, extra={"shapes/notes/readme.txt": b"not an image", "shapes/red circle/bad.png": b"x"})
    body = import_dataset(client, files={"file": ("my shapes.zip", zip_bytes, "application/zip")},
                          data={"name": "Shapes"})
    assert body["name"] == "Shapes" and body["source"] == "zip" and body["num_classes"] == 3
    assert body["num_images"] == 15 and all(c["count"] == 5 for c in body["classes"])
    skipped = {s["path"]: s["reason"] for s in body["skipped"]}
    assert "shapes/red circle/bad.png" in skipped and skipped["shapes/red circle/bad.png"]
    assert body["run_count"] == 0 and body["channels"] == 3 and body["native_size"] == 16
    assert client.get(f"/api/datasets/{body['id']}").json() == body
    listed = client.get("/api/datasets").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == body["id"]


def test_folder_upload_uses_relative_paths_as_names(client: TestClient) -> None:
    files = [("files", (f"pets/{cls}/{i}.png", png_bytes(), "image/png")) for cls in ("cat", "dog") for i in range(3)]
    body = import_dataset(client, files=files)
    assert body["name"] == "pets" and body["source"] == "upload"
    assert [c["name"] for c in body["classes"]] == ["cat", "dog"] and body["num_images"] == 6


def test_builtin_dataset_is_imported_once(client: TestClient) -> None:
    first = import_dataset(client, data={"builtin": "digits"})
    again = import_dataset(client, data={"builtin": "digits"})
    assert first["id"] == again["id"] and first["source"] == "builtin" and first["num_images"] == 1797
    r = client.post("/api/datasets", data={"builtin": "imagenet"})
    assert r.status_code == 400 and "choose one of" in r.json()["detail"]


def test_upload_needs_exactly_one_source(client: TestClient) -> None:
    r = client.post("/api/datasets", data={"name": "nothing"})
    assert r.status_code == 422 and r.json()["detail"].startswith("file: send exactly one of")
    r = client.post("/api/datasets", data={"builtin": "digits"}, files={"file": ("a.zip", make_zip(), "x")})
    assert r.status_code == 422 and "got file, builtin" in r.json()["detail"]


def test_hostile_zips_are_rejected_and_leave_nothing_behind(client: TestClient, settings) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil/x.png", png_bytes())
        zf.writestr("ok/y.png", png_bytes())
    r = client.post("/api/datasets", files={"file": ("evil.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 400 and r.json()["error"] == "bad_request" and "'..'" in r.json()["detail"]
    r = client.post("/api/datasets", files={"file": ("junk.zip", b"not a zip at all", "application/zip")})
    assert r.status_code == 400
    assert client.get("/api/datasets").json()["count"] == 0
    assert not (settings.data_dir.parent / "evil").exists()
    assert list((settings.data_dir / "datasets").iterdir()) == []
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_images_are_paged_filtered_and_served_immutable(client: TestClient, dataset: dict[str, Any]) -> None:
    ds = dataset["id"]
    page = client.get(f"/api/datasets/{ds}/images", params={"offset": 30, "limit": 5}).json()
    assert page["count"] == 32 and [im["id"] for im in page["data"]] == [30, 31]
    one_class = dataset["classes"][1]["name"]
    page = client.get(f"/api/datasets/{ds}/images", params={"class_name": one_class, "limit": 100}).json()
    assert page["count"] == 8 and {im["class"] for im in page["data"]} == {one_class}
    assert page["data"][0]["path"].endswith(".png") and page["data"][0]["thumb_url"].endswith("/thumb")
    r = client.get(f"/api/datasets/{ds}/images", params={"class_name": "nope"})
    assert r.status_code == 422 and r.json()["detail"].startswith("class_name:")
    for url in (page["data"][0]["url"], page["data"][0]["thumb_url"]):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert "immutable" in r.headers["cache-control"]
        assert Image.open(io.BytesIO(r.content)).size[0] <= 64
    assert client.get(f"/api/datasets/{ds}/images/32").status_code == 404
    assert client.get(f"/api/datasets/{ds}/images/-1").status_code == 422
    assert client.get(f"/api/datasets/{ds}/images", params={"limit": 5000}).status_code == 422


def test_ids_are_validated_before_any_path_is_built(client: TestClient) -> None:
    for bad in ("..", "..%2F..%2Fetc", "ABCDEF012345", "0123456789abc", "%2e%2e"):
        r = client.get(f"/api/datasets/{bad}")
        assert r.status_code in (404, 422), bad
        assert r.json()["error"] in ("not_found", "validation_error")
    assert client.get("/api/datasets/0123456789ab").status_code == 404


def test_delete_dataset(client: TestClient, dataset: dict[str, Any], settings) -> None:
    assert client.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/api/datasets/{dataset['id']}").status_code == 404
    assert not (settings.data_dir / "datasets" / dataset["id"]).exists()
    assert client.delete(f"/api/datasets/{dataset['id']}").status_code == 404
