"""A dmlscope checkpoint: the one owner of its format (save, load, read its config, strip machine paths).

A checkpoint is a `torch.save` dict of tensors and plain Python only, so it loads with `weights_only=True`: an
uploaded file can carry no code. It is untrusted all the same: `checked_fields` holds every field that decides
what a worker allocates (config, channel count, input size) to a run config's limits and names the field that
is wrong. Building the model it describes and loading its weights is `models.inference.model_from_checkpoint`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import torch
from pydantic import TypeAdapter, ValidationError

from models.compat import checked
from models.config import RunConfig
from models.errors import InvalidInput
from models.runfolder import atomic_write

CHECKPOINT_FORMAT = 1
_CHANNELS = (annotated_types.Ge(1), annotated_types.Le(4))  # grey, grey + alpha, RGB, RGBA


class CheckpointError(InvalidInput):
    """A file that is not a usable dmlscope checkpoint; the message names the field and what to do."""


def _first_error(e: ValidationError) -> str:
    """"config.field: message" of the first thing wrong with a checkpoint's config (no pydantic URLs or input)."""
    first = e.errors(include_url=False)[0]
    where = ".".join(str(p)[:64] for p in ("config", *first.get("loc", ())))
    return f"{where}: {str(first.get('msg', 'invalid value')).removeprefix('Value error, ')}"


@dataclass(frozen=True)
class CheckpointFields:
    """The checked fields a model is rebuilt from."""
    config: RunConfig
    in_channels: int
    image_size: int


def save_checkpoint(path: Path, *, config: RunConfig, epoch: int, in_channels: int, image_size: int,
                    class_ids: list[int], model: dict, criterion: dict, distance: dict, optimizer: dict,
                    scaler: dict | None, rng: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Write the training state after an epoch, atomically (a crash keeps the previous epoch's file)."""
    state = {"format": CHECKPOINT_FORMAT, "config": config.model_dump(mode="json"), "epoch": epoch,
             "in_channels": in_channels, "image_size": image_size, "class_ids": class_ids, "model": model,
             "criterion": criterion, "distance": distance, "optimizer": optimizer, "scaler": scaler, "rng": rng,
             "history": history}
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict (tensors and plain python only; loaded with weights_only=True)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means the same thing to the caller
        raise CheckpointError(f"{path} is not a readable dmlscope checkpoint ({type(exc).__name__}: {exc}); "
                              f"export it again from dmlscope") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a dmlscope checkpoint (format {CHECKPOINT_FORMAT}); "
                              f"only checkpoints written by dmlscope can be loaded")
    return ckpt


def _checked_int(ckpt: dict[str, Any], key: str, limits: tuple | list) -> int:
    value = ckpt.get(key)
    try:
        return TypeAdapter(Annotated[int, *limits]).validate_python(value, strict=True)
    except ValidationError as e:
        raise CheckpointError(f"the checkpoint's {key}: {e.errors(include_url=False)[0]['msg']} "
                              f"(got {value!r:.40}); export it again from dmlscope") from None


def checked_fields(ckpt: dict[str, Any]) -> CheckpointFields:
    """The config, channel count and input size, each held to the limits of a run config (they decide how much
    memory a worker asks for), plus the shape of `class_ids` and `history`; CheckpointError names the field."""
    try:
        config = checked(RunConfig.model_validate(ckpt.get("config")))
    except ValidationError as e:
        raise CheckpointError(f"the checkpoint's config is not one this version accepts: {_first_error(e)}") from None
    in_channels = _checked_int(ckpt, "in_channels", _CHANNELS)
    image_size = _checked_int(ckpt, "image_size", RunConfig.model_fields["image_size"].metadata)
    if config.image_size is not None and config.image_size != image_size:
        raise CheckpointError(f"the checkpoint's image_size ({image_size}) contradicts its config.image_size "
                              f"({config.image_size}); export it again from dmlscope")
    class_ids, history = ckpt.get("class_ids", []), ckpt.get("history")
    if not isinstance(class_ids, list) or not all(type(c) is int and c >= 0 for c in class_ids):
        raise CheckpointError("the checkpoint's class_ids: expected a list of class numbers (integers ≥ 0)")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckpointError("the checkpoint's history: expected a list of per-epoch records")
    return CheckpointFields(config, in_channels, image_size)


def read_config(path: Path) -> RunConfig:
    """The RunConfig a checkpoint was trained with, its fields checked (for recording an import before it runs)."""
    return checked_fields(load_checkpoint(Path(path))).config


def strip_paths(path: Path, ckpt: dict[str, Any]) -> RunConfig:
    """The checkpoint's config without a pretrained-weights file (a path on the machine that trained it), and
    the file at `path` rewritten so when it named one: a loader would otherwise open that path here, and the
    saved weights replace that file's anyway."""
    config = checked_fields(ckpt).config
    if config.pretrained_weights is None:
        return config
    config = RunConfig.model_validate({**config.model_dump(mode="json"), "pretrained_weights": None})
    atomic_write(path, lambda p: torch.save({**ckpt, "config": config.model_dump(mode="json")}, p))
    return config
