"""Health, the component catalogue the UI builds its forms from, and the headline metrics it labels by."""
from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from models.config import RunConfig
from server import __version__
from server.executor import cpu_cores, visible_gpus
from server.routes.deps import JobsDep, SettingsDep
from server.schemas import ComponentsPublic, HealthPublic, MetricInfo, MetricsPublic

router = APIRouter(prefix="/api", tags=["system"])


def _device(setting: str) -> str:
    import torch

    if setting != "cpu" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu"


@router.get("/health", operation_id="system-health")
def health(settings: SettingsDep, jobs: JobsDep) -> HealthPublic:
    import torch

    from models.analysis import MAX_PAIR_CLASSES

    return HealthPublic(version=__version__, device=_device(settings.device), torch=torch.__version__,
                        auth_required=settings.api_token is not None, queue=jobs.state(), cpus=cpu_cores(),
                        gpus=visible_gpus(settings), max_pair_classes=MAX_PAIR_CLASSES)


@lru_cache(maxsize=1)
def _components() -> ComponentsPublic:
    # The registries fill as their modules are imported; importing them here is what registers every entry.
    from models.backbones import BACKBONES
    from models.distances import DISTANCES
    from models.losses import LOSSES, MINERS
    from models.presets import DESCRIPTIONS, PRESETS, preset_patch
    from models.regularizers import REGULARIZERS

    return ComponentsPublic(
        losses=LOSSES.schemas(), distances=DISTANCES.schemas(), miners=MINERS.schemas(),
        regularizers=REGULARIZERS.schemas(), backbones=BACKBONES.schemas(),
        run_config={"schema": RunConfig.model_json_schema(), "defaults": RunConfig().model_dump(mode="json"),
                    "presets": {name: {"description": DESCRIPTIONS[name],
                                       "config": RunConfig().with_patch(preset_patch(name)).model_dump(mode="json")}
                                for name in PRESETS}})


@router.get("/components", operation_id="system-components")
def components() -> ComponentsPublic:
    return _components()


@router.get("/metrics", operation_id="system-metrics")
def metrics() -> MetricsPublic:
    """Key, label, description and direction of every headline metric: the one list (models/headline.py) the
    CLI, the sweep report and the browser name metrics by."""
    from models.headline import METRICS

    return MetricsPublic(metrics=[MetricInfo(**m.to_json()) for m in METRICS])
