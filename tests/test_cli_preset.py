"""`dmlscope train --preset NAME`: the preset sits under the --config file and the flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.config import RunConfig
from models.presets import preset_patch
from server.cli import BadInput, build_parser, main
from server.cli_config import build_config
from server.settings import Settings


def _config(tmp_path: Path, *argv: str) -> RunConfig:
    return build_config(build_parser().parse_args(["train", "--data", "digits", *argv]), Settings(device="cpu"))


def test_cli_preset_sits_under_the_config_file_and_the_flags(tmp_path: Path) -> None:
    config = _config(tmp_path, "--preset", "benchmark")
    assert config == RunConfig(device="cpu").with_patch(preset_patch("benchmark"))
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"embedding_dim": 128, "optimizer": {"loss_lr": 0.05}}))
    config = _config(tmp_path, "--preset", "benchmark", "--config", str(file), "--embedding-dim", "64")
    assert config.embedding_dim == 64  # flag over file
    assert (config.optimizer.loss_lr, config.optimizer.lr, config.backbone) == (0.05, 1e-4, "resnet50")
    with pytest.raises(BadInput, match="invalid choice: 'fast'"):
        _config(tmp_path, "--preset", "fast")
    assert main(["train", "--data", "digits", "--preset", "nope"]) == 2
