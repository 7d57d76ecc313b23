"""Uploaded backbone weights: state_dict files kept in <data>/weights/ and chosen by id from a run config.

A request never names a server path: the browser or a client uploads the file (checked by loading it with
weights_only=True and fitting it into the named backbone), and a run config refers to it by `weights_id`. The
worker that trains the run gets the file's path from here (`with_weights_file`), never from the request.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from models.config import RunConfig
from models.errors import Conflict, InvalidInput, NotFound
from server.store import ACTIVE, Store, atomic_write_bytes, check_id, new_id, now

WEIGHTS_DIR = "weights"
CHECK_SIZE = 224  # the size the upload is fitted at: ImageNet's, the only one ViT-B/16's weights fit


def _dir(store: Store) -> Path:
    return store.root / WEIGHTS_DIR


def _fits(path: Path, backbone: str) -> int:
    """The image channels (3, else 1) the state_dict in `path` fits `backbone` with; InvalidInput if neither."""
    from models.backbones import BACKBONES, BackboneWeightsError, create_backbone, load_weights, read_state_dict

    try:
        BACKBONES.entry(backbone)
        state = read_state_dict(path)
        first: BackboneWeightsError | None = None
        for channels in (3, 1):
            try:
                load_weights(create_backbone(backbone, channels, CHECK_SIZE), state, source="the uploaded file")
                return channels
            except BackboneWeightsError as exc:
                first = first or exc
        raise first
    except (BackboneWeightsError, ValueError) as exc:  # UnknownComponentError is a ValueError
        raise InvalidInput(str(exc).replace(str(path), "the uploaded file")) from None


def add_weights(store: Store, upload: Path, name: str, backbone: str) -> dict[str, Any]:
    """Check the uploaded file `upload` against `backbone` and keep it; returns its record."""
    channels = _fits(upload, backbone)
    weights_id = new_id()
    folder = _dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"id": weights_id, "name": name, "backbone": backbone, "channels": channels,
              "size_bytes": upload.stat().st_size, "created_at": now()}
    shutil.move(str(upload), folder / f"{weights_id}.pt")
    atomic_write_bytes(folder / f"{weights_id}.json", json.dumps(record).encode())
    return record


def list_weights(store: Store) -> list[dict[str, Any]]:
    """Every uploaded weights file, newest first."""
    folder = _dir(store)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)


def get_weights(store: Store, weights_id: str) -> dict[str, Any]:
    meta = _dir(store) / f"{check_id(weights_id, 'weights')}.json"
    if not meta.is_file():
        raise NotFound(f"weights {weights_id!r} do not exist; GET /api/weights lists the uploaded files")
    return json.loads(meta.read_text(encoding="utf-8"))


def delete_weights(store: Store, weights_id: str) -> None:
    """Remove an uploaded file; refused while a queued or running run still needs it."""
    get_weights(store, weights_id)
    users = [r.id for status in ACTIVE for r in store.list_runs(status=status)
             if r.config.get("weights_id") == weights_id]
    if users:
        raise Conflict(f"weights {weights_id} are used by the unfinished run(s) {', '.join(users)}; cancel or "
                       "let them finish first")
    for suffix in (".json", ".pt"):
        (_dir(store) / f"{weights_id}{suffix}").unlink(missing_ok=True)


def check_weights_choice(store: Store, config: RunConfig) -> None:
    """400 at submission, not a failed worker later: the chosen file exists and was checked for this backbone."""
    if config.weights_id is None:
        return
    try:
        record = get_weights(store, config.weights_id)
    except NotFound as exc:
        raise InvalidInput(f"weights_id: {exc}") from None
    if record["backbone"] != config.backbone:
        raise InvalidInput(f"weights_id: the file {record['name']!r} holds {record['backbone']} weights, but the "
                         f"config's backbone is {config.backbone}; choose backbone {record['backbone']}")


def with_weights_file(store: Store, config: RunConfig) -> RunConfig:
    """The config the worker executes: `weights_id` resolved to its file in the data folder."""
    if config.weights_id is None:
        return config
    check_weights_choice(store, config)
    return config.model_copy(update={"pretrained_weights": str(_dir(store) / f"{config.weights_id}.pt")})
