"""check_config: a RunConfig's component names, parameters and combinations, checked against the registries.

RunConfig itself is plain data (models/config.py); this is the one explicit step that needs the registries (and
torch). It is taken where a config enters the system: the HTTP request schemas, the CLI's `build_config`, a
checkpoint import, a sweep's planned runs and `trainer.train`, so all of them reject the same configs with the
same words. Every message starts with the field it is about ("loss.params.margin: ...") and says what is allowed.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from pydantic import ValidationError

from models.config import RunConfig
from models.registry import Param, Registry


def checked(cfg: RunConfig) -> RunConfig:
    """`cfg` if check_config accepts it, else a pydantic ValidationError at the config's root, so a caller that
    already reports field errors (HTTP 422, the CLI's one line) reports this one the same way."""
    try:
        return check_config(cfg)
    except ValueError as err:
        raise ValidationError.from_exception_data("RunConfig", [
            {"type": "value_error", "loc": (), "input": cfg.model_dump(mode="json"), "ctx": {"error": err}}]) from None


def check_config(cfg: RunConfig) -> RunConfig:
    """`cfg`, or ValueError naming the first field that is unknown, mistyped, out of range or in a pairing that
    makes no sense. Components are dry-built once (with the global RNG untouched) so value checks are the
    factories' own."""
    from models.backbones import BACKBONES  # late: torchvision and PML are slow to import
    from models.distances import DISTANCES, create_distance
    from models.losses import LOSSES, MINERS, check_pairing
    from models.regularizers import REGULARIZERS

    _check_name(BACKBONES, "backbone", cfg.backbone)
    _check_component(DISTANCES, "distance", cfg.distance.name, cfg.distance.params)
    _check_component(LOSSES, "loss", cfg.loss.name, cfg.loss.params)
    _check_component(MINERS, "miner", cfg.miner.name, cfg.miner.params)
    check_pairing(cfg.loss.name, cfg.miner.name)
    for k, reg in enumerate(cfg.regularizers):
        _check_component(REGULARIZERS, f"regularizers[{k}]", reg.name, reg.params)
        _check_regularizer_needs(cfg, k, REGULARIZERS.entry(reg.name).tags)

    with torch.random.fork_rng(devices=[]):  # proxies draw random numbers; validating must not shift a run's seed
        distance = _in_field("distance.params: ", lambda: create_distance(
            cfg.distance.name, cfg.distance.normalize, cfg.embedding_dim, **cfg.distance.params))
        _in_field("loss.params: ", lambda: LOSSES.create(
            cfg.loss.name, distance, cfg.classes_per_batch, cfg.embedding_dim, **cfg.loss.params))
        _in_field("miner.params: ", lambda: MINERS.create(cfg.miner.name, distance, **cfg.miner.params))
        for k, reg in enumerate(cfg.regularizers):
            _in_field(f"regularizers[{k}].params: ", lambda: REGULARIZERS.create(reg.name, **reg.params))
    return cfg


def _in_field(prefix: str, build: Callable[[], Any]) -> Any:
    """Run `build`, re-raising its complaint as a ValueError that starts with the field it is about."""
    try:
        return build()
    except (ValueError, TypeError, AssertionError) as err:  # PML asserts on some distance types
        raise ValueError(f"{prefix}{err}") from None


def _check_name(registry: Registry, field: str, name: str) -> None:
    _in_field(f"{field}: ", lambda: registry.entry(name))


def _check_component(registry: Registry, field: str, name: str, params: dict[str, Any]) -> None:
    _check_name(registry, f"{field}.name", name)
    _in_field(f"{field}.params: ", lambda: registry.check_params(name, params))
    for param in registry.entry(name).params:
        if param.name in params and not _fits(params[param.name], param):
            raise ValueError(f"{field}.params.{param.name}: expected a {'finite ' if param.kind == 'float' else ''}"
                             f"{param.kind}{' or null' if param.default is None else ''}, "
                             f"got {params[param.name]!r:.80}")


def _fits(value: Any, param: Param) -> bool:
    """JSON-level type check against the schema: bools are not numbers, ints are floats, NaN is not a number."""
    if value is None:
        return param.default is None
    if param.kind == "any":
        return True
    if isinstance(value, bool) or param.kind == "bool":
        return isinstance(value, bool) and param.kind == "bool"
    if param.kind == "int":
        return isinstance(value, int)
    if param.kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


def _check_regularizer_needs(cfg: RunConfig, k: int, tags: frozenset[str]) -> None:
    reg = cfg.regularizers[k]
    if "needs_flow" in tags and not cfg.flow.enabled:
        raise ValueError(f"regularizers[{k}]: '{reg.name}' reads the flow layer's log|det J|; "
                         f"set flow.enabled = true or remove it")
    if "needs_class_pairs" in tags and cfg.samples_per_class < 2:
        raise ValueError(f"samples_per_class: regularizer '{reg.name}' measures each class's spread and needs "
                         f"samples_per_class ≥ 2 (4 or more recommended), got {cfg.samples_per_class}")
