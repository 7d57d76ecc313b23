"""The store on its own (what the CLI uses): schema migration, WAL, id prefixes, statuses, deletion rules."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from models.config import RunConfig
from models.errors import Conflict, InvalidInput, NotFound
from server.imports import ensure_builtin, import_path
from server.store import Store, atomic_write_bytes
from tests.support.app import make_settings


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(make_settings(tmp_path / "data"))
    yield s
    s.close()


def test_open_creates_layout_migrates_once_and_uses_wal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    Store.open(settings).close()
    Store.open(settings).close()  # a second open finds the schema current and changes nothing
    assert {p.name for p in settings.data_dir.iterdir()} >= {"datasets", "runs", "tmp", "dmlscope.sqlite3"}
    conn = sqlite3.connect(settings.database_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4  # v2: sweeps, v3: run processes, v4: dataset import states
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this dmlscope"):
        Store.open(settings)


def test_run_lifecycle_prefix_lookup_and_interrupted(store: Store) -> None:
    ds = ensure_builtin(store, "synthetic")
    assert ensure_builtin(store, "synthetic") == ds
    cfg = RunConfig(epochs=1)
    run = store.create_run(ds.id, cfg)
    assert run.status == "queued" and run.started_at is None and run.name.startswith("triplet + euclidean")
    assert store.run_dir(run.id).is_dir() and run.run_config() == cfg
    child = store.create_run(ds.id, cfg.with_patch({"epochs": 2}), name="longer", parent_id=run.id,
                             status="running")
    assert child.started_at is not None and child.parent_id == run.id
    assert store.get_run(child.id[:6]).id == child.id
    with pytest.raises(NotFound):
        store.get_run("../../x")
    assert store.mark_interrupted() == []  # only with the folder to itself: a CLI run may be training
    with store.folder.alone() as alone:
        assert alone and store.mark_interrupted() == [child.id]
    interrupted = store.get_run(child.id)
    assert interrupted.status == "interrupted" and "resume" in interrupted.error and interrupted.finished_at
    store.set_progress(run.id, {"stage": "train", "fraction": 0.5}, [(1, {"stage": "train", "fraction": 0.5})])
    assert store.progress_logs([]) == [] and store.progress_logs([run.id]) == [
        (run.id, "queued", [(1, {"stage": "train", "fraction": 0.5})])]  # running runs, and those asked for
    store.set_summary(run.id, {"test": {"map_at_r": 0.3}})
    done = store.set_status(run.id, "done")
    assert done.progress["fraction"] == 0.5 and done.summary["test"]["map_at_r"] == 0.3 and done.finished_at
    assert [r.id for r in store.list_runs(dataset_id=ds.id, status="done")] == [run.id]
    with pytest.raises(InvalidInput, match="not one of"):
        store.set_status(run.id, "exploded")

    store.delete_run(run.id)  # the child stays, now without a parent
    assert store.get_run(child.id).parent_id is None and not store.run_dir(run.id).exists()


def test_ambiguous_prefix_asks_for_more_characters(store: Store) -> None:
    ds = ensure_builtin(store, "synthetic")
    runs = [store.create_run(ds.id, RunConfig(epochs=1)) for _ in range(40)]
    first = {r.id[0] for r in runs}
    shared = next(c for c in first if sum(r.id[0] == c for r in runs) > 1)  # 40 ids over 16 letters: one repeats
    with pytest.raises(InvalidInput, match="ambiguous"):
        store.get_run(shared)


def test_dataset_delete_rules(store: Store) -> None:
    ds = ensure_builtin(store, "synthetic")
    run = store.create_run(ds.id, RunConfig(epochs=1))
    with pytest.raises(Conflict, match="cancel them first"):
        store.delete_dataset(ds.id, force=True)
    store.set_status(run.id, "cancelled")
    with pytest.raises(Conflict, match="force=true"):
        store.delete_dataset(ds.id)
    store.delete_dataset(ds.id, force=True)
    with pytest.raises(NotFound):
        store.get_run(run.id)
    assert list((store.root / "datasets").iterdir()) == []


def test_import_path_and_atomic_write(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="neither a folder"):
        import_path(store, tmp_path / "missing")
    target = tmp_path / "out" / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["a.bin"]
