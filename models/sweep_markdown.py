"""The sweep report as Markdown: what `dmlscope sweep` prints and the README quotes."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from models.sweep_stats import CONFIDENCE, METRICS

if TYPE_CHECKING:
    from models.sweep_stats import SweepReport


def _num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _p(v: float | None) -> str:
    return "—" if v is None else ("<0.001" if v < 0.001 else f"{v:.3f}")


def _mean_std(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "—"
    return _num(row["mean"]) + (f" ± {row['std']:.3f}" if row["std"] is not None else "")


def _diff(row: dict[str, Any], prefix: str = "") -> str:
    mean = row[f"{prefix}diff_mean"]
    if mean is None:
        return "—"
    low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    star = "*" if row[f"{prefix}significant"] else ""
    interval = f" [{_num(low, True)}, {_num(high, True)}]" if low is not None else " [n < 2]"
    return f"{_num(mean, True)}{interval}{star}"


def _patch(patch: Any) -> str:
    return "—" if patch is None else json.dumps(patch, separators=(",", ":"), ensure_ascii=False)


def _table(head: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---"] * right_from + ["---:"] * (len(head) - right_from)
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def render(report: "SweepReport") -> str:
    h = report.header
    by = {(r["variant"], r["metric"]): r for r in report.rows}
    variants = list(report.counts)
    pct = f"{CONFIDENCE:.0%}".replace("%", " %")
    cap = (f"; selection runs capped at classes_per_batch {h['select_classes_per_batch']} (the validation split "
           f"has fewer training classes)" if h["select_classes_per_batch"] else "")
    select = (f"hyper-parameters chosen per variant and split on a class-disjoint validation split of that split's "
              f"training classes (validation MAP@R, one run per grid point, never the test classes){cap}"
              if h["select"] else "no selection: every variant runs with its own patch")
    lines = [f"Reality-check sweep: {h['splits']} random class split(s) × {h['seeds']} seed(s); every run "
             f"{h['total_steps']} optimizer steps ({h['epochs']} epoch(s) × {h['steps_per_epoch']}), {h['loss']} + "
             f"{h['miner']}, {h['backbone']}, {h['embedding_dim']}-d, batch {h['batch']}; {select}.",
             f"Paired over split × seed: Δ = variant − baseline (or − control), {pct} CI from the t distribution, "
             f"p from a two-sided paired t-test; * = the CI excludes 0. Under-trained: fewer than {h['min_steps']} "
             f"steps, or a metric loss that did not fall (last vs first 10 % of steps)."]
    if not report.complete:
        lines.append(f"**Partial: {report.finished} of {report.total} runs finished.**")

    head = ["variant", "n", "MAP@R mean ± std", f"Δ vs baseline [{pct} CI]", "p (paired t)", "control",
            f"Δ vs control [{pct} CI]", "p (paired t)", "under-trained", "failed"]
    rows = []
    for name in variants:
        r, counts = by[(name, "map_at_r")], report.counts[name]
        rows.append([name, str(r["n"]), _mean_std(r), _diff(r), _p(r["p_value"]), r["control"] or "—",
                     _diff(r, "control_") if r["control"] else "—",
                     _p(r["control_p_value"]) if r["control"] else "—",
                     f"{counts['under_trained']}/{counts['finished'] - counts['failed']}", str(counts["failed"])])
    lines += ["", "### MAP@R on the unseen classes", ""] + _table(head, rows, right_from=1)

    for title, field in (("mean ± std", _mean_std), (f"Δ vs baseline [{pct} CI], paired", _diff)):
        rows = [[name] + [field(by[(name, m.key)]) for m in METRICS] for name in variants]
        lines += ["", f"### Every metric: {title}", ""] + _table(["variant"] + [m.label for m in METRICS], rows)
    lines += ["", "Columns:"] + [f"- **{m.label}** ({m.space}, {m.unit}): {m.description}" for m in METRICS]

    if report.selection:
        rows = [[s["variant"], str(s["split"]), str(s["grid_index"]), _patch(s["patch"]),
                 _num(s["map_at_r"]) if s["error"] is None else "failed",
                 "yes" if s["under_trained"] and s["under_trained"]["flag"] else "",
                 "✓" if s["chosen"] else ""] for s in report.selection]
        lines += ["", "### Selection on the validation classes (sensitivity)", ""] + _table(
            ["variant", "split", "grid point", "patch", "validation MAP@R", "under-trained", "chosen"], rows,
            right_from=4)
    return "\n".join(lines)
