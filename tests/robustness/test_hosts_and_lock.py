"""DNS rebinding (the Host allow-list), blank tokens, the data-folder lock, and request bodies that stall or
are cut off, against real server processes.

A rebinding page reaches 127.0.0.1 under its own name with a matching Origin, so only the Host tells it apart;
a second server (or a command-line run) on the same folder must not clean up under the one already there.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from models.config import RunConfig
from server.folder_lock import FolderInUse
from server.settings import Settings, SettingsError
from server.store import Store
from tests.support.app import TINY_CONFIG, make_settings, upload_ready
from tests.support.polling import wait_until
from tests.support.server import Server, free_port, server_env
from tests.support.zips import good_zip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A real loopback server without a token (the default), holding one dataset; a body may pause 3 s."""
    server = Server(tmp_path_factory.mktemp("live") / "data", body_timeout_s="3")
    try:
        with httpx.Client(base_url=server.url) as http:
            yield server, upload_ready(http, good_zip(), "a.zip")
    finally:
        server.stop()


def _rebound(server: Server) -> dict[str, str]:
    # What a page on rebind.example sends once that name resolves to 127.0.0.1: its own Host and Origin.
    return {"Host": f"rebind.example:{server.port}", "Origin": f"http://rebind.example:{server.port}"}


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "host_not_allowed" and "rebind.example" in body["detail"], body
    assert "DMLSCOPE_ALLOWED_HOSTS" in body["detail"]
    assert r.headers["x-content-type-options"] == "nosniff"  # the refusal still carries the security headers


@pytest.mark.slow
def test_a_rebinding_page_can_neither_change_nor_read_data(live: tuple[Server, dict[str, Any]]) -> None:
    server, ds = live
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _refused(http.delete(f"/api/datasets/{ds['id']}", headers=_rebound(server)))  # the curl
        _refused(http.post("/api/datasets", files={"file": ("b.zip", good_zip(), "application/zip")},
                           headers=_rebound(server)))
        _refused(http.post("/api/runs", json={"dataset_id": ds["id"], "config": TINY_CONFIG},
                           headers=_rebound(server)))
        for path in ("/api/datasets", f"/api/datasets/{ds['id']}/images/0", f"/api/datasets/{ds['id']}/images/0/thumb",
                     "/api/runs/0123456789ab/export", "/"):
            _refused(http.get(path, headers={"Host": f"rebind.example:{server.port}"}))
        assert [d["id"] for d in http.get("/api/datasets").json()["data"]] == [ds["id"]]  # nothing deleted or added
        assert http.get("/api/runs").json()["count"] == 0
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}", "localhost"):
            r = http.get(f"/api/datasets/{ds['id']}/images/0", headers={"Host": host})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", (host, r.text)


def test_allowed_hosts_lets_a_real_host_name_in(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", allowed_hosts="lab.example.org, *.corp.example")
    with TestClient(create_app(settings)) as client:
        for host in ("lab.example.org", "LAB.example.org:8443", "gpu1.corp.example:80"):
            assert client.get("/api/datasets", headers={"Host": host}).status_code == 200, host
        for host in ("example.org", "corp.example", "lab.example.org.evil.example", "evilcorp.example", "testserver", ""):
            r = client.get("/api/datasets", headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"] == "host_not_allowed", host
    bound = Settings(host="10.1.2.3", api_token="s3cret", allowed_hosts="")
    assert bound.allowed_host_names() == {"localhost", "127.0.0.1", "::1", "10.1.2.3"}
    assert "0.0.0.0" not in Settings(host="0.0.0.0", api_token="s3cret").allowed_host_names()
    with pytest.raises(ValueError, match="no scheme, no port"):
        Settings(allowed_hosts="lab.example.org:8000")


@pytest.mark.slow
@pytest.mark.parametrize("token", ["", "   ", "\t"])
def test_a_blank_token_is_no_token(token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMLSCOPE_API_TOKEN", token)
    assert Settings().api_token is None
    with pytest.raises(SettingsError, match="non-blank"):
        Settings(host="0.0.0.0").check_serving()
    data_dir = tmp_path / "data"
    out = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                         env=server_env(data_dir, 1, api_token=token), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "API_TOKEN" in out.stderr, (out.returncode, out.stderr[-2000:])
    assert not data_dir.exists()  # refused before anything was created


def test_an_empty_bearer_is_never_accepted(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "data", api_token="s3cret"))) as client:
        for header in ("Bearer ", "Bearer", "Bearer  "):
            r = client.delete("/api/datasets/0123456789ab", headers={"Authorization": header})
            assert r.status_code == 401, header


def _serve(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())],
                          env=server_env(data_dir, 1), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_second_server_on_the_same_folder_refuses_and_touches_nothing(
        live: tuple[Server, dict[str, Any]]) -> None:
    server, ds = live
    store = Store.open(Settings(data_dir=server.data_dir))  # what a live server has in flight: a run, an upload
    run = store.create_run(ds["id"], RunConfig(**TINY_CONFIG), status="running")
    in_flight = server.data_dir / "tmp" / "0123456789ab.zip"
    in_flight.write_bytes(b"half an upload")
    try:
        out = _serve(server.data_dir)
        assert out.returncode != 0, out.stderr[-2000:]
        assert str(server.data_dir.resolve()) in out.stderr and f"pid {server.proc.pid}" in out.stderr, out.stderr
        assert in_flight.read_bytes() == b"half an upload"
        assert httpx.get(f"{server.url}/api/runs/{run.id}").json()["status"] == "running"
        assert httpx.get(f"{server.url}/api/datasets/{ds['id']}").status_code == 200  # the first one still serves
    finally:
        in_flight.unlink(missing_ok=True)
        store.set_status(run.id, "cancelled")
        store.close()


# A command-line writer, as `dmlscope train` is one: it opens the store, records a `running` run and has an
# upload half-written in tmp/, then waits for its stdin to close.
_CLI_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from models.config import RunConfig
    from server.imports import ensure_builtin
    from server.settings import Settings
    from server.store import Store
    store = Store.open(Settings(data_dir=Path(sys.argv[1])))
    dataset = ensure_builtin(store, "synthetic")
    run = store.create_run(dataset.id, RunConfig(), status="running")
    (store.root / "tmp" / "0123456789ab.zip").write_bytes(b"being imported")
    print(run.id, flush=True)
    sys.stdin.read()
""")


@pytest.mark.slow
def test_a_server_starting_beside_a_command_line_run_leaves_its_work_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    writer = subprocess.Popen([sys.executable, "-c", _CLI_WRITER, str(data_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        run_id = writer.stdout.readline().strip()
        assert run_id, "the writer did not start"
        with TestClient(create_app(make_settings(data_dir))) as client:
            assert client.get(f"/api/runs/{run_id}").json()["status"] == "running"
            assert (data_dir / "tmp" / "0123456789ab.zip").exists()
        assert any("cleanup" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    with TestClient(create_app(make_settings(data_dir))) as client:  # the writer is gone (killed, say): clean up
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "interrupted"
        assert not (data_dir / "tmp" / "0123456789ab.zip").exists()


def test_two_apps_on_one_folder_in_one_process_conflict_too(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)):
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
            with TestClient(create_app(settings)):
                pass
    with TestClient(create_app(settings)) as client:  # released with the first app's lifespan
        assert client.get("/api/health").status_code == 200


def _partial_upload(server: Server, path: str) -> socket.socket:
    """A socket that has sent the headers and the start of a 100 kB multipart upload to `path`, then nothing."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n\r\n")
    part = '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\nPK\x03\x04'
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    sock.sendall(head.encode() + part.encode() + good_zip()[:500])
    return sock


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/datasets", "/api/models/import"])
def test_a_stalled_request_body_times_out(live: tuple[Server, dict[str, Any]], path: str) -> None:
    server, _ = live
    with _partial_upload(server, path) as sock:
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    status, _, body = answer.partition(b"\r\n")[0], None, answer.partition(b"\r\n\r\n")[2]
    assert status.startswith(b"HTTP/1.1 408"), answer
    assert b'"error":"request_timeout"' in body and b"DMLSCOPE_BODY_TIMEOUT_S" in body, body
    assert list((server.data_dir / "tmp").iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/datasets", "/api/models/import"])
def test_a_client_that_hangs_up_mid_upload_is_not_an_error(live: tuple[Server, dict[str, Any]], path: str) -> None:
    server, _ = live
    _partial_upload(server, path).close()
    line = f"the client disconnected before sending all of POST {path}"
    wait_until(lambda: line in server.output(), f"the server to log {line!r}")
    assert "unhandled error" not in server.output() and "Traceback" not in server.output(), server.output()
    assert httpx.get(f"{server.url}/api/health").status_code == 200


def test_a_start_up_that_fails_releases_the_folder(tmp_path: Path) -> None:
    import sqlite3

    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 999")
    data_dir = tmp_path / "data"
    with pytest.raises(RuntimeError, match="newer than this dmlscope"):
        with TestClient(create_app(make_settings(data_dir, database_url=f"sqlite:///{newer}"))):
            pass
    with TestClient(create_app(make_settings(data_dir))) as client:  # neither lock outlived the failed start
        assert client.get("/api/health").status_code == 200
