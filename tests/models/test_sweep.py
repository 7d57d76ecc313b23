"""The reality-check sweep: paired statistics against scipy and hand values, the state machine (selection before
the final runs, the chosen grid point carried into them, restore, failed runs, partial reports), the spec."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from models.config import RunConfig
from models.sweep import DEFAULT_VARIANTS, VARIANTS, Sweep, SweepSpec, run_sweep
from models.sweep_stats import METRICS, paired

BASE = RunConfig(steps_per_epoch=50, epochs=4, device="cpu")


def _spec(variants: tuple[str, ...] = ("baseline", "flow", "det"), **kw) -> SweepSpec:
    return SweepSpec(base=BASE, variants=variants, **kw)


def _summary(map_at_r: float, steps: int = 200, first: float = 0.3, last: float = 0.1) -> dict:
    side = {"map_at_r": map_at_r, "recall_at_1": map_at_r, "r_precision": map_at_r, "radius_mean": 1.0,
            "margin": -0.5, "pi_inter": 2.0, "common": {"radius_mean": 0.5, "margin": -0.2, "pi_inter": 1.0}}
    return {"train": {**side, "map_at_r": 0.9}, "test": side, "timings": {"total_s": 1.0},
            "under_trained": {"steps": steps, "window": 20, "loss_first": first, "loss_last": last,
                              "min_steps": 100, "flag": False, "reasons": []}}


# ---- statistics ---------------------------------------------------------------------------------------------
def test_paired_difference_matches_scipy_and_a_hand_computation() -> None:
    variant = {(0, 0): 0.71, (0, 1): 0.69, (1, 0): 0.74, (1, 1): 0.70, (2, 2): 0.5}  # (2, 2): no partner
    baseline = {(0, 0): 0.70, (0, 1): 0.66, (1, 0): 0.70, (1, 1): 0.69, (3, 0): 0.9}
    out = paired(variant, baseline)
    d = np.array([0.01, 0.03, 0.04, 0.01])
    assert out["n"] == 4 and out["diff_mean"] == pytest.approx(0.0225)
    # by hand: sd = sqrt(Σ(d − 0.0225)² / 3) = 0.015, se = 0.0075, t_{0.975, 3} = 3.182446
    assert d.std(ddof=1) == pytest.approx(0.015)
    assert out["ci_low"] == pytest.approx(0.0225 - 3.182446305 * 0.0075)
    assert out["ci_high"] == pytest.approx(0.0225 + sps.t.ppf(0.975, 3) * 0.0075)
    assert out["p_value"] == pytest.approx(sps.ttest_rel(d + 0.5, np.full(4, 0.5)).pvalue)
    assert out["p_value"] == pytest.approx(sps.ttest_rel([0.71, 0.69, 0.74, 0.70], [0.70, 0.66, 0.70, 0.69]).pvalue)
    assert out["ci_low"] < 0 < out["ci_high"] and out["significant"] is False  # [−0.0014, 0.0464]
    assert 0.05 < out["p_value"] < 0.06  # consistent with the interval just covering 0

    clear = paired({(0, 0): 0.8, (0, 1): 0.82, (1, 0): 0.81}, {(0, 0): 0.7, (0, 1): 0.71, (1, 0): 0.72})
    assert clear["significant"] is True and clear["ci_low"] > 0 and clear["p_value"] < 0.01


def test_paired_degenerate_cases() -> None:
    assert paired({(0, 0): 0.5}, {(0, 0): 0.4}) == pytest.approx(
        {"n": 1, "diff_mean": 0.1, "ci_low": None, "ci_high": None, "p_value": None, "significant": False})
    assert paired({}, {(0, 0): 0.4})["n"] == 0 and paired({}, {(0, 0): 0.4})["diff_mean"] is None
    same = paired({(0, 0): 0.5, (0, 1): 0.6}, {(0, 0): 0.5, (0, 1): 0.6})
    assert (same["ci_low"], same["ci_high"], same["p_value"], same["significant"]) == (0.0, 0.0, 1.0, False)
    shifted = paired({(0, 0): 0.75, (0, 1): 0.85}, {(0, 0): 0.5, (0, 1): 0.6})  # zero spread, no t statistic
    assert shifted["ci_low"] == shifted["ci_high"] == pytest.approx(0.25) and shifted["significant"]


def test_report_rows_are_the_paired_statistics_of_the_recorded_runs() -> None:
    sweep = Sweep(_spec(("baseline", "flow", "det"), splits=2, seeds=2, select=False))
    base = {(0, 0): 0.70, (0, 1): 0.66, (1, 0): 0.70, (1, 1): 0.69}
    flow = {(0, 0): 0.71, (0, 1): 0.69, (1, 0): 0.74, (1, 1): 0.70}
    det = {(0, 0): 0.60, (0, 1): 0.70, (1, 0): 0.65, (1, 1): 0.68}
    for name, values in (("baseline", base), ("flow", flow), ("det", det)):
        for (k, s), v in values.items():
            sweep.record(f"final/{name}/split{k}/seed{s}", _summary(v))
    report = sweep.report().to_json()
    assert report["complete"] and report["finished"] == report["total"] == 12
    row = next(r for r in report["variants"] if r["variant"] == "det" and r["metric"] == "map_at_r")
    vs_base, vs_flow = paired(det, base), paired(det, flow)
    assert row["mean"] == pytest.approx(np.mean(list(det.values())))
    assert row["std"] == pytest.approx(np.std(list(det.values()), ddof=1))
    assert (row["diff_mean"], row["ci_low"], row["ci_high"], row["p_value"]) == pytest.approx(
        (vs_base["diff_mean"], vs_base["ci_low"], vs_base["ci_high"], vs_base["p_value"]))
    assert row["control"] == "flow" and row["control_p_value"] == pytest.approx(vs_flow["p_value"])
    assert row["control_ci_low"] == pytest.approx(vs_flow["ci_low"]) and row["under_trained"] == 0
    assert row["chosen"] == {"0": VARIANTS["det"].patch, "1": VARIANTS["det"].patch}  # no selection
    points = [p for p in report["runs"] if p["variant"] == "det"]
    assert sorted((p["split"], p["seed"], p["values"]["map_at_r"]) for p in points) == sorted(
        (k, BASE.seed + s, v) for (k, s), v in det.items())
    ratio = next(r for r in report["variants"] if r["variant"] == "det" and r["metric"] == "common_margin_ratio")
    assert ratio["mean"] == pytest.approx(-0.2) and ratio["diff_mean"] == pytest.approx(0.0)
    own = next(r for r in report["variants"] if r["variant"] == "det" and r["metric"] == "margin_ratio")
    assert own["mean"] == pytest.approx(-0.25)  # test margin ÷ test π_inter in the run's own distance
    assert {m["key"] for m in report["metrics"]} == {m.key for m in METRICS}
    assert {m["space"] for m in report["metrics"]} == {"retrieval", "own distance", "common space"}
    json.dumps(report, allow_nan=False)
    text = sweep.report().markdown()
    assert "paired t-test" in text and "| det | 4 |" in text and "Partial" not in text


# ---- the state machine --------------------------------------------------------------------------------------
def test_selection_runs_come_first_and_the_chosen_point_is_carried_into_the_final_runs() -> None:
    sweep = Sweep(_spec(("baseline", "flow"), splits=2, seeds=2))
    first = sweep.next_runs()
    assert sweep.total == 2 * 2 + 2 * 2 * 2  # baseline's margin grid on 2 splits + 2 variants × 2 splits × 2 seeds
    assert [r.key for r in first if r.phase == "select"] == [
        "select/baseline/split0/grid0", "select/baseline/split0/grid1",
        "select/baseline/split1/grid0", "select/baseline/split1/grid1"]
    # flow has nothing to tune: its final runs may start at once; the baseline's wait for its selection
    assert sorted(r.key for r in first if r.phase == "final") == [
        f"final/flow/split{k}/seed{s}" for k in (0, 1) for s in (0, 1)]
    assert sweep.next_runs() == []  # nothing is handed out twice

    select = {r.key: r for r in first}["select/baseline/split1/grid0"]
    assert select.config.split.validation and select.config.split.mode == "random_half"
    assert select.config.split.seed == 1 and select.seed == BASE.seed and select.grid_index == 0
    assert select.config.loss.params == {"margin": 0.1} == select.config.miner.params

    sweep.record("select/baseline/split0/grid0", _summary(0.50))
    sweep.record("select/baseline/split0/grid1", _summary(0.60))
    released = sweep.next_runs()
    assert [r.key for r in released] == ["final/baseline/split0/seed0", "final/baseline/split0/seed1"]
    assert all(r.grid_index == 1 and r.config.loss.params == {"margin": 0.2} for r in released)
    assert [r.seed for r in released] == [BASE.seed, BASE.seed + 1]
    assert not released[0].config.split.validation and released[1].config.split.seed == 0
    assert released[0].name == "sweep baseline split 0 seed 0"

    sweep.record("select/baseline/split1/grid0", _summary(0.55))  # a tie goes to the earlier grid point
    sweep.record("select/baseline/split1/grid1", _summary(0.55))
    assert {r.grid_index for r in sweep.next_runs()} == {0} and sweep.chosen("baseline", 1) == 0
    steps = {(r.config.epochs, r.config.steps_per_epoch) for r in first + released}
    assert steps == {(BASE.epochs, BASE.steps_per_epoch)}  # one step budget for every run


def test_selection_runs_cap_classes_per_batch_and_never_touch_the_test_classes() -> None:
    sweep = Sweep(_spec(("baseline",), splits=1, seeds=1, select_classes_per_batch=3))
    select, = [r for r in sweep.next_runs() if r.grid_index == 0]
    assert select.config.classes_per_batch == 3 and BASE.classes_per_batch == 5
    sweep.record(select.key, _summary(0.5))
    sweep.record("select/baseline/split0/grid1", _summary(0.4))
    final, = sweep.next_runs()
    assert final.config.classes_per_batch == 5


def test_state_round_trips_through_json_and_requeue_offers_lost_runs_again() -> None:
    spec = _spec(("baseline", "det"), splits=1, seeds=2)
    sweep = Sweep(spec)
    handed = sweep.next_runs()
    sweep.record("select/baseline/split0/grid0", _summary(0.7))
    sweep.record("select/baseline/split0/grid1", _summary(0.6))
    sweep.record("select/det/split0/grid0", None, "TrainingDiverged: boom")
    state = json.loads(json.dumps(sweep.state()))
    restored = Sweep(SweepSpec.from_json(json.loads(json.dumps(spec.to_json()))), state)
    assert restored.state() == sweep.state() and restored.finished == sweep.finished == 3
    assert [r.key for r in restored.next_runs()] == [r.key for r in sweep.next_runs()] == [
        "final/baseline/split0/seed0", "final/baseline/split0/seed1"]
    assert restored.next_runs() == []
    restored.requeue()  # after a restart, the runs handed out but never recorded are offered again
    again = restored.next_runs()
    assert {r.key for r in again} == {"select/det/split0/grid1", "final/baseline/split0/seed0",
                                      "final/baseline/split0/seed1"}
    assert {r.key for r in handed} >= {"select/det/split0/grid1"}
    with pytest.raises(ValueError, match="does not plan"):
        Sweep(_spec(("baseline",), splits=1, seeds=1), state)


def test_failed_runs_are_recorded_and_a_selection_with_no_survivor_fails_its_final_runs() -> None:
    sweep = Sweep(_spec(("baseline", "det"), splits=1, seeds=2))
    sweep.next_runs()
    for i in range(2):
        sweep.record(f"select/det/split0/grid{i}", None, "TrainingDiverged: the 'det' term is nan")
    assert sweep.chosen("det", 0) is None
    rows = {r["key"]: r for r in sweep.planned()}
    assert rows["final/det/split0/seed0"]["status"] == "failed"
    assert rows["final/baseline/split0/seed0"]["status"] == "waiting"
    assert rows["select/baseline/split0/grid0"]["status"] == "running"
    assert sweep.finished == 4 and not sweep.done
    with pytest.raises(ValueError, match="already recorded"):
        sweep.record("select/det/split0/grid0", _summary(0.5))
    with pytest.raises(ValueError, match="not a run of this sweep"):
        sweep.record("final/det/split9/seed0", _summary(0.5))
    with pytest.raises(ValueError, match="a summary, or an error"):
        sweep.record("select/baseline/split0/grid0", None)

    report = sweep.report()
    assert not report.complete and f"Partial: 4 of {sweep.total} runs finished" in report.markdown()
    det = next(r for r in report.to_json()["variants"] if r["variant"] == "det")
    assert (det["failed"], det["finished"], det["n"], det["mean"]) == (2, 2, 0, None)
    assert det["chosen"] == {"0": None}
    failed = [s for s in report.selection if s["variant"] == "det"]
    assert all(s["error"] and s["map_at_r"] is None and not s["chosen"] for s in failed)


def test_under_trained_runs_are_counted_with_the_sweeps_own_minimum() -> None:
    sweep = Sweep(_spec(("baseline", "flow"), splits=1, seeds=2, select=False, min_steps=150))
    sweep.record("final/baseline/split0/seed0", _summary(0.7, steps=200))
    sweep.record("final/baseline/split0/seed1", _summary(0.7, steps=120))  # < 150
    sweep.record("final/flow/split0/seed0", _summary(0.7, first=0.1, last=0.1))  # did not fall
    sweep.record("final/flow/split0/seed1", _summary(0.7))
    rows = {r["variant"]: r for r in sweep.report().to_json()["variants"] if r["metric"] == "map_at_r"}
    assert rows["baseline"]["under_trained"] == 1 and rows["flow"]["under_trained"] == 1
    assert "| baseline | 2 | 0.700 ± 0.000 |" in sweep.report().markdown()


def test_run_sweep_executes_every_run_and_records_exceptions_as_failures() -> None:
    seen: list[str] = []
    progress: list[tuple[int, int]] = []

    def execute(run):
        seen.append(run.key)
        if run.key == "final/flow/split0/seed0":
            raise RuntimeError("no memory")
        return _summary(0.6 if run.variant == "flow" else 0.5 + 0.1 * (run.grid_index or 0))

    report = run_sweep(_spec(("baseline", "flow"), splits=1, seeds=1), execute,
                       on_progress=lambda done, total, run: progress.append((done, total)))
    assert report.complete and len(seen) == 4 and progress == [(i, 4) for i in range(4)]
    assert seen.index("final/baseline/split0/seed0") > seen.index("select/baseline/split0/grid1")
    flow = next(r for r in report.to_json()["variants"] if r["variant"] == "flow" and r["metric"] == "map_at_r")
    assert flow["failed"] == 1 and flow["n"] == 0
    assert report.chosen["baseline"] == {"0": VARIANTS["baseline"].grid[1]}

    from models.progress import Cancelled
    with pytest.raises(Cancelled):
        run_sweep(_spec(("baseline",), splits=1, seeds=1), execute, should_cancel=lambda: True)


# ---- the spec and the variants ------------------------------------------------------------------------------
def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="unknown sweep variant 'nope'"):
        _spec(("baseline", "nope"))
    with pytest.raises(ValueError, match="include 'baseline'"):
        _spec(("flow",))
    with pytest.raises(ValueError, match="listed twice"):
        _spec(("baseline", "baseline"))
    with pytest.raises(ValueError, match="explicit steps_per_epoch"):
        SweepSpec(base=RunConfig(device="cpu"), variants=("baseline",))
    with pytest.raises(ValueError, match="between 1 and"):
        _spec(splits=0)
    spec = _spec(("baseline", "density"), splits=3, seeds=1, select=False, min_steps=7)
    assert SweepSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(ValueError, match="base and variants required"):
        SweepSpec.from_json({**spec.to_json(), "folds": 3})


def test_variants_and_their_controls() -> None:
    assert DEFAULT_VARIANTS[0] == "baseline" and not any(VARIANTS[v].extra for v in DEFAULT_VARIANTS)
    assert {v for v in VARIANTS if VARIANTS[v].extra} == {"det_dueling", "relmaha_learned+zero_mean"}
    for name, v in VARIANTS.items():
        assert v.control is None or v.control in DEFAULT_VARIANTS, name
        assert v.description
    assert VARIANTS["det"].control == "flow" and VARIANTS["snr+zero_mean"].control == "sq_euclidean+zero_mean"
    assert VARIANTS["relmaha_cov+zero_mean"].control == "relmaha_identity+zero_mean"
    assert len(VARIANTS["density"].grid) == 4


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_and_grid_point_builds_a_valid_run_config(name: str) -> None:
    # Needs every branch of issue 10 merged (relative Mahalanobis `metric`, ...): the sweep builds all of them.
    sweep = Sweep(_spec(("baseline", name) if name != "baseline" else ("baseline",), splits=1, seeds=1))
    assert sweep.total >= 2
