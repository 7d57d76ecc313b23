"""dmlscope's deep-metric-learning core: pure torch/numpy, importable without the server.

The public entry points are re-exported here, loaded on first use so that `import models` stays cheap:
`models.LOSSES.names()`, `models.create_distance("snr")`, `models.RunConfig()`, ...
"""
import importlib
import os
from typing import Any

# Cores here are shared (server, training worker, tests): OpenMP threads that spin while they wait made torch
# 10–40× slower under contention on 2 cores; waiting passively costs little when the cores are free. It must be
# set before torch loads, so the packages set it on import (a user's own setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "RunConfig": "config",
    "DISTANCES": "distances", "create_distance": "distances", "list_distances": "distances",
    "LOSSES": "losses", "MINERS": "losses", "create_criterion": "losses", "list_losses": "losses",
    "list_miners": "losses",
    "REGULARIZERS": "regularizers", "create_regularizer": "regularizers", "list_regularizers": "regularizers",
    "BACKBONES": "backbones", "create_backbone": "backbones",
    "FlowMetricLayer": "flow",
    "execute_run": "run", "load_run": "runfolder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"models.{_EXPORTS[name]}"), name)
