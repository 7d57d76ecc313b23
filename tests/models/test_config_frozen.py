"""RunConfig as plain frozen data: no torch to validate it, no assignment past its invariants, and a description on
every field (the one source of the CLI's, the API's and the browser's help text)."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Iterator

import pytest
from pydantic import BaseModel, ValidationError

from models.config import FlowConfig, RunConfig


@pytest.mark.slow
def test_validating_a_config_imports_no_torch() -> None:
    code = ("import json, sys\n"
            "from models.config import RunConfig\n"
            "RunConfig().with_patch({'flow': {'enabled': True}, 'loss': {'name': 'triplet'}})\n"
            "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'pytorch_metric_learning') "
            "if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("assign", [
    lambda cfg: setattr(cfg, "epochs", 3),
    lambda cfg: setattr(cfg.flow, "dueling", True),  # would skip "dueling needs a flow" and "needs det"
    lambda cfg: setattr(cfg.loss, "name", "arcface"),
    lambda cfg: setattr(cfg.split, "seed", 7),
], ids=["top level", "flow", "loss", "split"])
def test_no_level_of_a_config_can_be_assigned(assign: Any) -> None:
    cfg = RunConfig()
    with pytest.raises(ValidationError, match="frozen"):
        assign(cfg)
    assert cfg == RunConfig()


def test_regularizers_are_an_immutable_sequence() -> None:
    cfg = RunConfig(flow={"enabled": True}, regularizers=[{"name": "det"}])
    assert isinstance(cfg.regularizers, tuple)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.regularizers[0].weight = 5.0


def test_nested_invariants_hold_at_construction() -> None:
    with pytest.raises(ValidationError, match="flow.dueling: .*flow.enabled"):
        FlowConfig(dueling=True)
    with pytest.raises(ValidationError, match="flow.dueling: .*flow.enabled"):
        RunConfig(flow={"dueling": True}, regularizers=[{"name": "det"}])
    with pytest.raises(ValidationError, match="flow.dueling: .*det"):
        RunConfig(flow={"enabled": True, "dueling": True})
    assert RunConfig(flow={"enabled": True, "dueling": True}, regularizers=[{"name": "det"}]).flow.dueling


def test_a_patch_derives_a_new_checked_config_and_leaves_the_old_one() -> None:
    base = RunConfig()
    child = base.with_patch({"flow": {"enabled": True, "depth": 2}})
    assert (child.flow.enabled, child.flow.depth, child.flow.hidden) == (True, 2, base.flow.hidden)
    assert not base.flow.enabled
    with pytest.raises(ValidationError, match="flow.dueling"):
        base.with_patch({"flow": {"dueling": True}})


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, FieldInfo) of every field of `model` and of every config model nested in it."""
    for name, info in model.model_fields.items():
        yield prefix + name, info
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _fields(arg, f"{prefix}{name}.")


def test_every_field_has_a_description() -> None:
    paths = dict(_fields(RunConfig))
    assert {"flow.dueling", "regularizers.weight", "optimizer.lr", "split.validation"} <= set(paths)
    missing = [path for path, info in paths.items() if not (info.description or "").strip()]
    assert not missing, f"fields without a description: {missing}"
    schema = RunConfig.model_json_schema()  # the descriptions reach the OpenAPI schema the browser reads
    assert schema["properties"]["epochs"]["description"] == RunConfig.model_fields["epochs"].description
    assert schema["$defs"]["FlowConfig"]["properties"]["dueling"]["description"].startswith("a second flow branch")


PATCHES = [
    {},
    {"flow": {"enabled": True, "depth": 2}, "regularizers": [{"name": "det", "weight": 0.05}]},
    {"loss": {"name": "contrastive", "params": {"pos_margin": 0.1}}, "optimizer": {"lr": 0.01}},
    {"image_size": 24, "steps_per_epoch": 3, "split": {"mode": "random_half", "seed": 4}},
]


@pytest.mark.parametrize("patch", PATCHES)
def test_patch_to_is_the_inverse_of_with_patch(patch: dict) -> None:
    base = RunConfig(loss={"params": {"margin": 0.3}}, regularizers=[{"name": "zero_mean", "weight": 0.01}])
    other = base.with_patch(patch)
    diff = base.patch_to(other)
    assert base.with_patch(diff) == other and other.patch_to(other) == {}
    assert set(diff) == set(patch)  # only what the patch touched
    if "loss" in patch:  # params are replaced whole, never diffed key by key
        assert diff["loss"]["params"] == patch["loss"]["params"]


def test_changes_name_each_replaced_value_with_both_sides() -> None:
    base = RunConfig(loss={"params": {"margin": 0.3}})
    patch = base.patch_to(base.with_patch({"flow": {"enabled": True}, "loss": {"params": {}}, "epochs": 2}))
    assert base.changes(patch) == [("flow.enabled", False, True), ("loss.params", {"margin": 0.3}, {}),
                                   ("epochs", 6, 2)]  # in field order
