"""Named RunConfig patches: whole recipes as one choice (CLI `--preset`, the train form, GET /api/components).

`benchmark` is the standard DML benchmark recipe of Proxy-Anchor (Kim et al., CVPR 2020, official code) for
CUB / Cars / SOP / In-Shop with an ImageNet-pretrained backbone: 512-d embeddings, 224-px random resized crops
+ flips (evaluation: resize 256, centre crop 224), AdamW at 1e-4 with weight decay 1e-4 for the backbone and
the embedding layer and 100× that (1e-2) for the proxies, frozen BatchNorm, Proxy-Anchor (δ 0.1, α 32) on
cosine similarity, batches of 180. Differences, said plainly: ResNet-50 instead of BN-Inception (torchvision
has none; SPEC §3), P×K batches (45 classes × 4) instead of random ones, and no learning-rate decay nor
warm-up epoch with a frozen backbone (dmlscope has no scheduler). Epochs are the user's budget: set them.
"""
from __future__ import annotations

from typing import Any

from models.config import RunConfig

PRESETS: dict[str, dict[str, Any]] = {
    "benchmark": {
        "backbone": "resnet50", "pretrained": "imagenet", "freeze_bn": True, "image_size": 224, "embedding_dim": 512,
        "augment": {"mode": "standard"},
        "optimizer": {"name": "adamw", "lr": 1e-4, "loss_lr": 1e-2, "weight_decay": 1e-4},
        "loss": {"name": "proxy_anchor", "params": {"margin": 0.1, "alpha": 32.0}},
        "miner": {"name": "none"}, "distance": {"name": "cosine"},
        "classes_per_batch": 45, "samples_per_class": 4,
    },
}
DESCRIPTIONS = {
    "benchmark": "Proxy-Anchor's benchmark recipe: ResNet-50 (ImageNet), 512-d, 224-px crops + flips, AdamW "
                 "1e-4 (proxies 1e-2), frozen BatchNorm, batches of 45 × 4",
}


def preset_patch(name: str) -> dict[str, Any]:
    """The RunConfig patch of preset `name` (a copy: the caller may merge into it)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return RunConfig().with_patch(PRESETS[name]).model_dump(mode="json", include=set(PRESETS[name]))
