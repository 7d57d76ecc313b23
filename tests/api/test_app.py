"""App-wide behaviour: health, components, security headers, the API token, the body limit, static files."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.analysis import MAX_PAIR_CLASSES
from server.app import create_app
from tests.support.app import make_settings


def test_health_reports_version_device_and_queue(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["version"] == "0.1.0" and body["device"] == "cpu"
    assert body["auth_required"] is False
    assert body["queue"] == {"workers": 1, "running": 0, "queued": 0, "max_queued": 100}
    assert body["max_pair_classes"] == MAX_PAIR_CLASSES  # the run page's class-pair panel reads its limit here


def test_components_list_every_registry_and_the_run_config(client: TestClient) -> None:
    body = client.get("/api/components").json()
    names = {kind: {c["name"] for c in body[kind]} for kind in ("losses", "distances", "miners", "regularizers",
                                                                 "backbones")}
    assert {"triplet", "proxy_anchor"} <= names["losses"]
    assert {"euclidean", "snr", "relative_mahalanobis"} <= names["distances"]
    assert {"det", "density", "zero_mean"} <= names["regularizers"]
    assert "small_cnn" in names["backbones"] and "semihard" in names["miners"]
    assert body["run_config"]["defaults"]["loss"]["name"] == "triplet"
    assert "flow" in body["run_config"]["schema"]["properties"]


def test_security_headers_on_every_response(client: TestClient) -> None:
    for path in ("/api/health", "/api/runs/0123456789ab", "/"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in client.get(
        "/api/health", headers={"Origin": "http://evil.example"}).headers  # CORS is off by default


def test_errors_have_one_shape(client: TestClient) -> None:
    assert client.get("/api/nothing-here").json()["error"] == "not_found"
    r = client.get("/api/runs/..%2F..%2Fetc")
    assert r.status_code in (404, 422) and set(r.json()) >= {"error", "detail"}
    r = client.get("/api/runs", params={"dataset_id": "../x"})
    assert r.status_code == 422 and r.json()["detail"].startswith("dataset_id:")


def test_token_protects_mutating_requests_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", api_token="s3cret")
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/health").json()["auth_required"] is True
        assert c.get("/api/runs").status_code == 200
        r = c.post("/api/runs", json={})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert c.post("/api/runs", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.post("/api/runs", json={}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 422  # past auth: the body is validated (dataset_id is missing)


def test_body_limit_gives_413(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data", max_request_mb=1))) as c:
        r = c.post("/api/datasets", files={"file": ("big.zip", b"0" * (2 << 20), "application/zip")})
        assert r.status_code == 413 and "DMLSCOPE_MAX_REQUEST_MB" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(3):
                yield b"0" * (1 << 20)

        r = c.post("/api/runs", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_frontend_and_vendored_plotly_are_served(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and b"plotly.js" in plotly.content[:200]
    assert client.get("/static/../server/app.py").status_code == 404


def test_openapi_operation_ids_read_well(client: TestClient) -> None:
    ops = {op["operationId"] for path in client.get("/openapi.json").json()["paths"].values() for op in path.values()}
    assert {"datasets-create", "runs-create", "runs-events", "explore-points", "explore-compare",
            "models-import", "system-health"} <= ops


@pytest.mark.slow
def test_demo_run_is_queued_once_on_an_empty_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, builtin_datasets=["digits"], demo_run=True)
    with TestClient(create_app(settings)) as client:
        runs = client.get("/api/runs").json()["data"]
        assert [r["name"] for r in runs] == ["demo: triplet baseline"]
        client.post(f"/api/runs/{runs[0]['id']}/cancel")
    with TestClient(create_app(settings)) as client:  # a restart does not queue another
        assert client.get("/api/runs").json()["count"] == 1
