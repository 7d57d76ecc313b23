"""An imported checkpoint's own fields are untrusted: each is held to a run config's limits, and its weights are
loaded into the model it describes, before the server answers. A bad one is a 400 naming the field, and nothing
is stored (no run, no run folder, no pixel cache)."""
from __future__ import annotations

import io
from typing import Any, Callable

import pytest
import torch

from models.config import RunConfig
from models.checkpoint import CHECKPOINT_FORMAT
from models.trainer import build_distance, build_model
from tests.support.app import TINY_CONFIG, Stored


def _checkpoint(**config: Any) -> dict[str, Any]:
    """A checkpoint as the trainer writes one, for a 3-channel 16-px TINY_CONFIG model."""
    cfg = RunConfig(**{**TINY_CONFIG, **config})
    return {"format": CHECKPOINT_FORMAT, "config": cfg.model_dump(mode="json"), "epoch": 1, "in_channels": 3,
            "image_size": 16, "class_ids": [0, 1], "model": build_model(cfg, 3, 16).state_dict(),
            "distance": build_distance(cfg).state_dict(), "history": []}


def _with(**fields: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {**_checkpoint(), **fields}


def _config(**fields: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        ckpt = _checkpoint()
        ckpt["config"] = {**ckpt["config"], **fields}
        return ckpt
    return make


def _wider_config() -> dict[str, Any]:
    ckpt = _checkpoint()  # weights of an 8-dim head under a config that says 16: wrong tensor shapes
    ckpt["config"] = {**ckpt["config"], "embedding_dim": 16}
    return ckpt


def _learned_distance_without_its_weights() -> dict[str, Any]:
    return {**_checkpoint(distance={"name": "mahalanobis"}), "distance": {}}


CASES = {
    "image_size 4000": (_with(image_size=4000), "image_size", "less than or equal to 1024"),
    "image_size 2**40": (_with(image_size=2**40), "image_size", "less than or equal to 1024"),
    "image_size -7": (_with(image_size=-7), "image_size", "greater than or equal to 8"),
    "image_size true": (_with(image_size=True), "image_size", "valid integer"),
    "image_size missing": (lambda: {k: v for k, v in _checkpoint().items() if k != "image_size"}, "image_size", ""),
    "in_channels 3.0": (_with(in_channels=3.0), "in_channels", "valid integer"),
    "in_channels '3'": (_with(in_channels="3"), "in_channels", "valid integer"),
    "in_channels 1000": (_with(in_channels=1000), "in_channels", "less than or equal to 4"),
    "in_channels 1 (dataset has 3)": (_with(in_channels=1), "1-channel", "3-channel"),
    "image_size vs config": (_config(image_size=32), "image_size", "contradicts"),
    "unknown loss": (_config(loss={"name": "telepathy"}), "config", "telepathy"),
    "embedding_dim 10**6": (_config(embedding_dim=10**6), "config.embedding_dim", "less than or equal"),
    "split seed -1": (_config(split={"mode": "random_half", "seed": -1}), "config.split.seed", "greater than"),
    "unknown config field": (_config(shell="rm -rf /"), "config.shell", "Extra inputs"),
    "wrong tensor shapes": (_wider_config, "model weights", "size mismatch"),
    "model not a state dict": (_with(model="junk"), "model weights", ""),
    "distance weights missing": (_learned_distance_without_its_weights, "distance weights", "Missing key"),
    "class_ids not numbers": (_with(class_ids=["a"]), "class_ids", "integers"),
    "history missing": (lambda: {k: v for k, v in _checkpoint().items() if k != "history"}, "history", "list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_checkpoint_field_is_a_400_that_names_it_and_stores_nothing(stored: Stored, case: str) -> None:
    make, field, why = CASES[case]
    buf = io.BytesIO()
    torch.save(make(), buf)
    before = stored.snapshot()
    r = stored.client.post("/api/models/import", files={"file": ("model.pt", buf.getvalue())},
                           data={"dataset_id": stored.dataset["id"]})
    assert r.status_code == 400, (case, r.status_code, r.text)
    detail = r.json()["detail"]
    assert field in detail and why in detail, (case, detail)
    assert "pydantic.dev" not in detail and "input_value" not in detail, detail
    assert stored.snapshot() == before, case
