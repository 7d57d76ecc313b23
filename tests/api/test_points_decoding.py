"""The UI's decoder of the binary /points body (frontend/js/api.js, under `node --test`) reads exactly what the
JSON body of the same request says: bodies of a real run, with and without a flow, NaN columns included."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.app import Trained
from tests.support.node import run_node_tests

pytestmark = pytest.mark.slow  # the `trained` runs

CASES = {"a-test-pca": ("a", {"split": "test", "projection": "pca"}),
         "b-all-pca-3d": ("b", {"split": "all", "projection": "pca", "dim": 3})}


def test_binary_points_decode_to_the_json_body(trained: Trained, tmp_path: Path) -> None:
    for name, (which, params) in CASES.items():
        url = f"/api/runs/{getattr(trained, which)['id']}/points"
        for fmt, suffix in (("binary", "bin"), ("json", "json")):
            r = trained.client.get(url, params={**params, "format": fmt})
            assert r.status_code == 200, r.text
            (tmp_path / f"{name}.{suffix}").write_bytes(r.content)
    report = run_node_tests("points.test.mjs", env={"DMLSCOPE_POINTS_CASES": str(tmp_path)})
    assert f"# pass {len(CASES) + 1}\n" in report, report
