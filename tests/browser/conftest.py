"""A real dmlscope server on loopback and Debian's chromium driven by Playwright (never a downloaded browser).

Every page collects console errors and uncaught page errors; the `page` fixture fails the test on any of them,
so a view that throws, a 404'd module or a CSP violation cannot pass unnoticed.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's data folder (a test may add to it from the command line, as a user would)."""
    return tmp_path_factory.mktemp("dmlscope-data")


@pytest.fixture(scope="session")
def server(server_data: Path) -> Iterator[str]:
    """Base URL of `uvicorn server.app:create_app` with a fresh data folder and the small built-in `digits`."""
    data = server_data
    port = _free_port()
    env = {**os.environ, "DMLSCOPE_DATA_DIR": str(data), "DMLSCOPE_BUILTIN_DATASETS": "digits",
           "DMLSCOPE_DEVICE": "cpu", "DMLSCOPE_TORCH_THREADS": "1"}
    log = (data / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "server.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; its log:\n{(data / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Debian's chromium is missing: run `make browser-deps` (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shots() -> Path:
    """Where screenshots go (gitignored): look at them after a run."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture
def expected_errors() -> list[str]:
    """Console messages a test provokes on purpose (e.g. chromium logging a 400 it asked for): substrings."""
    return []


@pytest.fixture
def page(browser, server: str, expected_errors: list[str]) -> Iterator[object]:
    """A 1440×900 page on the server; fails the test on any console error or page error it did not expect."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=server, accept_downloads=True)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console.{m.type}: {m.text} ({m.location.get('url')})")
          if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    unexpected = [p for p in problems if not any(e in p for e in expected_errors)]
    assert not unexpected, "the browser reported errors:\n" + "\n".join(unexpected)
