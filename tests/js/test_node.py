"""Every `node --test` file of the frontend's pure modules (tests/js/*.test.mjs), one pytest test each, so that
`make test` reports them; a new file runs without being listed here."""
from __future__ import annotations

import pytest

from tests.support.node import JS_TESTS, run_node_tests

# Decodes bodies a real server produced: run by tests/api/test_points_decoding.py, which writes them first.
NEEDS_SERVER_BODIES = {"points.test.mjs"}


@pytest.mark.parametrize("name", sorted(p.name for p in JS_TESTS.glob("*.test.mjs") if p.name not in NEEDS_SERVER_BODIES))
def test_node_file(name: str) -> None:
    run_node_tests(name)
