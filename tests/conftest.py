"""Shared test settings: small, deterministic, CPU-only, and no network; and the guard of the fast loop.

`pytest -m "not slow"` is the inner loop, so a test that starts a worker process, torchrun or a Python
subprocess must be marked `slow`: such a test fails here if it is not (the start is recorded, not prevented,
so the test itself runs as it would). Chromium (`browser`) and UMAP (`umap`) tests must be `slow` too.
"""
import multiprocessing.process
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import models  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import torch

os.environ.setdefault("DMLSCOPE_DEVICE", "cpu")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

_current: list[pytest.Item] = []  # the test whose setup, call or teardown runs now
_started: dict[str, list[str]] = {}  # node id → the processes a test not marked slow started


def _record(what: str) -> None:
    if _current and _current[0].get_closest_marker("slow") is None:
        _started.setdefault(_current[0].nodeid, []).append(what)


def _python_or_torchrun(args: Any) -> bool:
    argv0 = str(args[0] if isinstance(args, (list, tuple)) else str(args).split()[0])
    return argv0 == sys.executable or Path(argv0).name.startswith(("python", "torchrun", "dmlscope"))


_process_start = multiprocessing.process.BaseProcess.start
_popen_init = subprocess.Popen.__init__


def _start(self: multiprocessing.process.BaseProcess) -> None:
    _record(f"the process {self.name}")
    _process_start(self)


def _init(self: subprocess.Popen, args: Any, *rest: Any, **kw: Any) -> None:
    if _python_or_torchrun(args):
        _record(f"the subprocess {args!r:.200}")
    _popen_init(self, args, *rest, **kw)


multiprocessing.process.BaseProcess.start = _start  # type: ignore[method-assign]
subprocess.Popen.__init__ = _init  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Chromium and UMAP tests are slow whether or not they say so."""
    for item in items:
        if (item.get_closest_marker("browser") or item.get_closest_marker("umap")) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _current.append(item)
    yield
    _current.remove(item)


@pytest.fixture(autouse=True)
def _fast_loop_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    started = _started.pop(request.node.nodeid, None)
    if started:
        pytest.fail("this test starts processes but is not marked slow (`@pytest.mark.slow`), so it would slow "
                    "down `pytest -m \"not slow\"`:\n  " + "\n  ".join(started), pytrace=False)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
