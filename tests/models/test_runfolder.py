"""models.runfolder: every file a run folder holds is written and read back through one module, atomically."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.config import RunConfig
from models.projection import MapParams
from models.runfolder import RunFolder, load_run, projection_file, split_ids


def _filled(path: Path) -> tuple[RunFolder, dict]:
    """A folder with one of everything, and the values written."""
    rng = np.random.default_rng(0)
    values = {
        "config": RunConfig(embedding_dim=8, seed=3),
        "split": {"train": np.array([4, 1, 7]), "test": np.array([0, 2])},
        "metrics": {"test": {"recall_at_1": 0.5}}, "stats": {"test": {"per_class": [{"name": "a", "radius_mean": 1.0}]}},
        "summary": {"origin": "train", "test": {"recall_at_1": 0.5}}, "history": [{"epoch": 1, "loss": 0.3}],
        "embeddings": rng.standard_normal((2, 8)).astype(np.float32), "logdet": np.array([0.5, -1.0], np.float32),
        "pca": rng.standard_normal((5, 2)).astype(np.float32), "umap3d": rng.standard_normal((2, 3)).astype(np.float32),
        "correct": np.array([1, 0], np.int32),
    }
    folder = RunFolder(path)
    folder.write_start(values["config"], values["split"])
    folder.write_metrics(values["metrics"])
    folder.write_stats(values["stats"])
    folder.write_summary(values["summary"])
    folder.write_history(values["history"])
    folder.write_array("embeddings", "test", values["embeddings"])
    folder.write_array("logdet", "test", values["logdet"])
    folder.write_projection("pca", "all", values["pca"])
    folder.write_projection("umap", "test", values["umap3d"], MapParams(dim=3))
    folder.write_correct_at_1("test", values["correct"])
    return folder, values


def test_what_is_written_reads_back_from_a_fresh_reader(tmp_path: Path) -> None:
    _, v = _filled(tmp_path / "run")
    run = load_run(tmp_path / "run")  # a new reader: nothing comes from the writer's memory
    assert run.config == v["config"]
    assert {s: a.tolist() for s, a in run.split.items()} == {s: a.tolist() for s, a in v["split"].items()}
    assert (run.metrics, run.stats, run.summary, run.history) == (v["metrics"], v["stats"], v["summary"], v["history"])
    np.testing.assert_array_equal(run.embeddings("test"), v["embeddings"])
    np.testing.assert_array_equal(run.logdet("test"), v["logdet"])
    np.testing.assert_array_equal(run.projection("pca", "all"), v["pca"])
    np.testing.assert_array_equal(run.projection("umap", "test", MapParams(dim=3)), v["umap3d"])
    np.testing.assert_array_equal(run.correct_at_1("test"), v["correct"])
    assert run.class_compactness("test") == {"a": {"name": "a", "radius_mean": 1.0}}
    # What was never written is None (a run without flow has no logdet), not an error.
    assert run.embeddings("train") is None and run.lipschitz("test") is None and run.projection("umap", "test") is None
    np.testing.assert_array_equal(split_ids(run.split, "all"), [4, 1, 7, 0, 2])


def test_the_file_names_are_the_documented_layout_and_no_temp_file_is_left(tmp_path: Path) -> None:
    _filled(tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == sorted(["config.json", "split.json", "metrics.json", "stats.json", "summary.json", "history.json",
                            "embeddings_test.npy", "logdet_test.npy", "projection_pca_all.npy",
                            projection_file("umap", "test", MapParams(dim=3)), "correct_at_1_test.npy"])
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == {"train": [4, 1, 7], "test": [0, 2]}


def test_names_outside_the_layout_are_refused(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(ValueError, match="unknown run-folder array 'weights'"):
        folder.write_array("weights", "test", np.zeros(2))
    with pytest.raises(ValueError, match="unknown split 'val'"):
        folder.array("embeddings", "val")
    with pytest.raises(ValueError, match="unknown split 'everything'"):
        folder.write_projection("pca", "everything", np.zeros((2, 2)))
    upload = tmp_path / "upload.tmp"
    upload.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a model file"):
        folder.adopt(upload, "../../etc/passwd")
    assert upload.exists()
    folder.adopt(upload, "checkpoint.pt")
    assert folder.has_checkpoint() and not folder.is_torchscript() and not upload.exists()


def test_only_a_folder_with_a_config_is_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_run(tmp_path / "empty")


def test_a_torchscript_import_is_told_apart_from_a_checkpoint(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.dir.mkdir()
    folder.torchscript_path.write_bytes(b"module")
    assert folder.is_torchscript() and not folder.has_checkpoint()
