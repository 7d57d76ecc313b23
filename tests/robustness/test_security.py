"""Security: loopback by default, the token on every mutating route, no cross-site writes, CORS off, security
headers and an offline /docs, checkpoints loaded without code, and no pickle of user data anywhere."""
from __future__ import annotations

import base64
import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.support.app import TINY_CONFIG, Stored, api_routes, make_settings, upload_ready
from tests.support.polling import wait_for
from tests.support.zips import good_zip, make_zip

ROOT = Path(__file__).resolve().parents[2]
SAFE = {"GET", "HEAD", "OPTIONS"}


def test_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    from server.app import serve

    monkeypatch.delenv("DMLSCOPE_HOST", raising=False)
    bound: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: bound.update(kwargs))
    serve(Settings(data_dir=tmp_path / "data", builtin_datasets=[]))
    assert bound["host"] == "127.0.0.1"


def test_the_token_guards_every_mutating_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import server.middleware

    compared: list[bytes] = []
    real = server.middleware.hmac.compare_digest
    monkeypatch.setattr(server.middleware.hmac, "compare_digest", lambda a, b: compared.append(a) or real(a, b))
    with TestClient(create_app(make_settings(tmp_path / "data", api_token="s3cret"))) as client:
        routes = [(m, p) for m, p, _ in api_routes(client.app) if m not in SAFE]
        assert len(routes) >= 8, routes
        for method, path in routes:
            url = path.replace("{dataset_id}", "0123456789ab").replace("{run_id}", "0123456789ab")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path, headers)
            r = client.request(method, url, headers={"Authorization": "Bearer s3cret"})
            assert r.status_code != 401, (method, path)
        assert b"Bearer wrong" in compared  # compared in constant time, not with ==
        assert client.get("/api/datasets").status_code == 200  # reading needs no token


def test_cross_site_writes_are_refused(stored: Stored, tmp_path: Path) -> None:
    before = stored.snapshot()
    for origin in ("http://evil.example", "null", "http://testserver.evil.example"):
        r = stored.client.post("/api/datasets", files={"file": ("x.zip", good_zip(), "application/zip")},
                               headers={"Origin": origin})
        assert r.status_code == 403 and r.json()["error"] == "forbidden" and origin in r.json()["detail"], r.text
        r = stored.client.delete(f"/api/datasets/{stored.dataset['id']}", headers={"Origin": origin})
        assert r.status_code == 403
    assert stored.snapshot() == before
    r = stored.client.delete("/api/datasets/0123456789ab", headers={"Origin": "http://testserver"})
    assert r.status_code == 404  # the app's own pages pass
    with TestClient(create_app(make_settings(tmp_path / "data", cors_origins=["http://lab.example:3000"]))) as client:
        r = client.delete("/api/datasets/0123456789ab", headers={"Origin": "http://lab.example:3000"})
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "http://lab.example:3000"


def test_cors_is_off_by_default(stored: Stored) -> None:
    preflight = stored.client.options("/api/runs", headers={"Origin": "http://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in stored.client.get("/api/datasets",
                                                                  headers={"Origin": "http://evil.example"}).headers


def test_security_headers_on_pages_files_and_errors(stored: Stored) -> None:
    for path in ("/", "/docs", "/static/style.css", "/static/vendor/plotly.min.js", "/api/health", "/openapi.json",
                 "/nowhere", f"/api/datasets/{stored.dataset['id']}/images/0"):
        headers = stored.client.get(path).headers
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["cross-origin-resource-policy"] == "same-origin", path


def test_docs_work_offline_under_a_self_only_policy(stored: Stored) -> None:
    r = stored.client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    csp = r.headers["content-security-policy"]
    assert "http" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    for url in re.findall(r'(?:src|href)="([^"]+)"', r.text):  # every asset comes from this server
        assert url.startswith("/"), url
        assert stored.client.get(url).status_code == 200, url
    for script in re.findall(r"<script>(.*?)</script>", r.text, flags=re.S):  # inline code runs by its hash only
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert stored.client.get("/redoc").status_code == 404  # ReDoc would fetch its logo from a CDN


class _TouchOnLoad:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return Path.touch, (self.marker,)


def test_malicious_checkpoints_run_no_code(stored: Stored, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"format": 1, "model": {}, "config": _TouchOnLoad(marker)}, buf)
    before = stored.snapshot()
    for name, data in (("evil.pt", buf.getvalue()), ("evil.pkl", pickle.dumps(_TouchOnLoad(marker)))):
        r = stored.client.post("/api/models/import", files={"file": (name, data)},
                               data={"dataset_id": stored.dataset["id"]})
        assert r.status_code == 400 and "not a readable dmlscope checkpoint" in r.json()["detail"], r.text
        assert str(Path.cwd()) not in r.json()["detail"]  # the server's temp path is not shown
    assert not marker.exists()
    assert stored.snapshot() == before


@pytest.mark.slow
def test_an_imported_checkpoint_cannot_make_the_server_open_a_path(tmp_path: Path) -> None:
    """A checkpoint whose config names a weights file is stored without it (its weights replace that file)."""
    from models.config import RunConfig
    from models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
    from models.trainer import build_distance, build_model

    config = RunConfig(**TINY_CONFIG)
    ckpt = {"format": CHECKPOINT_FORMAT, "config": {**config.model_dump(mode="json"), "pretrained_weights": "/etc/x"},
            "epoch": 1, "in_channels": 3, "image_size": 16, "model": build_model(config, 3, 16).state_dict(),
            "distance": build_distance(config).state_dict(), "history": []}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        shapes = upload_ready(client, make_zip(), "shapes.zip")
        r = client.post("/api/models/import", files={"file": ("model.pt", buf.getvalue())},
                        data={"dataset_id": shapes["id"]})
        assert r.status_code == 201, r.text
        assert r.json()["config"]["pretrained_weights"] is None
        stored_ckpt = load_checkpoint(settings.data_dir / "runs" / r.json()["id"] / "checkpoint.pt")
        assert stored_ckpt["config"]["pretrained_weights"] is None
        assert wait_for(client, r.json()["id"], ("done", "failed"))["status"] == "done"


# What would unpickle (run code from) user data: none of it may appear in the code that handles uploads.
UNSAFE = [r"pickle\.loads?\(", r"weights_only\s*=\s*False", r"allow_pickle\s*=\s*True", r"torch\.jit\.load",
          r"import (dill|joblib|cloudpickle)", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"shell\s*=\s*True",
          r"yaml\.load\("]


def test_no_code_path_unpickles_user_data() -> None:
    sources = [p for d in ("models", "server") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 20
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources for pattern in UNSAFE
             for m in re.finditer(pattern, p.read_text(encoding="utf-8"))]
    # The one sanctioned code load: a TorchScript import the user opted into (allow_torchscript=true), in a worker.
    assert found == ["models/run.py: torch.jit.load"]
    loads = [f"{p.relative_to(ROOT)}:{m.start()}" for p in sources
             for m in re.finditer(r"torch\.load\((?![^)]*weights_only=True)", p.read_text(encoding="utf-8"))]
    assert loads == []  # every torch.load says weights_only=True
