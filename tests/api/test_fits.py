"""A run the data set cannot feed the way its config asks is refused before it is queued (400 naming the fix)."""
from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.app import TINY_CONFIG


def test_more_samples_per_class_than_any_class_has_is_refused(client: TestClient, dataset: dict[str, Any]) -> None:
    # the shapes set has 8 images per class: 9 per class could only be filled with repeats
    r = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {**TINY_CONFIG, "samples_per_class": 9}})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "samples_per_class is 9" in detail and "largest training class has 8 images" in detail
    assert "at most 8" in detail
    assert client.get("/api/runs").json()["count"] == 0
