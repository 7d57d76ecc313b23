"""Import a model: a run that skips training and measures the model on a dataset.

The file is untrusted. A checkpoint this app exported is read with `torch.load(weights_only=True)` (tensors
and plain data only, no code); every field of it is held to a run config's limits (its config re-validated as
a RunConfig, its image size and channel count as strict integers in range: they decide what the worker
allocates; models/checkpoint.py) and its weights are loaded into the model it describes, all before the
answer, so a bad file is a 400 naming the field and leaves nothing behind. A TorchScript embedder carries
code: it is accepted only with `allow_torchscript=true`, never loaded here (the worker loads it), and the
response warns about it. The run then goes through the job queue like any other; its worker calls
`models.run.import_model` or `import_torchscript`, which measure with the same code as a trained run.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from models.checkpoint import CheckpointError
from models.config import RunConfig
from models.errors import InvalidInput
from models.runfolder import CHECKPOINT, TORCHSCRIPT, RunFolder
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


def checkpoint_config(path: Path, store: Store, dataset_id: str) -> RunConfig:
    """The run config a checkpoint was trained with, every field checked, checked against the dataset it is
    imported for, and its weights loaded into the model it describes (as the worker will). Writes nothing but
    `path` itself, stripped of machine paths (models.checkpoint.strip_paths)."""
    from models.checkpoint import checked_fields, load_checkpoint, strip_paths
    from models.data import DatasetError, zero_shot_split
    from models.inference import model_from_checkpoint

    try:
        ckpt = load_checkpoint(path)
        fields = checked_fields(ckpt)
        image_set = store.image_set(dataset_id)
        if fields.in_channels != image_set.channels:
            raise InvalidInput(f"the checkpoint's model takes {fields.in_channels}-channel images but this dataset "
                             f"has {image_set.channels}-channel images; import it for a dataset like the one it "
                             f"was trained on")
        model_from_checkpoint(ckpt)
    except CheckpointError as e:
        raise InvalidInput(str(e).replace(str(path), "the uploaded file")) from None  # not the server's temp path
    try:
        zero_shot_split(image_set, fields.config.split)
    except DatasetError as e:
        raise InvalidInput(f"dataset {dataset_id} cannot be measured with this checkpoint's split: {e}") from None
    return strip_paths(path, ckpt)


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
    image_set = store.image_set(dataset_id)
    if image_size is None and image_set.native_size is None:
        raise InvalidInput("the images of this dataset have different sizes; send image_size (the side, in pixels, "
                         "the module takes)")
    # Recorded as measured: the input side now; the output dimension once the worker has run the module.
    config = RunConfig(image_size=image_size or image_set.native_size, distance={"name": distance})
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
            config = await run_in_threadpool(torchscript_config, store, dataset_id, image_size, distance)
            target, warnings = TORCHSCRIPT, [_TORCHSCRIPT_WARNING]
        else:
            config, target = await run_in_threadpool(checkpoint_config, tmp, store, dataset_id), CHECKPOINT
        jobs.check_capacity()
        rec = store.create_run(dataset_id, config, name=name or f"imported {file.filename or 'model'}"[:200],
                               origin="import")
        RunFolder(store.run_dir(rec.id)).adopt(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    jobs.submit(rec.id)
    return ImportedRun(**run_public(rec).model_dump(), warnings=warnings)
