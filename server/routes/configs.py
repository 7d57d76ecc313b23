"""Config arithmetic for the browser, so the patch semantics exist once (RunConfig.with_patch / patch_to).

What differs between two configs, as the patch `POST /api/runs/{id}/retrain` takes and as readable changes:
by run ids (GET, for the read-only compare and lineage views, no token needed) or by configs (POST, for the
retrain form, which diffs what the user has typed against the run it came from).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from models.config import RunConfig
from server.routes.deps import StoreDep
from server.store import ID_PATTERN

router = APIRouter(prefix="/api/config", tags=["config"])


class ConfigChange(BaseModel):
    path: str = Field(description='dotted field, e.g. "flow.enabled"; a list or `params` is one change')
    before: Any = Field(description="the value in the base config")
    after: Any = Field(description="the value in the other config")


class ConfigDiffPublic(BaseModel):
    patch: dict[str, Any] = Field(description="the smallest patch that turns the base config into the other "
                                              "(the body of a retrain's `patch`); empty when they are the same")
    changes: list[ConfigChange] = Field(description="every value the patch replaces, in field order")


class ConfigDiffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: RunConfig = Field(description="the config to start from (a run's config); missing fields: defaults")
    config: RunConfig = Field(description="the config to reach; missing fields: defaults")


def _diff(base: RunConfig, other: RunConfig) -> ConfigDiffPublic:
    patch = base.patch_to(other)
    return ConfigDiffPublic(patch=patch, changes=[ConfigChange(path=path, before=before, after=after)
                                                  for path, before, after in base.changes(patch)])


@router.get("/diff", operation_id="config-diff-runs")
def diff_runs(store: StoreDep, a: str = Query(..., pattern=ID_PATTERN, description="the base run"),
              b: str = Query(..., pattern=ID_PATTERN, description="the run whose config differs")
              ) -> ConfigDiffPublic:
    """How run b's config differs from run a's (any status)."""
    return _diff(store.get_run(a).run_config(), store.get_run(b).run_config())


@router.post("/diff", operation_id="config-diff")
def diff_configs(body: ConfigDiffRequest) -> ConfigDiffPublic:
    """How `config` differs from `base`; 422 names the first invalid field of either."""
    return _diff(body.base, body.config)
