"""A sweep's runs pass the check every run gets (server/lifecycle.check_fits) when they are launched, not only
the first ones when the sweep is created: a planned run the dataset cannot train fails the sweep with the reason
and records no run. The job manager and the sweep supervisor are not started (no worker process, no thread): a
launch only records and announces the run."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from models.sweep import prepare_spec
from server.imports import ensure_builtin
from server.jobs import JobManager
from server.store import Store
from server.sweeps import SweepManager
from server.sweeps_schemas import SweepCreate
from tests.support.app import TINY_CONFIG, make_settings


def _planned(tmp_path: Path):
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings)
    dataset = ensure_builtin(store, "synthetic")
    body = SweepCreate(dataset_id=dataset.id, variants=["baseline"], splits=1, seeds=1, select=False,
                       config=TINY_CONFIG)
    sweeps = SweepManager(store, JobManager(store, settings), settings)
    sweep, first = sweeps.plan(prepare_spec(store.image_set(dataset.id), body.config, **body.spec_fields()))
    return store, dataset, sweeps, sweep, first


def test_a_planned_run_that_fits_is_recorded_and_queued(tmp_path: Path) -> None:
    store, dataset, sweeps, sweep, first = _planned(tmp_path)
    rec = sweeps.create(dataset.id, "fits", sweep.spec, sweep, first)
    assert rec.status == "running" and rec.error is None
    (run,) = store.list_runs()
    assert run.status == "queued" and run.name == f"{first[0].name} [{rec.id}]"
    sweeps.cancel(rec.id)


def test_a_planned_run_the_dataset_cannot_train_fails_the_sweep_and_records_nothing(tmp_path: Path) -> None:
    store, dataset, sweeps, sweep, first = _planned(tmp_path)
    # as a later phase's config could: more classes per batch than the split's 4 training classes
    unfit = [dataclasses.replace(p, config=p.config.with_patch({"classes_per_batch": 7})) for p in first]
    rec = sweeps.create(dataset.id, "unfit", sweep.spec, sweep, unfit)
    assert rec.status == "failed" and rec.error.startswith(f"dataset {dataset.id} cannot be trained with this config")
    assert "classes_per_batch" in rec.error and store.list_runs() == []
