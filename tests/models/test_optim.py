"""Optimizer parameter groups: backbone / head / loss partition the trainable parameters, each at its own lr."""
from __future__ import annotations

import pytest
import torch

from models.config import OptimizerConfig, RunConfig
from models.losses import create_criterion
from models.optim import GROUPS, build_optimizer, group_settings, parameter_groups, regroup_state
from models.trainer import build_distance, build_model

CONFIG = RunConfig(embedding_dim=8, loss={"name": "proxy_anchor"}, miner={"name": "none"},
                   distance={"name": "mahalanobis"}, flow={"enabled": True, "depth": 1, "hidden": 8},
                   freeze_bn=True, optimizer={"name": "adamw", "lr": 1e-4, "loss_lr": 1e-2, "weight_decay": 1e-4})


def _parts(config: RunConfig):
    model = build_model(config, 3, 16)
    distance = build_distance(config)
    criterion = create_criterion(config.loss, config.miner, distance, 4, config.embedding_dim)
    return model, criterion, distance


def test_groups_partition_every_trainable_parameter() -> None:
    model, criterion, distance = _parts(CONFIG)
    groups = parameter_groups(model, criterion, distance)
    ids = {g: {id(p) for p in groups[g]} for g in GROUPS}
    everything = {id(p) for m in (model, criterion, distance) for p in m.parameters() if p.requires_grad}
    assert ids["backbone"] | ids["head"] | ids["loss"] == everything
    assert sum(len(groups[g]) for g in GROUPS) == len(everything)  # disjoint, each parameter once
    assert ids["backbone"] == {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in model.head.parameters()} <= ids["head"]
    assert {id(p) for p in model.flow.parameters()} <= ids["head"]
    assert {id(p) for p in criterion.parameters()} | {id(p) for p in distance.parameters()} == ids["loss"]
    frozen = [p for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert frozen and not {id(p) for p in frozen} & everything  # frozen BatchNorm is not optimised


def test_each_group_gets_its_rate_and_decay() -> None:
    model, criterion, distance = _parts(CONFIG)
    optimizer = build_optimizer(CONFIG.optimizer, parameter_groups(model, criterion, distance))
    assert isinstance(optimizer, torch.optim.AdamW)
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert got == {"backbone": (1e-4, 1e-4), "head": (1e-4, 1e-4), "loss": (1e-2, 1e-4)}


@pytest.mark.parametrize("fields, expected", [
    ({}, {"backbone": (1e-3, 0.0), "head": (1e-3, 0.0), "loss": (1e-3, 0.0)}),
    ({"head_lr": 1e-2}, {"backbone": (1e-3, 0.0), "head": (1e-2, 0.0), "loss": (1e-2, 0.0)}),
    ({"lr": 1e-4, "head_lr": 1e-3, "loss_lr": 0.1, "weight_decay": 0.01, "head_weight_decay": 0.0},
     {"backbone": (1e-4, 0.01), "head": (1e-3, 0.0), "loss": (0.1, 0.0)}),
])
def test_group_fallbacks(fields: dict, expected: dict) -> None:
    assert group_settings(OptimizerConfig(**fields)) == expected


def test_a_single_group_state_from_an_older_checkpoint_loads_into_the_groups() -> None:
    model, criterion, distance = _parts(CONFIG)
    groups = parameter_groups(model, criterion, distance)
    flat = [p for g in GROUPS for p in groups[g]]
    old = torch.optim.AdamW(flat, lr=1e-4)
    for p in flat:
        p.grad = torch.ones_like(p)
    old.step()
    optimizer = build_optimizer(CONFIG.optimizer, groups)
    optimizer.load_state_dict(regroup_state(old.state_dict(), optimizer))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-4, 1e-2]
    for p in flat:
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], old.state[p]["exp_avg"])
