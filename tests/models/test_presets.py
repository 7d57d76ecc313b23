"""Recipe presets: valid RunConfigs with Proxy-Anchor's published values."""
from __future__ import annotations

import pytest

from models.compat import check_config
from models.config import RunConfig
from models.optim import group_settings
from models.presets import DESCRIPTIONS, PRESETS, preset_patch


def test_every_preset_is_a_valid_described_config() -> None:
    assert DESCRIPTIONS.keys() == PRESETS.keys()
    for name in PRESETS:
        check_config(RunConfig().with_patch(preset_patch(name)))  # component names and parameters exist
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of: benchmark"):
        preset_patch("fast")


def test_benchmark_preset_is_proxy_anchors_recipe() -> None:
    config = RunConfig().with_patch(preset_patch("benchmark"))
    assert (config.backbone, config.pretrained, config.freeze_bn, config.embedding_dim, config.image_size) == \
        ("resnet50", "imagenet", True, 512, 224)
    assert config.augment.mode == "standard" and config.augment.resize is None  # 224 → evaluation resize 256
    assert config.optimizer.name == "adamw"
    # backbone and embedding layer at 1e-4, proxies 100× faster, weight decay 1e-4 everywhere
    assert group_settings(config.optimizer) == {"backbone": (1e-4, 1e-4), "head": (1e-4, 1e-4),
                                                "loss": (1e-2, 1e-4)}
    assert (config.loss.name, config.loss.params, config.distance.name) == \
        ("proxy_anchor", {"margin": 0.1, "alpha": 32.0}, "cosine")
    assert config.batch_size == 180
