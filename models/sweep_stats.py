"""The sweep's statistics and report: per variant and metric the mean over split × seed runs, and the paired
difference against the baseline (and against the variant's control) — its mean, a 95 % confidence interval
from the t distribution and a two-sided paired t-test p-value. Pairs are the (split, seed) cells where both runs
finished; "significant" means the interval excludes 0.

Geometry columns come in two forms (models/geometry.py): ratios within the run's own distance, which compare
runs of one distance only, and the same ratios in one common space (L2-normalised embeddings, Euclidean), which
compare runs under any distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from scipy import stats as sps

from models.sweep_variants import VARIANTS

if TYPE_CHECKING:
    from models.sweep import SweepSpec

CONFIDENCE = 0.95
Pair = tuple[int, int]  # (split, seed index)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _split(part: str, key: str, common: bool = False) -> Callable[[dict[str, Any]], float | None]:
    def value(summary: dict[str, Any]) -> float | None:
        side = summary[part]["common"] if common else summary[part]
        return side.get(key)
    return value


def _radius_ratio(common: bool) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: _ratio(_split("test", "radius_mean", common)(s), _split("train", "radius_mean", common)(s))


def _margin_ratio(common: bool) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: _ratio(_split("test", "margin", common)(s), _split("test", "pi_inter", common)(s))


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    space: str  # "retrieval" | "own distance" | "common space"
    unit: str
    description: str
    value: Callable[[dict[str, Any]], float | None]

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "label": self.label, "space": self.space, "unit": self.unit,
                "description": self.description}


_OWN = "in the run's own distance: compares runs of one distance only"
_COMMON = "on L2-normalised embeddings under the Euclidean distance, whatever the run's distance: compares any runs"
METRICS: tuple[Metric, ...] = (
    Metric("map_at_r", "MAP@R", "retrieval", "0–1", "MAP@R on the unseen test classes (the headline)",
           _split("test", "map_at_r")),
    Metric("recall_at_1", "R@1", "retrieval", "0–1", "Recall@1 (= precision@1) on the unseen test classes",
           _split("test", "recall_at_1")),
    Metric("r_precision", "R-Prec", "retrieval", "0–1", "R-Precision on the unseen test classes",
           _split("test", "r_precision")),
    Metric("map_at_r_train", "MAP@R train", "retrieval", "0–1", "MAP@R on the training classes",
           _split("train", "map_at_r")),
    Metric("radius_ratio", "radius test/train", "own distance", "ratio",
           f"mean class radius on the unseen ÷ on the training classes, {_OWN}", _radius_ratio(False)),
    Metric("margin_ratio", "margin/π_inter", "own distance", "ratio",
           f"test margin δ2 − δ1 ÷ mean inter-centroid distance, {_OWN}", _margin_ratio(False)),
    Metric("common_radius_ratio", "radius test/train (common)", "common space", "ratio",
           f"mean class radius on the unseen ÷ on the training classes, {_COMMON}", _radius_ratio(True)),
    Metric("common_margin_ratio", "margin/π_inter (common)", "common space", "ratio",
           f"test margin δ2 − δ1 ÷ mean inter-centroid distance, {_COMMON}", _margin_ratio(True)),
)


def paired(values: dict[Pair, float], reference: dict[Pair, float]) -> dict[str, Any]:
    """Paired comparison of `values` − `reference` over their common pairs: n, diff_mean, ci_low, ci_high
    (95 %, t distribution with n − 1 degrees of freedom), p_value (two-sided paired t-test), significant.

    With n < 2 there is no interval. With identical differences (zero spread) the interval is the point and p
    is 1 for a zero difference, 0 otherwise — the t statistic is undefined there.
    """
    pairs = sorted(set(values) & set(reference))
    d = np.array([values[p] - reference[p] for p in pairs], dtype=np.float64)
    out: dict[str, Any] = {"n": len(d), "diff_mean": float(d.mean()) if len(d) else None, "ci_low": None,
                           "ci_high": None, "p_value": None, "significant": False}
    if len(d) < 2:
        return out
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    mean = out["diff_mean"]
    if se == 0.0:
        return {**out, "ci_low": mean, "ci_high": mean, "p_value": 1.0 if mean == 0 else 0.0,
                "significant": mean != 0}
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, len(d) - 1)) * se
    p = float(2 * sps.t.sf(abs(mean / se), len(d) - 1))
    return {**out, "ci_low": mean - half, "ci_high": mean + half, "p_value": p,
            "significant": mean - half > 0 or mean + half < 0}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


@dataclass
class SweepReport:
    header: dict[str, Any]  # the protocol: splits, seeds, steps, base, selection cap, min_steps
    rows: list[dict[str, Any]]  # one per (variant, metric)
    selection: list[dict[str, Any]]  # one per selection run (the sensitivity table)
    counts: dict[str, dict[str, int]]  # per variant: finished, failed, under_trained
    runs: list[dict[str, Any]]  # one per finished final run: variant, split, seed, values, under_trained, error
    chosen: dict[str, dict[str, Any]]  # per variant: {split: the patch its final runs use}
    complete: bool
    finished: int
    total: int

    def to_json(self) -> dict[str, Any]:
        variants = [{**row, **self.counts[row["variant"]], "chosen": self.chosen[row["variant"]]}
                    for row in self.rows]
        return {"variants": variants, "selection": self.selection, "runs": self.runs,
                "metrics": [m.to_json() for m in METRICS], "header": self.header, "complete": self.complete,
                "finished": self.finished, "total": self.total}

    def markdown(self) -> str:
        from models.sweep_markdown import render

        return render(self)


def build_report(spec: "SweepSpec", runs: dict[tuple[str, int, int], tuple[dict | None, dict | None, str | None]],
                 selection: list[dict[str, Any]], chosen: dict[str, dict[str, Any]], complete: bool,
                 finished: int, total: int) -> SweepReport:
    """`runs`: (variant, split, seed index) -> (trimmed summary or None if failed, under-trained verdict, error)."""
    values: dict[str, dict[str, dict[Pair, float]]] = {name: {m.key: {} for m in METRICS} for name in spec.variants}
    counts = {name: {"finished": 0, "failed": 0, "under_trained": 0} for name in spec.variants}
    points = []
    for (name, split, seed), (summary, verdict, error) in runs.items():
        counts[name]["finished"] += 1
        point = {"variant": name, "split": split, "seed": spec.base.seed + seed, "values": {}, "error": error,
                 "under_trained": verdict}
        points.append(point)
        if summary is None:
            counts[name]["failed"] += 1
            continue
        counts[name]["under_trained"] += bool(verdict and verdict["flag"])
        for m in METRICS:
            v = m.value(summary)
            if v is not None and math.isfinite(v):
                values[name][m.key][(split, seed)] = point["values"][m.key] = v
    rows = []
    for name in spec.variants:
        control = VARIANTS[name].control if VARIANTS[name].control in spec.variants else None
        for m in METRICS:
            mine = values[name][m.key]
            mean, std = _mean_std(list(mine.values()))
            row: dict[str, Any] = {"variant": name, "metric": m.key, "n": len(mine), "mean": mean, "std": std}
            vs_base = paired(mine, values["baseline"][m.key]) if name != "baseline" else {}
            row.update({k: vs_base.get(k) for k in ("diff_mean", "ci_low", "ci_high", "p_value")},
                       significant=bool(vs_base.get("significant")), pairs=vs_base.get("n"), control=control)
            vs_control = paired(mine, values[control][m.key]) if control else {}
            row.update({f"control_{k}": vs_control.get(k)
                        for k in ("diff_mean", "ci_low", "ci_high", "p_value", "n")},
                       control_significant=bool(vs_control.get("significant")))
            rows.append(row)
    base = spec.base
    header = {"splits": spec.splits, "seeds": spec.seeds, "select": spec.select, "min_steps": spec.min_steps,
              "epochs": base.epochs, "steps_per_epoch": base.steps_per_epoch, "total_steps": spec.total_steps,
              "loss": base.loss.name, "miner": base.miner.name, "backbone": base.backbone,
              "embedding_dim": base.embedding_dim, "batch": f"{base.classes_per_batch} × {base.samples_per_class}",
              "select_classes_per_batch": spec.select_classes_per_batch, "confidence": CONFIDENCE,
              "test": "paired t-test (two-sided) over split × seed pairs; CI from the t distribution"}
    return SweepReport(header, rows, selection, counts, points, chosen, complete, finished, total)
