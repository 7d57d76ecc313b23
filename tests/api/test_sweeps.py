"""Sweeps over HTTP: the variants catalogue, validation before anything is recorded, a tiny real sweep on the
built-in `synthetic` set run to `done` by the real job manager (with its event stream), cancel, and a server
restart that leaves a sweep `interrupted` until it is resumed."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.store import _MIGRATIONS, Store
from server.sweeps_store import SweepStore
from tests.support.app import TINY_CONFIG, make_settings
from tests.support.polling import read_sse, wait_until

LONG_CONFIG = {**TINY_CONFIG, "epochs": 500, "steps_per_epoch": 20}


def _client(data_dir: Path, **overrides: Any) -> TestClient:
    return TestClient(create_app(make_settings(data_dir, builtin_datasets=["synthetic"], **overrides)))


def _synthetic(c: TestClient) -> str:
    return next(d["id"] for d in c.get("/api/datasets").json()["data"] if d["name"] == "synthetic")


def _variants(c: TestClient) -> list[str]:
    """The baseline and the first other variant the server offers: a two-variant sweep."""
    names = [v["name"] for v in c.get("/api/sweeps/variants").json()["variants"]]
    return ["baseline", next(n for n in names if n != "baseline")]


def _body(dataset_id: str, variants: list[str], config: dict[str, Any]) -> dict[str, Any]:
    return {"dataset_id": dataset_id, "variants": variants, "splits": 1, "seeds": 1, "select": False,
            "config": config}


def _wait_status(c: TestClient, sweep_id: str, statuses: tuple[str, ...], timeout: float = 300.0) -> dict[str, Any]:
    return wait_until(lambda: (s := c.get(f"/api/sweeps/{sweep_id}").json())["status"] in statuses and s,
                      f"sweep {sweep_id} to reach {statuses}", timeout)


def test_variants_describe_the_form(tmp_path: Path) -> None:
    from models.sweep import DEFAULT_VARIANTS, VARIANTS

    with _client(tmp_path / "data") as c:
        body = c.get("/api/sweeps/variants").json()
    assert [v["name"] for v in body["variants"]] == list(VARIANTS)
    assert all(v["description"] for v in body["variants"])
    assert [v["name"] for v in body["variants"] if v["default"]] == list(DEFAULT_VARIANTS)
    assert body["defaults"]["variants"] == list(DEFAULT_VARIANTS)
    assert {"splits", "seeds", "select", "min_steps"} <= set(body["defaults"])


def test_a_version_1_database_gains_the_sweep_tables_and_keeps_its_runs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    conn = sqlite3.connect(settings.database_path)
    conn.executescript(f"BEGIN; {_MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    conn.execute("INSERT INTO datasets VALUES ('0123456789ab', 'd', 'upload', NULL, '2025-01-01T00:00:00Z', '{}')")
    conn.execute("INSERT INTO runs (id, dataset_id, name, config, status, created_at) VALUES "
                 "('ba9876543210', '0123456789ab', 'r', '{}', 'done', '2025-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    store = Store.open(settings)
    try:
        assert [r.id for r in store.list_runs()] == ["ba9876543210"]
        sweeps = SweepStore(store)
        rec = sweeps.create("0123456789ab", "s", {"variants": ["baseline"]}, {"handed": [], "results": {}}, 2)
        sweeps.link(rec.id, "final/baseline/split0/seed0", "ba9876543210", {"phase": "final"})
        assert [r.run_id for r in sweeps.runs(rec.id)] == ["ba9876543210"]
        store.delete_run("ba9876543210")  # the link goes with the run; the sweep stays
        assert sweeps.runs(rec.id) == [] and sweeps.get(rec.id).status == "running"
    finally:
        store.close()


def test_invalid_requests_name_the_field_and_record_nothing(tmp_path: Path) -> None:
    with _client(tmp_path / "data") as c:
        ds = _synthetic(c)
        r = c.post("/api/sweeps", json=_body(ds, ["baseline", "nope"], TINY_CONFIG))
        detail = r.json()["detail"]
        assert r.status_code == 422 and detail.startswith("variants.1:") and "'baseline'" in detail
        r = c.post("/api/sweeps", json=_body(ds, ["flow"], TINY_CONFIG))
        assert r.status_code == 400 and "baseline" in r.json()["detail"]
        r = c.post("/api/sweeps", json=_body(ds, ["baseline"], {**TINY_CONFIG, "epochs": 0}))
        assert r.status_code == 422 and r.json()["detail"].startswith("config.epochs:")
        r = c.post("/api/sweeps", json={**_body(ds, ["baseline"], TINY_CONFIG), "splits": 0})
        assert r.status_code == 422 and r.json()["detail"].startswith("splits:")
        r = c.post("/api/sweeps", json=_body(ds, ["baseline"], {**TINY_CONFIG, "classes_per_batch": 7}))
        assert r.status_code == 400 and "classes_per_batch" in r.json()["detail"]  # synthetic trains on 4 classes
        r = c.post("/api/sweeps", json=_body("0123456789ab", ["baseline"], TINY_CONFIG))
        assert r.status_code == 404
        r = c.post("/api/sweeps", json={**_body(ds, ["baseline"], {**TINY_CONFIG, "pretrained_weights": "/etc/x"})})
        assert r.status_code == 422 and "pretrained_weights" in r.json()["detail"]
        assert c.get("/api/sweeps").json()["count"] == 0 and c.get("/api/runs").json()["count"] == 0
        assert c.get("/api/sweeps/0123456789ab").status_code == 404
        assert c.post("/api/sweeps/0123456789ab/cancel").status_code == 404


def test_starting_and_cancelling_follow_the_token_and_origin_rules(tmp_path: Path) -> None:
    with _client(tmp_path / "data", api_token="s3cret") as c:
        body = _body(_synthetic(c), ["baseline"], TINY_CONFIG)
        assert c.post("/api/sweeps", json=body).status_code == 401
        assert c.post("/api/sweeps/0123456789ab/cancel").status_code == 401
        foreign = {"Authorization": "Bearer s3cret", "Origin": "https://elsewhere.example"}
        r = c.post("/api/sweeps", json=body, headers=foreign)
        assert r.status_code == 403
        assert c.get("/api/sweeps").json()["count"] == 0  # reading needs no token


@pytest.mark.slow
def test_a_tiny_sweep_runs_to_done(tmp_path: Path) -> None:
    with _client(tmp_path / "data") as c:
        variants = _variants(c)
        r = c.post("/api/sweeps", json=_body(_synthetic(c), variants, TINY_CONFIG))
        assert r.status_code == 202, r.text
        sweep = r.json()
        assert sweep["status"] == "running" and sweep["total"] == 2 and sweep["finished"] == 0
        assert [run["status"] for run in sweep["runs"]] == ["queued"]  # one worker: one run of the sweep at a time
        with c.stream("GET", f"/api/sweeps/{sweep['id']}/events") as stream:
            events = list(read_sse(stream.iter_lines()))
        assert events[0][0] == "sweep" and events[-1][0] == "end" and events[-1][1]["status"] == "done"
        assert any(0 < data["finished"] < 2 for _, data in events)  # progress was streamed along the way

        done = c.get(f"/api/sweeps/{sweep['id']}").json()
        assert done["status"] == "done" and done["finished"] == done["total"] == 2 and done["finished_at"]
        assert sorted(run["variant"] for run in done["runs"]) == sorted(variants)
        assert all(run["status"] == "done" and run["recorded"] and run["phase"] == "final" for run in done["runs"])
        assert all(run["under_trained"] is True for run in done["runs"])  # 2 steps < min_steps
        listed = {run["id"] for run in c.get("/api/runs").json()["data"]}
        assert {run["run_id"] for run in done["runs"]} == listed  # ordinary runs, in the normal list
        report = done["report"]
        assert report["complete"] is True
        rows = report["variants"]
        assert {row["variant"] for row in rows} == set(variants)
        assert {"mean", "ci_low", "ci_high", "p_value", "significant", "under_trained"} <= set(rows[0])
        assert c.get("/api/sweeps", params={"status": "done"}).json()["count"] == 1
        assert c.post(f"/api/sweeps/{sweep['id']}/cancel").status_code == 409


@pytest.mark.slow
def test_cancel_stops_the_runs_of_a_sweep(tmp_path: Path) -> None:
    with _client(tmp_path / "data") as c:
        sweep = c.post("/api/sweeps", json=_body(_synthetic(c), _variants(c), LONG_CONFIG)).json()
        wait_until(lambda: c.get(f"/api/sweeps/{sweep['id']}").json()["runs"][0]["status"] == "running",
                   "the sweep's first run to start")
        cancelled = c.post(f"/api/sweeps/{sweep['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
        run_id = cancelled["runs"][0]["run_id"]
        wait_until(lambda: c.get(f"/api/runs/{run_id}").json()["status"] == "cancelled", "its run to stop")
        after = c.get(f"/api/sweeps/{sweep['id']}").json()
        assert after["status"] == "cancelled" and len(after["runs"]) == 1 and after["finished"] == 0
        assert c.post(f"/api/sweeps/{sweep['id']}/cancel").status_code == 409


@pytest.mark.slow
def test_a_restart_interrupts_a_sweep_and_resume_finishes_it(tmp_path: Path) -> None:
    """With selection on: the baseline's two grid points run on the validation split first, the flow variant
    (no grid) at once, the baseline's final run only after its selection, with the chosen point."""
    data = tmp_path / "data"
    with _client(data) as c:
        body = {**_body(_synthetic(c), _variants(c), TINY_CONFIG), "select": True}
        sweep = c.post("/api/sweeps", json=body).json()
        assert sweep["total"] == 4
        planned = {p["key"]: p["status"] for p in sweep["report"]["planned"]}
        assert planned["final/baseline/split0/seed0"] == "waiting"  # on its selection runs
        wait_until(lambda: c.get(f"/api/sweeps/{sweep['id']}").json()["runs"][0]["status"] == "running",
                   "the sweep's first run to start")
    # The server stopped while the sweep's first run was training (the others were not launched yet).
    with _client(data) as c:
        stopped = c.get(f"/api/sweeps/{sweep['id']}").json()
        assert stopped["status"] == "interrupted" and "resume" in stopped["error"] and stopped["finished"] == 0
        assert [r["status"] for r in stopped["runs"]] == ["interrupted"]
        resumed = c.post(f"/api/sweeps/{sweep['id']}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "running"
        done = _wait_status(c, sweep["id"], ("done", "failed"))
        assert done["status"] == "done" and done["finished"] == 4, done
        assert done["runs"][0]["run_id"] == stopped["runs"][0]["run_id"]  # the same run, resumed
        phases = [(r["phase"], r["variant"]) for r in done["runs"]]
        assert phases.index(("final", "baseline")) > max(i for i, p in enumerate(phases) if p[0] == "select")
        selection = done["report"]["selection"]
        assert len(selection) == 2 and sum(s["chosen"] for s in selection) == 1
        chosen = next(s["grid_index"] for s in selection if s["chosen"])
        assert next(r for r in done["runs"] if r["key"] == "final/baseline/split0/seed0")["grid_index"] == chosen
        assert c.post(f"/api/sweeps/{sweep['id']}/resume").status_code == 409
