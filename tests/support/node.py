"""Running the frontend's `node --test` files (tests/js/*.test.mjs) from pytest, so one command reports every test."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.support.server import ROOT

JS_TESTS = ROOT / "tests" / "js"


def run_node_tests(*files: str, env: dict[str, str] | None = None) -> str:
    """Run `node --test` on `files` (names under tests/js); fail with node's report unless every test passed and
    none was skipped (a skipped test proves nothing). Returns the report."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is missing: run `make browser-deps` (apt-get install nodejs)")
    proc = subprocess.run([node, "--test", *(str(JS_TESTS / f) for f in files)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    report = proc.stdout + proc.stderr
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped|cancelled|todo) (\d+)$", report, re.M)}
    assert proc.returncode == 0 and counts.get("pass", 0) > 0, report
    assert counts.get("fail") == counts.get("skipped") == counts.get("cancelled") == 0, report
    return report
