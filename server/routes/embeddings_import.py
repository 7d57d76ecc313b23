"""Import embeddings: a run of origin `embeddings` measured from an uploaded vectors file, with no model.

Every field of the file is checked (models.embeddings_import) before anything is written, so a bad file is a
400 naming the field and leaves no run, no dataset and no folder. Linked to a stored dataset (`dataset_id`),
each row names its image there (`image_ids`) and the run's views show thumbnails; without one, the import
records a labels-only dataset for it (no images: thumbnails and image queries answer 409). The run then goes
through the job queue like an imported model; its worker calls `measure_embeddings_file`, which measures with
the code every run uses. The CLI (`dmlscope import embeddings`) uses `prepare` and `record` too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from models.config import RunConfig
from models.embeddings_import import (EmbeddingsFile, EmbeddingsFileError, read_embeddings_file,
                                      resolve, save_input, split_rows, write_labels_only_set)
from models.errors import InvalidInput
from models.runfolder import EMBEDDINGS_INPUT, RunFolder
from server.imports import import_now
from server.routes.deps import JobsDep, StoreDep
from server.routes.model_import import fixed_distances
from server.schemas import RunPublic, run_public
from server.store import ID_PATTERN, RunRecord, Store

router = APIRouter(prefix="/api/embeddings", tags=["models"])


@dataclass
class Prepared:
    """A checked file and the run it becomes: nothing recorded yet."""
    file: EmbeddingsFile
    config: RunConfig
    dataset_id: str | None
    ids: np.ndarray  # each row's image id in the dataset (its row number for a labels-only set)


def prepare(store: Store, path: Path, dataset_id: str | None, distance: str) -> Prepared:
    """Check `path` (untrusted) against the limits, the distance and the linked dataset; 400 naming the field."""
    free = fixed_distances()
    if distance not in free:
        raise InvalidInput(f"distance: {distance!r} cannot measure imported embeddings (it is learned or estimated "
                         f"during training); choose one of {', '.join(free)}")
    image_set = store.image_set(dataset_id) if dataset_id is not None else None
    limits = store.settings
    try:
        ef = read_embeddings_file(path, limits.max_unpacked_mb << 20)
        if len(ef) > limits.max_upload_files:
            raise EmbeddingsFileError(f"vectors: {len(ef)} rows, over the limit of {limits.max_upload_files} "
                                      f"(DMLSCOPE_MAX_UPLOAD_FILES)")
        ids = resolve(ef, image_set)
        config = RunConfig(embedding_dim=ef.vectors.shape[1], distance={"name": distance}, flow={"enabled": False})
        split_rows(ef, image_set.labels[ids] if image_set is not None else ef.labels, config.split)
    except EmbeddingsFileError as e:
        raise InvalidInput(str(e)) from None
    return Prepared(ef, config, dataset_id, ids)


def dataset_for(store: Store, prepared: Prepared, name: str) -> tuple[str, bool]:
    """(dataset id, whether it was created now): the linked dataset, or a new labels-only one for the file."""
    if prepared.dataset_id is not None:
        return prepared.dataset_id, False
    classes, labels = np.unique(prepared.file.labels, return_inverse=True)
    created = import_now(store, f"embeddings: {name}"[:200], "embeddings", lambda dest, _: write_labels_only_set(
        dest, [str(c) for c in classes], labels.astype(np.int64)))
    return created.id, True


def place_input(store: Store, prepared: Prepared, run_dir: Path) -> None:
    """The checked vectors into the run folder, atomically, for `measure_embeddings_file`."""
    tmp = store.temp_path(".npz")
    try:
        save_input(tmp, prepared.file, prepared.ids)
        RunFolder(run_dir).adopt(tmp, EMBEDDINGS_INPUT)
    finally:
        tmp.unlink(missing_ok=True)


def record(store: Store, prepared: Prepared, name: str, status: str = "queued") -> RunRecord:
    """Record the run, `queued` for a worker or `running` in this process (CLI), and its labels-only dataset if
    need be, with the vectors in its folder; on any failure nothing recorded stays behind."""
    dataset_id, created = dataset_for(store, prepared, name)
    rec = None
    try:
        rec = store.create_run(dataset_id, prepared.config, name=name, origin="embeddings", status=status)
        place_input(store, prepared, store.run_dir(rec.id))
    except BaseException:
        if rec is not None:
            store.set_status(rec.id, "failed", "its embeddings could not be stored")
            store.delete_run(rec.id)
        if created:
            store.delete_dataset(dataset_id, force=True)
        raise
    return rec


@router.post("", status_code=201, operation_id="embeddings-import")
async def import_embeddings(store: StoreDep, jobs: JobsDep, file: UploadFile = File(...),
                            name: str = Form(..., min_length=1, max_length=200),
                            dataset_id: str | None = Form(None, pattern=ID_PATTERN),
                            distance: str = Form("euclidean", max_length=64)) -> RunPublic:
    if dataset_id is not None:
        dataset_id = store.get_dataset(dataset_id).id
    tmp = store.temp_path(".upload")
    try:
        with tmp.open("wb") as out:
            while chunk := await file.read(1 << 20):
                out.write(chunk)
        prepared = await run_in_threadpool(prepare, store, tmp, dataset_id, distance)
    finally:
        tmp.unlink(missing_ok=True)
    jobs.check_capacity()
    rec = await run_in_threadpool(record, store, prepared, name)
    jobs.submit(rec.id)
    return run_public(rec)
