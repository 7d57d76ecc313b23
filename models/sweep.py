"""The reality-check sweep (Musgrave, Belongie, Lim, ECCV 2020; SPEC §8): the baseline and each paper's idea
over seeded random class splits × seeds, one step budget for all, hyper-parameters chosen on a class-disjoint
validation split of each split's *training* classes, and a paired comparison with the baseline.

`Sweep` is a state machine with no I/O: it hands out `PlannedRun`s (`next_runs`), takes their summaries back
(`record`), and reports at any time. The CLI drives it in-process (`Sweep.run`); the server drives the same
object from its run queue and persists `state()`. The statistics live in `models/sweep_stats.py`.

Order: for a variant with a grid, the selection runs of a split (one per grid point, on train' → validation
classes, seed = the base seed) come first; that split's final runs use the grid point with the best validation
MAP@R (ties: the earlier point). Variants without a grid, or `select=False`, start their final runs at once with
the variant's own patch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from models.budget import MIN_STEPS, judge, steps_per_epoch
from models.compat import checked
from models.config import RunConfig
from models.data import zero_shot_split
from models.progress import Cancelled
from models.sweep_stats import SweepReport, build_report
from models.sweep_variants import DEFAULT_VARIANTS, VARIANTS, PlannedRun, Variant

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "PlannedRun", "Sweep", "SweepReport", "SweepSpec", "Variant",
           "prepare_spec", "run_sweep"]

MAX_SPLITS = MAX_SEEDS = 50


@dataclass(frozen=True)
class SweepSpec:
    base: RunConfig  # its steps_per_epoch must be set: the one step budget of every run (see prepare_spec)
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    splits: int = 2  # seeded random class splits: split k is RunConfig.split {"mode": "random_half", "seed": k}
    seeds: int = 3  # run seeds base.seed + 0 .. seeds − 1
    select: bool = True  # choose each variant's grid point on a validation split of the training classes
    min_steps: int = MIN_STEPS  # fewer optimizer steps than this, or a loss that did not fall: under-trained
    select_classes_per_batch: int | None = None  # cap on P for the selection runs (train' has fewer classes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants))
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown sweep variant {unknown[0]!r}; choose from: {', '.join(VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("a sweep variant is listed twice; give each once")
        if "baseline" not in self.variants:
            raise ValueError("every variant is compared with the baseline: include 'baseline' in the variants")
        if not 1 <= self.splits <= MAX_SPLITS or not 1 <= self.seeds <= MAX_SEEDS:
            raise ValueError(f"splits and seeds must each be between 1 and {MAX_SPLITS}")
        if self.min_steps < 1:
            raise ValueError("min_steps must be at least 1")
        if self.base.steps_per_epoch is None:
            raise ValueError("the sweep's base config needs an explicit steps_per_epoch, the same budget for every "
                             "variant (prepare_spec derives it from one epoch of the base on the data)")
        if self.select_classes_per_batch is not None and self.select_classes_per_batch < 2:
            raise ValueError("select_classes_per_batch must be at least 2")

    @property
    def total_steps(self) -> int:
        return self.base.epochs * int(self.base.steps_per_epoch)  # type: ignore[arg-type]  (checked above)

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base.model_dump(mode="json"), "variants": list(self.variants), "splits": self.splits,
                "seeds": self.seeds, "select": self.select, "min_steps": self.min_steps,
                "select_classes_per_batch": self.select_classes_per_batch}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SweepSpec":
        """The spec `to_json` wrote; ValueError for unknown or missing fields."""
        names = set(cls.__dataclass_fields__)
        if not {"base", "variants"} <= set(d) <= names:
            raise ValueError(f"a sweep spec has the fields {', '.join(sorted(names))} (base and variants "
                             f"required); got {', '.join(sorted(d))}")
        return cls(**{**d, "base": RunConfig.model_validate(d["base"]), "variants": tuple(d["variants"])})


def prepare_spec(image_set: Any, base: RunConfig, **fields: Any) -> SweepSpec:
    """A SweepSpec whose budget and batches fit `image_set`: steps_per_epoch (unless the base sets it) is one
    epoch of the base config on its own split, and the selection runs' classes_per_batch is capped at the
    training classes of the validation split (10 classes → 5 train → 3 train' / 2 validation)."""
    if base.steps_per_epoch is None:
        train_idx, _ = zero_shot_split(image_set, base.split)
        base = base.with_patch({"steps_per_epoch": steps_per_epoch(base, len(train_idx))})
    inner, _ = zero_shot_split(image_set, base.with_patch(_split_patch(0, validation=True)).split)
    inner_classes = len(np.unique(image_set.labels[inner]))
    cap = inner_classes if base.classes_per_batch > inner_classes else None
    return SweepSpec(base=base, select_classes_per_batch=cap, **fields)


def _split_patch(split: int, validation: bool) -> dict[str, Any]:
    return {"split": {"mode": "random_half", "seed": split, "validation": validation}}


@dataclass
class _Result:
    summary: dict[str, Any] | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "error": self.error}


def _trim(summary: dict[str, Any]) -> dict[str, Any]:
    """What the report reads from a run's summary (the headline per split and the training check)."""
    return {k: summary.get(k) for k in ("train", "test", "under_trained")}


class Sweep:
    """The sweep's plan and results; see the module docstring for the order runs become available in."""

    def __init__(self, spec: SweepSpec, state: dict[str, Any] | None = None):
        self.spec = spec
        self._select: dict[str, PlannedRun] = {}
        self._final: dict[str, tuple[str, int, int]] = {}  # key -> (variant, split, seed); config set on release
        for name in spec.variants:
            variant = VARIANTS[name]
            for k in range(spec.splits):
                if self._tunes(name):
                    for i, point in enumerate(variant.grid):
                        run = self._planned("select", name, k, spec.base.seed, i, point)
                        self._select[run.key] = run
                for s in range(spec.seeds):
                    self._final[f"final/{name}/split{k}/seed{s}"] = (name, k, s)
        for name in spec.variants:  # every config the sweep can make must be valid before anything runs
            for point in VARIANTS[name].grid if self._tunes(name) else ({},):
                self._config(name, 0, 0, point, validation=False)
        self._handed: set[str] = set()
        self._results: dict[str, _Result] = {}
        if state:
            self._handed = set(state.get("handed", ()))
            self._results = {k: _Result(v.get("summary"), v.get("error")) for k, v in state["results"].items()}
            stray = [k for k in self._handed | set(self._results) if k not in self._select and k not in self._final]
            if stray:
                raise ValueError(f"the saved sweep state names runs this spec does not plan, e.g. {stray[0]!r}")
        self._settle()

    # ---- planning ------------------------------------------------------------------------------------------
    def _tunes(self, name: str) -> bool:
        return self.spec.select and bool(VARIANTS[name].grid)

    def _config(self, name: str, split: int, seed: int, point: dict[str, Any], validation: bool) -> RunConfig:
        base = self.spec.base
        patch = {**_split_patch(split, validation), "seed": base.seed + seed}
        if validation and self.spec.select_classes_per_batch is not None:
            patch["classes_per_batch"] = min(base.classes_per_batch, self.spec.select_classes_per_batch)
        try:
            return checked(base.with_patch(VARIANTS[name].patch).with_patch(point).with_patch(patch))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            why = f"{where}: {err['msg']}" if where else str(err["msg"])
            what = f"grid point {point}" if point else "patch"
            raise ValueError(f"sweep variant {name!r}: its {what} does not make a valid run config from this base "
                             f"({why.replace('Value error, ', '')}); change the base config or sweep with "
                             f"select off") from None

    def _planned(self, phase: str, name: str, split: int, seed: int, grid_index: int | None,
                 point: dict[str, Any]) -> PlannedRun:
        if phase == "select":
            key, label = f"select/{name}/split{split}/grid{grid_index}", f"sweep select {name} split {split} " \
                                                                         f"grid {grid_index}"
            config = self._config(name, split, 0, point, validation=True)
        else:
            key, label = f"final/{name}/split{split}/seed{seed}", f"sweep {name} split {split} seed {seed}"
            config = self._config(name, split, seed, point, validation=False)
        return PlannedRun(key, phase, name, split, self.spec.base.seed + seed, grid_index, config, label)

    def _selection_keys(self, name: str, split: int) -> list[str]:
        if not self._tunes(name):
            return []
        return [f"select/{name}/split{split}/grid{i}" for i in range(len(VARIANTS[name].grid))]

    def chosen(self, name: str, split: int) -> int | None:
        """The grid index chosen for (variant, split): best validation MAP@R among finished selection runs;
        None before all of them finished, when none succeeded, or when the variant is not tuned."""
        keys = self._selection_keys(name, split)
        if not keys or any(k not in self._results for k in keys):
            return None
        scores = [validation_score(self._results[k]) for k in keys]
        valid = [(s, -i) for i, s in enumerate(scores) if s is not None]
        return -max(valid)[1] if valid else None

    def _final_run(self, key: str) -> PlannedRun | None:
        """The final run with its config, once its split's selection is over; None while it must wait."""
        name, split, seed = self._final[key]
        keys = self._selection_keys(name, split)
        if any(k not in self._results for k in keys):
            return None
        index = self.chosen(name, split)
        point = VARIANTS[name].grid[index] if index is not None else {}
        return self._planned("final", name, split, seed, index, point)

    def _settle(self) -> None:
        """Record as failed the final runs whose selection finished without one successful grid point."""
        for key, (name, split, _) in self._final.items():
            keys = self._selection_keys(name, split)
            if keys and key not in self._results and all(k in self._results for k in keys) \
                    and self.chosen(name, split) is None:
                self._results[key] = _Result(None, "not run: every grid point failed in the selection runs")

    # ---- the contract ----------------------------------------------------------------------------------------
    def next_runs(self) -> list[PlannedRun]:
        """Runs that may start now and were not handed out before (selection runs first)."""
        out = [r for k, r in self._select.items() if k not in self._handed and k not in self._results]
        for key in self._final:
            if key not in self._handed and key not in self._results:
                run = self._final_run(key)
                if run is not None:
                    out.append(run)
        self._handed.update(r.key for r in out)
        return out

    def requeue(self, keys: list[str] | None = None) -> None:
        """Offer runs handed out but never recorded again (all of them by default): after a server restart
        the process that ran them is gone."""
        pending = self._handed - set(self._results)
        self._handed -= pending if keys is None else pending & set(keys)

    def record(self, key: str, summary: dict[str, Any] | None, error: str | None = None) -> None:
        """A finished run: its summary, or None and the error that stopped it."""
        if key not in self._select and key not in self._final:
            raise ValueError(f"{key!r} is not a run of this sweep")
        if key in self._results:
            raise ValueError(f"run {key!r} was already recorded")
        if summary is None and error is None:
            raise ValueError("record a summary, or an error for a run that failed")
        self._results[key] = _Result(_trim(summary) if summary is not None else None, error)
        self._handed.add(key)
        self._settle()

    @property
    def total(self) -> int:
        return len(self._select) + len(self._final)

    @property
    def finished(self) -> int:
        return len(self._results)

    @property
    def done(self) -> bool:
        return self.finished == self.total

    def planned(self) -> list[dict[str, Any]]:
        """Every run of the sweep in order with its status: waiting | ready | running | done | failed."""
        rows = []
        for key, run in self._select.items():
            rows.append({"key": key, "phase": "select", "variant": run.variant, "split": run.split,
                         "seed": run.seed, "grid_index": run.grid_index, "status": self._status(key)})
        for key, (name, split, seed) in self._final.items():
            status = self._status(key)
            if status == "ready" and self._final_run(key) is None:
                status = "waiting"
            rows.append({"key": key, "phase": "final", "variant": name, "split": split,
                         "seed": self.spec.base.seed + seed, "grid_index": self.chosen(name, split),
                         "status": status})
        return rows

    def _status(self, key: str) -> str:
        if key in self._results:
            return "failed" if self._results[key].summary is None else "done"
        return "running" if key in self._handed else "ready"

    def state(self) -> dict[str, Any]:
        return {"handed": sorted(self._handed), "results": {k: r.to_json() for k, r in self._results.items()}}

    def report(self) -> SweepReport:
        finals = {k: (self._final[k], r) for k, r in self._results.items() if k in self._final}
        runs = {(n, k, s): (r.summary, judge_summary(r.summary, self.spec.min_steps), r.error)
                for (n, k, s), r in finals.values()}
        selection = [{"variant": run.variant, "split": run.split, "grid_index": run.grid_index,
                      "patch": VARIANTS[run.variant].grid[run.grid_index],
                      "map_at_r": validation_score(self._results.get(key)),
                      "error": self._results[key].error if key in self._results else None,
                      "under_trained": judge_summary(self._results[key].summary, self.spec.min_steps)
                      if key in self._results else None,
                      "chosen": self.chosen(run.variant, run.split) == run.grid_index}
                     for key, run in self._select.items()]
        chosen = {name: {str(k): VARIANTS[name].grid[i] if (i := self.chosen(name, k)) is not None
                         else (None if self._tunes(name) else VARIANTS[name].patch)
                         for k in range(self.spec.splits)} for name in self.spec.variants}
        return build_report(self.spec, runs, selection, chosen, complete=self.done,
                            finished=self.finished, total=self.total)

    def run(self, execute: Callable[[PlannedRun], dict[str, Any]],
            on_progress: Callable[[int, int, PlannedRun], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> SweepReport:
        """Execute every run in order in this process; a run that raises is recorded as failed and the sweep
        goes on. Cancelled and KeyboardInterrupt propagate: `report()` still gives the partial table."""
        while not self.done:
            batch = self.next_runs()
            if not batch:
                raise RuntimeError("the sweep waits on runs handed out elsewhere; requeue() them to run them here")
            for run in batch:
                if should_cancel is not None and should_cancel():
                    raise Cancelled(f"sweep cancelled before {run.key}")
                if on_progress is not None:
                    on_progress(self.finished, self.total, run)
                try:
                    summary = execute(run)
                except (Cancelled, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed run is a result of the sweep
                    self.record(run.key, None, f"{type(exc).__name__}: {exc}")
                else:
                    self.record(run.key, summary)
        return self.report()


def validation_score(result: _Result | None) -> float | None:
    """A selection run's score: MAP@R on its validation classes (the run's "test" side)."""
    if result is None or result.summary is None:
        return None
    return result.summary["test"].get("map_at_r")


def judge_summary(summary: dict[str, Any] | None, min_steps: int) -> dict[str, Any] | None:
    """A run's under-trained verdict under the sweep's `min_steps` (None: failed run or no training history)."""
    record = (summary or {}).get("under_trained")
    return judge(record, min_steps) if record else None


def run_sweep(spec: SweepSpec, execute: Callable[[PlannedRun], dict[str, Any]],
              on_progress: Callable[[int, int, PlannedRun], None] | None = None,
              should_cancel: Callable[[], bool] | None = None) -> SweepReport:
    """Run a whole sweep in this process (see `Sweep.run`)."""
    return Sweep(spec).run(execute, on_progress, should_cancel)
