"""What the sweep measures besides retrieval: the class-disjoint validation split, the under-trained rule (and the
step losses the trainer records for it), and the geometry in one common space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.budget import edge_window, is_edge_step, judge, under_trained
from models.config import RunConfig, SplitConfig
from models.data import DatasetError, ImageSet, import_builtin, zero_shot_split
from models.distances import create_distance
from models.geometry import common_space_stats
from models.stats import class_stats
from models.sweep import prepare_spec
from models.trainer import train


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return import_builtin("synthetic", tmp_path_factory.mktemp("data") / "ten", num_classes=10, per_class=6,
                          size=16).image_set


# ---- the validation split -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,seed", [("first_half", 0), ("random_half", 0), ("random_half", 3)])
def test_validation_split_is_drawn_from_the_training_classes_only(ten: ImageSet, mode: str, seed: int) -> None:
    train, test = zero_shot_split(ten, SplitConfig(mode=mode, seed=seed))
    inner, validation = zero_shot_split(ten, SplitConfig(mode=mode, seed=seed, validation=True))
    labels = ten.labels
    assert not set(labels[validation]) & set(labels[test])  # validation classes ∩ test classes = ∅
    assert not set(labels[inner]) & set(labels[validation])  # class-disjoint within the training classes
    assert np.array_equal(np.sort(np.concatenate([inner, validation])), train)  # train' ∪ validation = train
    assert (len(set(labels[inner])), len(set(labels[validation]))) == (3, 2)  # 10 → 5 train → 3 / 2
    again = zero_shot_split(ten, SplitConfig(mode=mode, seed=seed, validation=True))
    assert np.array_equal(again[0], inner) and np.array_equal(again[1], validation)  # seeded


def test_validation_split_differs_between_seeds_and_needs_four_training_classes(tmp_path: Path,
                                                                               ten: ImageSet) -> None:
    draws = {tuple(sorted(set(ten.labels[zero_shot_split(ten, SplitConfig(seed=s, validation=True))[1]])))
             for s in range(6)}
    assert len(draws) > 1  # first_half's training classes are split again by the seed
    six = import_builtin("synthetic", tmp_path / "six", num_classes=6, per_class=2, size=8).image_set
    zero_shot_split(six, SplitConfig())  # 3 / 3 is a valid zero-shot split ...
    with pytest.raises(DatasetError, match="validation split leaves 1 class"):
        zero_shot_split(six, SplitConfig(validation=True))  # ... but 3 training classes cannot split again


def test_prepare_spec_fixes_one_epoch_of_the_base_and_caps_the_selection_batch(ten: ImageSet) -> None:
    base = RunConfig(samples_per_class=4, device="cpu")  # 5 classes per batch: all 5 training classes
    spec = prepare_spec(ten, base, variants=("baseline",))
    assert spec.base.steps_per_epoch == 30 // 20 and spec.select_classes_per_batch == 3
    fixed = prepare_spec(ten, base.with_patch({"steps_per_epoch": 7, "classes_per_batch": 3}), variants=("baseline",))
    assert fixed.base.steps_per_epoch == 7 and fixed.select_classes_per_batch is None


# ---- the under-trained rule -----------------------------------------------------------------------------------
def test_edge_window_is_ten_percent_of_the_steps_between_one_and_fifty() -> None:
    assert [edge_window(n) for n in (1, 9, 10, 11, 186, 500, 10_000)] == [1, 1, 1, 2, 19, 50, 50]
    assert [s for s in range(1, 31) if is_edge_step(s, 30)] == [1, 2, 3, 28, 29, 30]


def _history(losses: list[float], epochs: int) -> list[dict]:
    """Per-epoch history as the trainer writes it: step losses only at the run's edges."""
    total, per = len(losses), len(losses) // epochs
    return [{"epoch": e + 1, "step_losses": [[s, losses[s - 1]] for s in range(e * per + 1, (e + 1) * per + 1)
                                             if is_edge_step(s, total)]} for e in range(epochs)]


def test_under_trained_rule() -> None:
    falling = list(np.linspace(1.0, 0.2, 200))
    ok = under_trained(_history(falling, 4), 50)
    assert ok["flag"] is False and ok["reasons"] == [] and ok["steps"] == 200 and ok["window"] == 20
    assert ok["loss_first"] == pytest.approx(np.mean(falling[:20]))
    assert ok["loss_last"] == pytest.approx(np.mean(falling[-20:]))

    flat = under_trained(_history([0.2] * 200, 4), 50)  # equal is not a fall
    assert flat["flag"] and flat["reasons"] == ["the metric loss did not fall: 0.2 over the last 20 steps vs "
                                                "0.2 over the first 20"]
    short = under_trained(_history(list(np.linspace(1.0, 0.2, 60)), 6), 10)
    assert short["flag"] and short["reasons"] == ["only 60 optimizer steps (minimum 100)"]
    assert not judge(short, min_steps=50)["flag"]  # a sweep re-judges with its own minimum
    rising = under_trained(_history(list(np.linspace(0.1, 0.3, 20)), 1), 20)
    assert len(rising["reasons"]) == 2
    old = under_trained([{"epoch": 1}, {"epoch": 2}], 100)  # no step losses recorded: only the count is judged
    assert old["loss_first"] is None and not old["flag"] and old["steps"] == 200


@pytest.mark.slow
def test_trainer_records_the_metric_loss_of_the_runs_first_and_last_steps(ten: ImageSet, tmp_path: Path) -> None:
    config = RunConfig(embedding_dim=8, epochs=3, steps_per_epoch=11, classes_per_batch=2, samples_per_class=4,
                       device="cpu", amp=False, regularizers=[{"name": "zero_mean", "weight": 0.5}])
    events = []
    result = train(config, ten, zero_shot_split(ten, config.split)[0], tmp_path, on_progress=events.append)
    recorded = [pair for h in result.history for pair in h["step_losses"]]
    assert [s for s, _ in recorded] == [1, 2, 3, 4, 30, 31, 32, 33]  # window ⌈3.3⌉ = 4 of 33 steps
    by_step = {(e.epoch - 1) * 11 + e.step: e.terms["loss"] for e in events}
    assert all(v == pytest.approx(by_step[s]) for s, v in recorded)  # the metric loss, not the total
    assert under_trained(result.history, 11)["steps"] == 33


# ---- geometry in one common space -----------------------------------------------------------------------------
def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 12)
    centres = rng.normal(size=(4, 6)) * 3
    return (centres[labels] + rng.normal(size=(48, 6))).astype(np.float32), labels


def test_common_space_stats_ignore_a_global_rescale_and_equal_euclidean_on_normalised_points() -> None:
    x, y = _blobs()
    common = common_space_stats(x, y)
    assert set(common) == {"radius_mean", "relative_density", "margin", "pi_inter", "pi_ratio"}
    assert common_space_stats(x * 1000.0, y) == pytest.approx(common, rel=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    reference = class_stats(unit, y, create_distance("euclidean", normalize=False))
    assert common["margin"] == pytest.approx(reference["global"]["margin"], rel=1e-5)
    assert common["pi_inter"] == pytest.approx(reference["global"]["pi_inter"], rel=1e-5)
    radius = np.mean([np.linalg.norm(unit[y == c] - unit[y == c].mean(0), axis=1).mean() for c in range(4)])
    assert common["radius_mean"] == pytest.approx(radius, rel=1e-5)  # a slow loop over the classes


def test_the_run_headline_has_common_stats_equal_across_distances(ten: ImageSet, tmp_path: Path) -> None:
    from models.measure import Stages, measure_embeddings
    from models.progress import ignore_progress, never_cancel
    from models.runfolder import RunFolder

    rng = np.random.default_rng(1)
    train_idx, test_idx = zero_shot_split(ten, SplitConfig())
    split = {"train": train_idx, "test": test_idx}
    embeddings = {s: rng.normal(size=(len(split[s]), 6)).astype(np.float32) + 2 * ten.labels[split[s], None]
                  for s in split}
    heads = {}
    for name in ("euclidean", "squared_euclidean", "snr"):
        stages = Stages(ignore_progress, never_cancel, {k: (0.0, 1.0) for k in ("evaluate", "stats", "project")})
        heads[name], _ = measure_embeddings(embeddings, create_distance(name, normalize=False, dim=6), ten, split,
                                            RunFolder(tmp_path / name), stages, None, 0, lambda s: {},
                                            device=torch.device("cpu"))
    own = {name: h["test"]["radius_mean"] / h["train"]["radius_mean"] for name, h in heads.items()}
    assert len({round(v, 6) for v in own.values()}) == 3  # the own-distance ratio depends on the distance ...
    for name in ("squared_euclidean", "snr"):  # ... the common space does not
        for s in ("train", "test"):
            assert heads[name][s]["common"] == pytest.approx(heads["euclidean"][s]["common"], rel=1e-6)
    assert heads["euclidean"]["test"]["common"] == pytest.approx(
        common_space_stats(embeddings["test"], ten.labels[test_idx]), rel=1e-6)
    assert heads["snr"]["test"]["pi_inter"] > 0  # the own-distance denominator of margin/π_inter
