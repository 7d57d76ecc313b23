"""RunConfig + check_config: every registered component is accepted; nonsense is rejected naming the field."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from models.compat import check_config, checked
from models.config import RunConfig
from models.distances import list_distances
from models.losses import LOSSES, list_miners
from models.regularizers import list_regularizers


def test_default_config_is_valid() -> None:
    cfg = check_config(RunConfig())
    assert (cfg.distance.name, cfg.loss.name, cfg.miner.name) == ("euclidean", "triplet", "semihard")


def test_with_patch_toggles_and_retrains_without_touching_the_parent() -> None:
    parent = RunConfig()
    child = parent.with_patch({"flow": {"enabled": True}, "regularizers": [{"name": "det", "weight": 0.05}]})
    assert child.flow.enabled and child.flow.depth == parent.flow.depth  # deep merge keeps the rest
    assert child.regularizer_weight("det") == 0.05 and parent.regularizers == ()
    swapped = child.with_patch({"loss": {"name": "proxy_anchor", "params": {"margin": 0.2}}, "miner": {"name": "none"}})
    assert swapped.loss.params == {"margin": 0.2} and swapped.flow.enabled
    with pytest.raises(ValidationError, match="regularizers\\[0\\]"):
        checked(child.with_patch({"flow": {"enabled": False}}))


@pytest.mark.parametrize("name", sorted(LOSSES.names()))
def test_every_registered_loss_is_accepted(name: str) -> None:
    miner = "none" if "proxy" in LOSSES.entry(name).tags else "semihard"
    check_config(RunConfig(loss={"name": name}, miner={"name": miner}))


@pytest.mark.parametrize("name", list_distances())
def test_every_registered_distance_is_accepted(name: str) -> None:
    check_config(RunConfig(distance={"name": name, "normalize": True}))


@pytest.mark.parametrize("name", list_miners())
def test_every_registered_miner_is_accepted(name: str) -> None:
    check_config(RunConfig(miner={"name": name}))


def test_every_registered_regularizer_is_accepted_together() -> None:
    cfg = check_config(RunConfig(flow={"enabled": True, "dueling": True},
                                 regularizers=[{"name": n} for n in list_regularizers()]))
    assert [r.name for r in cfg.regularizers] == list_regularizers()


INVALID = {
    "unknown distance": ({"distance": {"name": "manhattan"}}, "distance.name: unknown distance 'manhattan'.*snr"),
    "unknown loss": ({"loss": {"name": "arcface"}}, "loss.name: .*proxy_anchor"),
    "unknown miner": ({"miner": {"name": "hardest"}}, "miner.name: .*batch_hard"),
    "unknown backbone": ({"backbone": "vgg16"}, "backbone: .*resnet18"),
    "unknown regularizer": ({"regularizers": [{"name": "dropout"}]}, "regularizers\\[0\\].name: .*zero_mean"),
    "misspelt parameter": ({"loss": {"params": {"margn": 0.1}}}, "loss.params: .*'margn'.*margin"),
    "string for a float": ({"loss": {"params": {"margin": "big"}}}, "loss.params.margin: expected a finite float"),
    "NaN for a float": ({"miner": {"params": {"margin": float("nan")}}}, "miner.params.margin: expected a finite"),
    "bool for a float": ({"regularizers": [{"name": "density", "params": {"tau": True}}]},
                         "regularizers\\[0\\].params.tau"),
    "value out of range": ({"loss": {"params": {"margin": -1}}}, "loss.params: triplet margin must be ≥ 0"),
    "distance takes no params": ({"distance": {"params": {"p": 3}}}, "distance.params: .*no parameters"),
    "det without flow": ({"regularizers": [{"name": "det"}]}, "regularizers\\[0\\]: 'det'.*flow.enabled"),
    "dueling without flow": ({"flow": {"dueling": True}}, "flow.dueling: .*flow.enabled"),
    "dueling without det": ({"flow": {"enabled": True, "dueling": True}}, "flow.dueling: .*det"),
    "dueling_ratio without dueling": ({"flow": {"enabled": True},
                                       "regularizers": [{"name": "det", "params": {"dueling_ratio": 0.5}}]},
                                      "regularizers\\[0\\].params.dueling_ratio"),
    "proxy loss with a miner": ({"loss": {"name": "proxy_anchor"}}, "miner.name: .*proxy_anchor.*semihard.*'none'"),
}


@pytest.mark.parametrize("patch,message", INVALID.values(), ids=INVALID.keys())
def test_invalid_configs_are_rejected_naming_the_field(patch: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        checked(RunConfig().with_patch(patch))


def test_density_needs_two_samples_per_class() -> None:
    """The field itself forbids K < 2; check_config guards configs built without validation too."""
    cfg = RunConfig.model_construct(**{**dict(RunConfig()), "samples_per_class": 1,
                                       "regularizers": [RunConfig(regularizers=[{"name": "density"}]).regularizers[0]]})
    with pytest.raises(ValueError, match="samples_per_class: .*density.*≥ 2"):
        check_config(cfg)


def test_validation_does_not_consume_the_global_random_stream() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_config(RunConfig(loss={"name": "proxy_anchor"}, miner={"name": "none"}))  # dry-builds random proxies
    torch.testing.assert_close(torch.rand(3), expected)


def test_training_checks_a_config_built_in_python_before_touching_data(tmp_path) -> None:
    from models.trainer import train

    with pytest.raises(ValueError, match="loss.name: unknown loss 'nope'"):
        train(RunConfig(loss={"name": "nope"}), None, [], tmp_path)  # no image set needed to be refused
    assert not any(tmp_path.iterdir())
