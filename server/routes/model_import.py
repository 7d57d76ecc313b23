"""Import a model: a run that skips training and measures the model on a dataset.

The file is untrusted. A checkpoint this app exported is read with `torch.load(weights_only=True)` (tensors
and plain data only, no code); every field of it is held to a run config's limits (its config re-validated as
a RunConfig, its image size and channel count as strict integers in range: they decide what the worker
allocates) and its weights are loaded into the model it describes, all before the answer, so a bad file is a
400 naming the field and leaves nothing behind. A TorchScript embedder carries
code: it is accepted only with `allow_torchscript=true`, never loaded here (the worker loads it), and the
response warns about it. The run then goes through the job queue like any other; its worker calls
`models.run.import_model` or `import_torchscript`, which measure with the same code as a trained run.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Annotated

import annotated_types

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from models.compat import checked
from models.config import RunConfig
from models.errors import InvalidInput
from server.errors import validation_summary
from server.routes.deps import JobsDep, StoreDep
from server.schemas import RunPublic, run_public
from server.store import ID_PATTERN, Store

router = APIRouter(prefix="/api/models", tags=["models"])
_TORCHSCRIPT_REFUSED = ("this file is a TorchScript module, which carries code; it is refused unless you send "
                        "allow_torchscript=true. A checkpoint from GET /api/runs/{id}/export?what=checkpoint needs "
                        "no such permission")
_TORCHSCRIPT_WARNING = ("this TorchScript module's code runs in the server's worker process; import only files "
                        "you trust")


class ImportedRun(RunPublic):
    """The queued run, with what the caller should know about the file it sent."""
    warnings: list[str] = []


def is_torchscript(path: Path) -> bool:
    """TorchScript archives carry compiled code (`code/…` and `constants.pkl`); torch.save files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


_CHANNELS = (annotated_types.Ge(1), annotated_types.Le(4))  # grey, grey + alpha, RGB, RGBA


def _checked_int(ckpt: dict, key: str, limits: tuple | list) -> int:
    """ckpt[key] as a strict integer within `limits`, else a 400 naming the field."""
    value = ckpt.get(key)
    try:
        return TypeAdapter(Annotated[int, *limits]).validate_python(value, strict=True)
    except ValidationError as e:
        raise InvalidInput(f"the checkpoint's {key}: {e.errors(include_url=False)[0]['msg']} (got {value!r:.40}); "
                         f"export it again from dmlscope") from None


def _checked_fields(ckpt: dict) -> tuple[RunConfig, int, int]:
    """The checkpoint's config, channel count and input size, each held to the limits of a run config: the file
    is untrusted and these decide how much memory the worker asks for."""
    try:
        config = checked(RunConfig.model_validate(ckpt.get("config")))
    except ValidationError as e:
        raise InvalidInput(f"the checkpoint's config is not one this version accepts: "
                         f"{validation_summary(e, ('config',))}") from None
    in_channels = _checked_int(ckpt, "in_channels", _CHANNELS)
    image_size = _checked_int(ckpt, "image_size", RunConfig.model_fields["image_size"].metadata)
    if config.image_size is not None and config.image_size != image_size:
        raise InvalidInput(f"the checkpoint's image_size ({image_size}) contradicts its config.image_size "
                         f"({config.image_size}); export it again from dmlscope")
    class_ids, history = ckpt.get("class_ids", []), ckpt.get("history")
    if not isinstance(class_ids, list) or not all(type(c) is int and c >= 0 for c in class_ids):
        raise InvalidInput("the checkpoint's class_ids: expected a list of class numbers (integers ≥ 0)")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise InvalidInput("the checkpoint's history: expected a list of per-epoch records")
    return config, in_channels, image_size


def _check_weights(ckpt: dict, config: RunConfig, in_channels: int, image_size: int) -> None:
    """Build the model and distance the checkpoint describes and load its weights into them, as the worker will:
    a tensor of the wrong shape is a 400 now, not a failed run later."""
    from models.trainer import build_distance, build_model

    skeleton = config.skeleton()
    parts = (("model", f"a {config.backbone} model with embedding_dim {config.embedding_dim} at {image_size} px",
              lambda: build_model(skeleton, in_channels, image_size)),
             ("distance", f"a {config.distance.name} distance in {config.embedding_dim} dimensions",
              lambda: build_distance(config)))
    for key, what, build in parts:
        try:
            build().load_state_dict(ckpt.get(key))
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
            lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
            why = lines[1] if len(lines) > 1 else lines[0]  # torch's first line is only "Error(s) in loading"
            raise InvalidInput(f"the checkpoint's {key} weights do not fit {what} ({why[:300]}); export it again "
                             f"from dmlscope") from None


def checkpoint_config(path: Path, store: Store, dataset_id: str) -> RunConfig:
    """The run config a checkpoint was trained with, every field checked, its weights loaded into the model it
    describes, and checked against the dataset it is imported for. Writes nothing but `path` itself.

    A config naming a pretrained-weights file (a path on the machine that trained it) is rewritten without
    it: loading the checkpoint would otherwise open that path here, and the saved weights replace it anyway.
    """
    import torch

    from models.data import DatasetError, zero_shot_split
    from models.trainer import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:  # not a dmlscope checkpoint
        raise InvalidInput(str(e).replace(str(path), "the uploaded file")) from None
    config, in_channels, image_size = _checked_fields(ckpt)
    image_set = store.image_set(dataset_id)
    if in_channels != image_set.channels:
        raise InvalidInput(f"the checkpoint's model takes {in_channels}-channel images but this dataset has "
                         f"{image_set.channels}-channel images; import it for a dataset like the one it was trained on")
    _check_weights(ckpt, config, in_channels, image_size)
    try:
        zero_shot_split(image_set, config.split)
    except DatasetError as e:
        raise InvalidInput(f"dataset {dataset_id} cannot be measured with this checkpoint's split: {e}") from None
    if config.pretrained_weights is not None:
        config = config.model_copy(update={"pretrained_weights": None})
        torch.save({**ckpt, "config": config.model_dump(mode="json")}, path)
    return config


def fixed_distances() -> list[str]:
    """Distances that need no training: neither learned nor estimated from training embeddings (`refresh`)."""
    from models.distances import create_distance, list_distances

    def fixed(name: str) -> bool:
        d = create_distance(name, dim=2)
        return not any(True for _ in d.parameters()) and not hasattr(d, "refresh")

    return [n for n in list_distances() if fixed(n)]


def torchscript_config(store: Store, dataset_id: str, image_size: int | None, distance: str) -> RunConfig:
    """The config a TorchScript embedder is measured with (split, distance, input size), checked without
    loading the module: its code runs only in the worker."""
    from models.data import DatasetError, zero_shot_split

    free = fixed_distances()
    if distance not in free:
        raise InvalidInput(f"distance {distance!r} cannot measure a TorchScript module (its metric is learned or "
                         f"estimated during training, and the module has no training); choose one of {', '.join(free)}")
    config = RunConfig(image_size=image_size, distance={"name": distance})
    image_set = store.image_set(dataset_id)
    if image_size is None and image_set.native_size is None:
        raise InvalidInput("the images of this dataset have different sizes; send image_size (the side, in pixels, "
                         "the module takes)")
    try:
        zero_shot_split(image_set, config.split)
    except DatasetError as e:
        raise InvalidInput(f"dataset {dataset_id} cannot be split for measuring: {e}") from None
    return config


@router.post("/import", status_code=201, operation_id="models-import")
async def import_model(store: StoreDep, jobs: JobsDep, file: UploadFile = File(...),
                       dataset_id: str = Form(..., pattern=ID_PATTERN), name: str | None = Form(None, max_length=200),
                       allow_torchscript: bool = Form(False),
                       image_size: int | None = Form(None, ge=8, le=1024, description="TorchScript: input side"),
                       distance: str = Form("euclidean", max_length=64, description="TorchScript: distance")
                       ) -> ImportedRun:
    store.get_dataset(dataset_id)
    tmp = store.temp_path(".pt")
    warnings = []
    try:
        with tmp.open("wb") as out:
            while chunk := await file.read(1 << 20):
                out.write(chunk)
        if await run_in_threadpool(is_torchscript, tmp):
            if not allow_torchscript:
                raise InvalidInput(_TORCHSCRIPT_REFUSED)
            from models.run import TORCHSCRIPT

            config = await run_in_threadpool(torchscript_config, store, dataset_id, image_size, distance)
            target, warnings = TORCHSCRIPT, [_TORCHSCRIPT_WARNING]
        else:
            config, target = await run_in_threadpool(checkpoint_config, tmp, store, dataset_id), "checkpoint.pt"
        jobs.check_capacity()
        rec = store.create_run(dataset_id, config, name=name or f"imported {file.filename or 'model'}"[:200],
                               origin="import")
        os.replace(tmp, store.run_dir(rec.id) / target)
    finally:
        tmp.unlink(missing_ok=True)
    jobs.submit(rec.id)
    return ImportedRun(**run_public(rec).model_dump(), warnings=warnings)
