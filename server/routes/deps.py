"""Typed dependencies shared by the routers: the store, the job and import managers, the explorer service, and id
params."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from server.explorer import Explorer
from server.import_jobs import ImportJobs
from server.jobs import JobManager
from server.settings import Settings
from server.store import ID_PATTERN, Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


def get_explorer(request: Request) -> Explorer:
    return request.app.state.explorer


def get_imports(request: Request) -> ImportJobs:
    return request.app.state.imports


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
ExplorerDep = Annotated[Explorer, Depends(get_explorer)]
ImportsDep = Annotated[ImportJobs, Depends(get_imports)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatasetId = Annotated[str, Path(pattern=ID_PATTERN, description="dataset id (12 hex characters)")]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="run id (12 hex characters)")]
ImageId = Annotated[int, Path(ge=0, description="index of the image in its dataset")]
