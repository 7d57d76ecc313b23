"""The step budget of a run and the rule that flags a run as under-trained (SPEC §8, "Budgets").

A run is under-trained when it took fewer than `min_steps` optimizer steps, or when its metric loss did not
fall: the mean of the metric loss term (the DML loss alone, without the regularizers, whose terms may rise by
design) over the run's last `edge_window` steps is not below its mean over the first `edge_window` steps. The
trainer records exactly those steps' losses (`history[i]["step_losses"]`), so the rule needs no per-step log.
"""
from __future__ import annotations

import math
from typing import Any

MIN_STEPS = 100  # below this a small CNN has not left its initial geometry on the built-in sets
EDGE_SHARE = 0.1  # the first / last 10 % of the steps ...
EDGE_MAX = 50  # ... but at most 50 steps each: enough for a mean, and a bounded history.json


def steps_per_epoch(config: Any, num_train: int) -> int:
    """Optimizer steps per epoch: the config's, else one pass over the `num_train` training images."""
    return config.steps_per_epoch or max(1, num_train // config.batch_size)


def edge_window(total_steps: int) -> int:
    """How many steps at each end of a run the loss is averaged over to decide whether it fell."""
    return max(1, min(EDGE_MAX, math.ceil(EDGE_SHARE * total_steps)))


def is_edge_step(step: int, total_steps: int) -> bool:
    """Whether the 1-based global `step` lies in the first or last `edge_window(total_steps)` steps."""
    w = edge_window(total_steps)
    return step <= w or step > total_steps - w


def under_trained(history: list[dict[str, Any]], steps_per_epoch_: int, min_steps: int = MIN_STEPS) -> dict[str, Any]:
    """{"flag", "reasons", "steps", "min_steps", "loss_first", "loss_last", "window"} for a run's history.

    `steps` counts the optimizer steps of the completed epochs. loss_first / loss_last are None when the history
    has no step losses (a checkpoint from before they were recorded); then only the step count is judged.
    """
    steps = len(history) * steps_per_epoch_
    window = edge_window(steps)
    pairs = [(int(s), float(v)) for h in history for s, v in h.get("step_losses", [])]
    first = [v for s, v in pairs if s <= window]
    last = [v for s, v in pairs if s > steps - window]
    loss_first = sum(first) / len(first) if first else None
    loss_last = sum(last) / len(last) if last else None
    return judge({"steps": steps, "window": window, "loss_first": loss_first, "loss_last": loss_last}, min_steps)


def judge(record: dict[str, Any], min_steps: int) -> dict[str, Any]:
    """`record` (steps, window, loss_first, loss_last) with flag and reasons under `min_steps`; a sweep re-judges
    its runs' summaries with its own minimum this way."""
    reasons = []
    if record["steps"] < min_steps:
        reasons.append(f"only {record['steps']} optimizer steps (minimum {min_steps})")
    first, last = record.get("loss_first"), record.get("loss_last")
    if first is not None and last is not None and not last < first:
        reasons.append(f"the metric loss did not fall: {last:.4g} over the last {record['window']} steps vs "
                       f"{first:.4g} over the first {record['window']}")
    return {**record, "min_steps": min_steps, "flag": bool(reasons), "reasons": reasons}
