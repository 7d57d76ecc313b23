"""The run pipeline: the run folder's files, read-back, query embedding, checkpoint import, maps, cancel/resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import RunConfig
from models.data import ImageSet, import_builtin
from models.inference import embed_images, load_model
from models.maps import ensure_projection
from models.progress import Cancelled, Progress
from models.projection import project
from models.run import execute_run, import_model
from models.runfolder import load_run

TINY = {"embedding_dim": 8, "epochs": 2, "steps_per_epoch": 2, "classes_per_batch": 2, "samples_per_class": 4,
        "device": "cpu", "amp": False}
FLOW = {**TINY, "flow": {"enabled": True, "depth": 2, "hidden": 8}, "regularizers": [{"name": "det", "weight": 0.05}]}
STAGES = ["train", "embed", "evaluate", "stats", "project", "done"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return import_builtin("synthetic", tmp_path_factory.mktemp("data") / "shapes", num_classes=4, per_class=8,
                          size=16).image_set


@pytest.fixture(scope="module")
def flow_run(shapes: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[Progress]]:
    run_dir = tmp_path_factory.mktemp("runs") / "flow"
    events: list[Progress] = []
    summary = execute_run(shapes, RunConfig(**FLOW), run_dir, on_progress=events.append)
    return run_dir, summary, events


def test_run_folder_holds_every_artifact_aligned_with_the_split(shapes: ImageSet, flow_run) -> None:
    run_dir, summary, _ = flow_run
    run = load_run(run_dir)
    assert run.config == RunConfig(**FLOW)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    train_ids, test_ids = run.split["train"], run.split["test"]
    assert set(shapes.labels[train_ids]).isdisjoint(shapes.labels[test_ids])  # zero-shot: unseen test classes
    assert len(train_ids) + len(test_ids) == len(shapes)
    for split, ids in run.split.items():
        assert run.embeddings(split).shape == (len(ids), 8) and run.embeddings(split).dtype == np.float32
        assert run.logdet(split).shape == run.lipschitz(split).shape == (len(ids),)
        assert np.isfinite(run.logdet(split)).all() and (run.lipschitz(split) > 0).all()
        assert run.projection("pca", split).shape == (len(ids), 2)
        assert run.centroids(split).shape == (2, 8)
        metrics = run.metrics[split]
        assert {"recall_at_1", "recall_at_8", "map_at_r", "r_precision", "nmi", "per_class"} <= set(metrics)
        assert summary[split]["map_at_r"] == metrics["map_at_r"]
        names = {shapes.class_names[c] for c in shapes.labels[ids]}
        assert set(run.class_compactness(split)) == names
        assert summary[split]["radius_mean"] == pytest.approx(
            np.mean([c["radius_mean"] for c in run.stats[split]["per_class"]]))
    assert run.projection("pca", "all").shape == (len(shapes), 2)
    assert run.projection("umap", "test") is None  # UMAP only on request (ensure_projection)
    assert len(run.history) == 2 and summary["epochs"] == 2 and summary["origin"] == "train"
    assert summary["flow"] is True and set(summary["timings"]) >= {"train_s", "stats_s", "total_s"}
    for split, ids in run.split.items():  # the diagnostics: maps saved like the others, summarised per split
        saturation = np.load(run_dir / f"saturation_{split}.npy")
        network = run.lipschitz_network(split)
        assert saturation.shape == network.shape == (len(ids),) and np.isfinite(network).any()
        assert summary[split]["flow_saturation"] == pytest.approx(float(saturation.mean()))
        assert summary[split]["lipschitz_network_median"] == pytest.approx(float(np.nanmedian(network)))
        assert summary[split]["logdet_std"] == pytest.approx(float(run.logdet(split).std()))
        assert summary[split]["lipschitz_median"] == pytest.approx(float(np.median(run.lipschitz(split))))


def test_progress_spans_every_stage_in_order(flow_run) -> None:
    _, _, events = flow_run
    stages = [e.stage for e in events]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == STAGES
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    train_fractions = [e.fraction for e in events if e.stage == "train"]
    assert 0.5 < max(train_fractions) < 1.0  # training is a part of the bar, not all of it


def test_no_flow_run_has_no_logdet_but_a_head_lipschitz(shapes: ImageSet, tmp_path: Path) -> None:
    summary = execute_run(shapes, RunConfig(**TINY), tmp_path)
    run = load_run(tmp_path)
    assert run.logdet("test") is None and summary["flow"] is False
    head = load_model(tmp_path).model.head.weight.detach()
    # A linear head has the same local Lipschitz constant everywhere, its largest singular value, which the
    # power iteration approaches from below.
    sigma_max = float(torch.linalg.matrix_norm(head, ord=2))
    assert (run.lipschitz("test") <= sigma_max * (1 + 1e-5)).all()
    assert (run.lipschitz("test") >= 0.95 * sigma_max).all()


def test_query_embedding_matches_the_stored_embeddings(shapes: ImageSet, flow_run) -> None:
    run_dir, _, _ = flow_run
    run = load_run(run_dir)
    ids = run.split["test"][:5]
    raw = shapes.pixels(16)[ids]  # raw uint8: normalisation is the model's own
    assert np.allclose(embed_images(run_dir, raw), run.embeddings("test")[:5], atol=1e-5)
    assert np.allclose(embed_images(run_dir, raw[0]), run.embeddings("test")[:1], atol=1e-5)
    query = shapes.query_pixels(shapes.image_path(int(ids[0])).read_bytes(), load_model(run_dir).image_size)
    assert np.allclose(embed_images(load_model(run_dir).model, query), run.embeddings("test")[:1], atol=1e-5)


def test_imported_checkpoint_measures_like_the_trained_run(shapes: ImageSet, flow_run, tmp_path: Path) -> None:
    run_dir, summary, _ = flow_run
    events: list[Progress] = []
    imported = import_model(run_dir / "checkpoint.pt", shapes, tmp_path, on_progress=events.append)
    assert imported["origin"] == "import"
    for split in ("train", "test"):
        assert imported[split].pop("common") == pytest.approx(summary[split]["common"])  # approx is flat only
        assert imported[split] == pytest.approx({k: v for k, v in summary[split].items() if k != "common"})
    assert (tmp_path / "checkpoint.pt").read_bytes() == (run_dir / "checkpoint.pt").read_bytes()
    assert len(load_run(tmp_path).history) == 2
    assert "train" not in {e.stage for e in events} and events[-1].fraction == 1.0


def test_import_rejects_wrong_files_and_channel_counts(flow_run, tmp_path: Path) -> None:
    run_dir, _, _ = flow_run
    digits = import_builtin("digits", tmp_path / "digits").image_set  # grey; the checkpoint wants RGB
    with pytest.raises(ValueError, match="3-channel images but this image set has 1-channel"):
        import_model(run_dir / "checkpoint.pt", digits, tmp_path / "a")
    named = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    named["config"]["pretrained_weights"] = str(tmp_path / "no_such_weights.pt")  # never opened on load
    torch.save(named, tmp_path / "named.pt")
    assert load_model(tmp_path / "named.pt").config.pretrained_weights.endswith("no_such_weights.pt")
    junk = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(ValueError, match="not a dmlscope checkpoint"):
        import_model(junk, digits, tmp_path / "b")
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable dmlscope checkpoint"):
        import_model(junk, digits, tmp_path / "c")


def test_child_maps_are_aligned_to_the_parent_and_cached(shapes: ImageSet, flow_run, tmp_path: Path) -> None:
    parent_dir, _, _ = flow_run
    execute_run(shapes, RunConfig(**{**FLOW, "seed": 3}), tmp_path, parent_dir=parent_dir)
    child, parent = load_run(tmp_path), load_run(parent_dir)
    own = project(np.array(child.embeddings("test")), "pca", seed=3, distance=load_model(tmp_path).distance)
    target = parent.projection("pca", "test")
    aligned = child.projection("pca", "test")
    assert np.linalg.norm(aligned - target) < np.linalg.norm(own - target)

    path = tmp_path / "projection_pca_test.npy"
    path.unlink()
    recomputed = ensure_projection(tmp_path, "pca", "test", parent_dir)
    assert np.allclose(recomputed, aligned, atol=1e-4) and path.is_file()
    assert np.array_equal(ensure_projection(tmp_path, "pca", "test"), recomputed)  # cached now
    with pytest.raises(ValueError, match="unknown split"):
        ensure_projection(tmp_path, "pca", "validation")


def test_cancel_after_training_then_resume_measures_without_retraining(shapes: ImageSet, tmp_path: Path) -> None:
    stage = {"now": ""}

    def track(p: Progress) -> None:
        stage["now"] = p.stage

    with pytest.raises(Cancelled):
        execute_run(shapes, RunConfig(**TINY), tmp_path, on_progress=track,
                    should_cancel=lambda: stage["now"] == "evaluate")
    assert not (tmp_path / "summary.json").exists()
    weights = load_model(tmp_path).model.head.weight.detach().clone()
    summary = execute_run(shapes, RunConfig(**TINY), tmp_path)
    assert torch.equal(load_model(tmp_path).model.head.weight, weights)  # the checkpoint was reused
    assert summary["epochs"] == 2 and (tmp_path / "summary.json").is_file()


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a dmlscope run folder"):
        load_run(tmp_path)
