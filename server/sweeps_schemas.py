"""Request and response shapes of the sweeps resource (docs/api.md, "Sweeps"), in the style of server/schemas.py."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.config import RunConfig
from models.sweep import DEFAULT_VARIANTS, VARIANTS, SweepSpec
from server.schemas import _NO_WEIGHTS_PATH, Id, _Out
from server.sweeps_store import SweepRecord, SweepRun

SweepStatus = Literal["queued", "running", "done", "cancelled", "failed", "interrupted"]
_SPEC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SweepSpec) if f.default is not dataclasses.MISSING}


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Id
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1,
                                description="names from GET /api/sweeps/variants; each is compared with the baseline")
    splits: int = Field(_SPEC_DEFAULTS["splits"], ge=1, le=20, description="random class splits (seeded)")
    seeds: int = Field(_SPEC_DEFAULTS["seeds"], ge=1, le=20, description="seeds per split")
    select: bool = Field(_SPEC_DEFAULTS["select"], description="choose each variant's hyper-parameters from its grid "
                                                               "on a validation split of the training classes")
    min_steps: int = Field(_SPEC_DEFAULTS["min_steps"], ge=1, le=10_000_000,
                           description="a run with fewer training steps is flagged under-trained")
    config: RunConfig = Field(default_factory=RunConfig, description="the base config every variant patches; "
                                                                     "missing fields take their defaults")
    name: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, variants: list[str]) -> list[str]:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown sweep variant {unknown[0]!r}; choose from: {', '.join(VARIANTS)}")
        if len(set(variants)) != len(variants):
            raise ValueError("a variant is listed twice; give each once")
        return variants

    @field_validator("config")
    @classmethod
    def _no_server_path(cls, config: RunConfig) -> RunConfig:
        if config.pretrained_weights is not None:
            raise ValueError(_NO_WEIGHTS_PATH)
        return config

    def spec(self) -> SweepSpec:
        return SweepSpec(base=self.config, variants=tuple(self.variants), splits=self.splits, seeds=self.seeds,
                         select=self.select, min_steps=self.min_steps)


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
    under_trained: bool | None = Field(description="from the run's summary, once it is done")


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
    report: dict[str, Any] | None = Field(description="SweepReport JSON: variants, selection, metrics, complete; "
                                                      "partial while the sweep runs")


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


def sweep_run_public(run: SweepRun) -> SweepRunPublic:
    plan = {k: run.plan[k] for k in ("phase", "variant", "split", "seed", "grid_index")}
    flag = (run.summary or {}).get("under_trained")
    return SweepRunPublic(key=run.key, run_id=run.run_id, name=run.name, status=run.status, recorded=run.recorded,
                          fraction=(run.progress or {}).get("fraction") if run.status == "running" else None,
                          under_trained=flag.get("flag") if isinstance(flag, dict) else None, **plan)


def sweep_public(rec: SweepRecord, runs: list[SweepRun]) -> SweepPublic:
    return SweepPublic(id=rec.id, dataset_id=rec.dataset_id, name=rec.name, status=rec.status, error=rec.error,
                       spec=rec.spec, created_at=rec.created_at, finished_at=rec.finished_at, finished=rec.finished,
                       total=rec.total, runs=[sweep_run_public(r) for r in runs], report=rec.report)


def variants_public() -> SweepVariantsPublic:
    variants = [VariantPublic(name=name, description=v.description, patch=v.patch, grid=v.grid, control=v.control,
                              extra=v.extra, default=name in DEFAULT_VARIANTS) for name, v in VARIANTS.items()]
    return SweepVariantsPublic(variants=variants, defaults={**_SPEC_DEFAULTS, "variants": list(DEFAULT_VARIANTS)})
