"""The frontend's pure modules under `node --test` (the binary points decoding runs from
tests/api/test_points_decoding.py: it decodes bodies the server produced)."""
from __future__ import annotations

from tests.support.node import run_node_tests


def test_url_state() -> None:
    run_node_tests("url.test.mjs")
