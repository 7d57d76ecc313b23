"""A real dmlscope server on loopback and Debian's chromium driven by Playwright (never a downloaded browser).

Every page collects console errors and uncaught page errors; the `page` fixture fails the test on any of them,
so a view that throws, a 404'd module or a CSP violation cannot pass unnoticed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.browser import CLASSES, PER_CLASS
from tests.support.server import ROOT, Server
from tests.support.zips import digits_zip as make_digits_zip

SHOTS = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def server_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's data folder (a test may add to it from the command line, as a user would)."""
    return tmp_path_factory.mktemp("dmlscope-data")


@pytest.fixture(scope="session")
def server(server_data: Path) -> Iterator[str]:
    """Base URL of `dmlscope serve` with a fresh data folder and the small built-in `digits`."""
    live = Server(server_data, builtin_datasets="digits", warm_umap="true")
    try:
        yield live.url
    finally:
        live.stop()


@pytest.fixture(scope="session")
def digits_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip of CLASSES classes × PER_CLASS images of the built-in digits, plus one file to reject."""
    return make_digits_zip(tmp_path_factory.mktemp("zip"), CLASSES, PER_CLASS)


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
