"""The explorer service (server/explorer.py): caches per app, the comparison shared with the CLI, maps aligned on
the server, and the one list of headline metrics served to the browser."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.headline import METRICS
from models.projection import MapParams
from models.runfolder import RunFolder
from server.app import create_app
from server.cli import main
from server.explorer import Explorer
from tests.support.app import Trained, make_settings

pytestmark = pytest.mark.slow  # every test explores the session-wide `trained` runs (spawned workers)


def test_each_app_has_its_own_explorer_and_clear_empties_it(trained: Trained, tmp_path: Path) -> None:
    c, a = trained.client, trained.a
    explorer = c.app.state.explorer
    assert isinstance(explorer, Explorer)
    assert c.get(f"/api/runs/{a['id']}/stats").status_code == 200
    assert len(explorer.views) > 0 and len(explorer.bodies) > 0
    with TestClient(create_app(make_settings(tmp_path / "other"))) as other:
        assert other.app.state.explorer is not explorer
        assert len(other.app.state.explorer.views) == 0 and len(other.app.state.explorer.bodies) == 0
        assert other.get(f"/api/runs/{a['id']}/stats").status_code == 404  # nothing of the first app leaks in
    explorer.clear()
    assert len(explorer.views) == len(explorer.bodies) == len(explorer.indexes) == 0
    assert c.get(f"/api/runs/{a['id']}/stats").status_code == 200  # refilled from the run folder


def _cells(out: str, label: str) -> list[str]:
    row = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")][1:]


def test_cli_compare_prints_the_numbers_the_api_answers(trained: Trained, capsys: pytest.CaptureFixture) -> None:
    a, b = trained.a["id"], trained.b["id"]
    api = trained.client.get("/api/compare", params={"a": a, "b": b, "limit": 0}).json()
    assert main(["compare", a, b, "--data-dir", str(trained.data_dir)]) == 0
    out = capsys.readouterr().out
    for part, key, label in (("metrics", "map_at_r", "MAP@R"), ("metrics", "recall_at_1", "Recall@1"),
                             ("geometry", "margin", "margin δ2 − δ1")):
        expected = [api[part][s][key][f] for s in ("train", "test") for f in ("a", "b", "diff")]
        assert [float(v) for v in _cells(out, label)] == pytest.approx(expected, abs=6e-5), (key, out)
    for row in api["classes"]:
        cells = _cells(out, row["class"])
        assert float(cells[0]) == pytest.approx(row["a"]["radius_mean"], abs=6e-5)
        assert float(cells[1]) == pytest.approx(row["b"]["radius_mean"], abs=6e-5)
    geometry = api["geometry"]["test"]["radius_mean"]
    assert geometry["a"] == pytest.approx(trained.a["summary"]["test"]["radius_mean"])


def test_the_headline_metrics_are_served_from_the_one_list(trained: Trained) -> None:
    body = trained.client.get("/api/metrics").json()
    assert [m["key"] for m in body["metrics"]] == [m.key for m in METRICS]
    by_key = {m["key"]: m for m in body["metrics"]}
    assert by_key["map_at_r"]["label"] == "MAP@R" and by_key["map_at_r"]["higher_is_better"] is True
    assert by_key["pi_ratio"]["kind"] == "geometry" and by_key["pi_ratio"]["description"]
    summary_keys = set(trained.a["summary"]["test"]) - {"common"}
    named = {k for k in summary_keys if k in by_key}
    assert {"recall_at_1", "map_at_r", "nmi", "radius_mean", "margin", "pi_ratio"} <= named
    js = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[2] / "frontend" / "js").rglob("*.js"))
    assert not re.search(r'"Recall@1"|"MAP@R"|"R-Precision"', js)  # no copy of a label in the browser's code


def test_a_map_is_aligned_on_the_server_onto_another_runs_map(trained: Trained) -> None:
    """Run b's map is a's under a known reflection, rotation, scale and shift: aligned onto a it is a's again."""
    c, a, b = trained.client, trained.a, trained.b
    params = MapParams(n_neighbors=7)  # files of their own: no other test reads or computes these maps
    folder_a, folder_b = (RunFolder(trained.data_dir / "runs" / r["id"]) for r in (a, b))
    ids_a, ids_b = folder_a.split["test"], folder_b.split["test"]
    assert np.array_equal(np.sort(ids_a), np.sort(ids_b))
    xy_a = np.random.default_rng(0).standard_normal((len(ids_a), 2)).astype(np.float32)
    t = 0.7
    rotate_reflect = np.array([[np.cos(t), np.sin(t)], [np.sin(t), -np.cos(t)]])
    order = np.argsort(ids_a)[np.argsort(np.argsort(ids_b))]  # b's rows hold the same images as a's rows `order`
    xy_b = (xy_a[order] @ rotate_reflect * 3.0 + np.array([5.0, -2.0])).astype(np.float32)
    folder_a.write_projection("umap", "test", xy_a, params)
    folder_b.write_projection("umap", "test", xy_b, params)
    query = {"projection": "umap", "n_neighbors": 7}
    plain = c.get(f"/api/runs/{b['id']}/points", params=query).json()
    assert plain["aligned_to"] is None and plain["columns"]["x"] == pytest.approx(xy_b[:, 0].tolist(), abs=1e-6)
    aligned = c.get(f"/api/runs/{b['id']}/points", params={**query, "align_to": a["id"]}).json()
    assert aligned["aligned_to"] == a["id"]
    np.testing.assert_allclose(aligned["columns"]["x"], xy_a[order, 0], atol=1e-4)
    np.testing.assert_allclose(aligned["columns"]["y"], xy_a[order, 1], atol=1e-4)
    assert aligned["columns"]["image_id"] == plain["columns"]["image_id"]
    r = c.get(f"/api/runs/{b['id']}/points", params={**query, "align_to": "0" * 12})
    assert r.status_code == 404
