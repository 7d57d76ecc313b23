"""Domain errors carry no HTTP: one mapping turns each into its status and code, OpenAPI declares the error body,
and the CLI (which maps the same errors to exit codes) loads no web framework."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models.data import DatasetError
from models.errors import Conflict, DmlscopeError, InvalidInput, NotFound, QueueFull
from server.errors import install_error_handlers
from server.folder_lock import FolderInUse

CASES = [(DmlscopeError, 400, "bad_request"), (InvalidInput, 400, "bad_request"), (NotFound, 404, "not_found"),
         (Conflict, 409, "conflict"), (QueueFull, 503, "queue_full"),
         # subclasses answer with their nearest mapped base
         (DatasetError, 400, "bad_request"), (FolderInUse, 409, "conflict")]


@pytest.fixture(scope="module")
def raising() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    for exc_type, _, _ in CASES:
        def route(exc_type: type[DmlscopeError] = exc_type) -> None:
            raise exc_type(f"the {exc_type.__name__} message")
        app.get(f"/{exc_type.__name__}")(route)
    return TestClient(app)


@pytest.mark.parametrize(("exc_type", "status", "code"), CASES, ids=[c[0].__name__ for c in CASES])
def test_each_domain_error_answers_its_status(raising: TestClient, exc_type: type, status: int, code: str) -> None:
    r = raising.get(f"/{exc_type.__name__}")
    assert (r.status_code, r.json()) == (status, {"error": code, "detail": f"the {exc_type.__name__} message"})


def test_domain_errors_know_nothing_of_http() -> None:
    for exc_type, _, _ in CASES:
        assert not {"status", "code", "status_code"} & set(vars(exc_type)), exc_type


def test_openapi_declares_error_public_on_every_operation(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert set(doc["components"]["schemas"]["ErrorPublic"]["required"]) == {"error", "detail"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # 422 answers ErrorPublic, not FastAPI's shape
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status in ("4XX", "5XX"):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorPublic"}, (method, path, status)


def test_real_route_maps_a_store_error(client: TestClient) -> None:
    r = client.get("/api/datasets/0123456789ab")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


@pytest.mark.slow
def test_cli_and_domain_errors_import_no_web_framework() -> None:
    code = ("import sys, server.cli, models.errors, models.data.errors, server.store\n"
            "loaded = sorted(m for m in ('fastapi', 'starlette') if m in sys.modules)\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ}, timeout=120)
