"""`dmlscope import embeddings FILE`: a vectors file becomes a finished run of origin `embeddings` in the store,
checked as the API checks it; a bad file is a one-line error (exit 2) that writes nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from server.cli import main
from server.settings import Settings
from server.store import Store


def _vectors(path: Path, classes: int = 6, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    vectors = rng.normal(size=(classes, 5))[labels] + 0.5 * rng.normal(size=(len(labels), 5))
    np.savez(path, vectors=vectors, labels=labels, split=np.where(labels < 3, "train", "test"))
    return path


def test_import_embeddings_records_a_finished_run(tmp_path: Path, capsys) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["import", "embeddings", str(_vectors(tmp_path / "e.npz")), "--distance", "cosine", *data]) == 0
    out = capsys.readouterr().out
    assert "MAP@R" in out
    store = Store.open(Settings(data_dir=tmp_path / "data", builtin_datasets=[]))
    try:
        [run] = store.list_runs()
        assert (run.origin, run.status, run.name) == ("embeddings", "done", "e.npz")
        assert run.summary["distance"] == "cosine" and run.summary["num_test"] == 12
        [dataset] = store.list_datasets()
        assert dataset.source == "embeddings" and dataset.info["has_images"] is False
    finally:
        store.close()


def test_a_bad_file_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, vectors=np.zeros((8, 3), np.float32), labels=np.arange(8) % 2)
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["import", "embeddings", str(bad), *data]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmlscope: error: labels:") and "\n" not in err
    assert main(["import", "embeddings", str(tmp_path / "missing.npz"), *data]) == 2
    assert main(["import", "embeddings", str(_vectors(tmp_path / "e.npz")), "--dataset", "0" * 12, *data]) == 2
    assert not any((tmp_path / "data" / "runs").iterdir())
    assert not any((tmp_path / "data" / "datasets").iterdir())
