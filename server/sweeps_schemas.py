"""Request and response shapes of the sweeps resource (docs/api.md, "Sweeps"), in the style of server/schemas.py."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field

from models.config import RunConfig
from models.sweep import DEFAULT_VARIANTS, MAX_SEEDS, MAX_SPLITS, VARIANTS, SweepSpec, judge_summary
from server.schemas import RunCreate, _Out
from server.sweeps_store import SweepRecord, SweepRun

SweepStatus = Literal["queued", "running", "done", "cancelled", "failed", "interrupted"]
VariantName = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]  (the registry's names, in the OpenAPI enum)
# What a request may leave out takes the SweepSpec's own defaults (select_classes_per_batch is derived, not asked).
_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SweepSpec)
                  if f.default is not dataclasses.MISSING and f.name in ("splits", "seeds", "select", "min_steps")}


class SweepCreate(RunCreate):
    """A run request (dataset, base config, name; the same checks) plus the protocol."""
    variants: list[VariantName] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1,
                                        description="from GET /api/sweeps/variants; 'baseline' is required, every "
                                                    "other variant is compared with it")
    splits: int = Field(_SPEC_DEFAULTS["splits"], ge=1, le=MAX_SPLITS, description="random class splits (seeded)")
    seeds: int = Field(_SPEC_DEFAULTS["seeds"], ge=1, le=MAX_SEEDS, description="seeds per split")
    select: bool = Field(_SPEC_DEFAULTS["select"], description="choose each variant's hyper-parameters from its grid "
                                                               "on a validation split of the training classes")
    min_steps: int = Field(_SPEC_DEFAULTS["min_steps"], ge=1,
                           description="a run with fewer optimizer steps is flagged under-trained")
    config: RunConfig = Field(default_factory=RunConfig, description="the base config every variant patches; "
                                                                     "missing fields take their defaults; without "
                                                                     "steps_per_epoch one epoch of it on the data "
                                                                     "is every run's budget")

    def spec_fields(self) -> dict[str, Any]:
        """The SweepSpec fields besides the base (models.sweep.prepare_spec fits the base to the data)."""
        return {"variants": tuple(self.variants), **{k: getattr(self, k) for k in _SPEC_DEFAULTS}}


class SweepRunPublic(_Out):
    key: str
    run_id: str
    name: str
    phase: Literal["select", "final"]
    variant: str
    split: int
    seed: int
    grid_index: int | None
    status: Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
    recorded: bool = Field(description="its outcome has been recorded into the sweep")
    fraction: float | None = Field(description="training progress 0..1 while it runs")
    under_trained: bool | None = Field(description="judged with the sweep's min_steps once the run is done")


class SweepPublic(_Out):
    id: str
    dataset_id: str
    name: str
    status: SweepStatus
    error: str | None
    spec: dict[str, Any]
    created_at: str
    finished_at: str | None
    finished: int = Field(description="planned runs with a recorded outcome")
    total: int = Field(description="planned runs in all, selection phase included")
    runs: list[SweepRunPublic]
    report: dict[str, Any] | None = Field(description="SweepReport JSON (variants, selection, runs, metrics, header, "
                                                      "complete, ...; partial while the sweep runs) with `markdown` "
                                                      "and `planned` (every run of the sweep and its state)")


class SweepsPublic(_Out):
    data: list[SweepPublic]
    count: int


class VariantPublic(_Out):
    name: str
    description: str
    patch: dict[str, Any]
    grid: Any
    control: Any
    extra: Any
    default: bool = Field(description="part of the default selection")


class SweepVariantsPublic(_Out):
    variants: list[VariantPublic]
    defaults: dict[str, Any] = Field(description="the defaults of a sweep request: variants, splits, seeds, ...")


def sweep_run_public(run: SweepRun, recorded: bool, min_steps: int) -> SweepRunPublic:
    verdict = judge_summary(run.summary, min_steps)
    return SweepRunPublic(key=run.key, run_id=run.run_id, name=run.name, status=run.status, recorded=recorded,
                          fraction=(run.progress or {}).get("fraction") if run.status == "running" else None,
                          under_trained=None if verdict is None else verdict["flag"], **run.plan)


def sweep_public(rec: SweepRecord, runs: list[SweepRun]) -> SweepPublic:
    recorded = set((rec.state or {}).get("results", ()))
    return SweepPublic(id=rec.id, dataset_id=rec.dataset_id, name=rec.name, status=rec.status, error=rec.error,
                       spec=rec.spec, created_at=rec.created_at, finished_at=rec.finished_at, finished=rec.finished,
                       total=rec.total, report=rec.report,
                       runs=[sweep_run_public(r, r.key in recorded, rec.spec["min_steps"]) for r in runs])


def variants_public() -> SweepVariantsPublic:
    variants = [VariantPublic(name=name, description=v.description, patch=v.patch, grid=v.grid, control=v.control,
                              extra=v.extra, default=name in DEFAULT_VARIANTS) for name, v in VARIANTS.items()]
    return SweepVariantsPublic(variants=variants, defaults={**_SPEC_DEFAULTS, "variants": list(DEFAULT_VARIANTS)})
