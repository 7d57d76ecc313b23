"""Datasets: upload (zip, a picked folder, or a built-in set) as an import job with progress events and
cancel, list, page through images, serve images."""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from starlette.datastructures import UploadFile

from models.errors import Conflict, NotFound
from server.imports import record_builtin, stage_files, stage_zip
from server.routes.deps import DatasetId, ImageId, ImportsDep, StoreDep
from server.routes.sse import follow, subscribed
from server.schemas import (DatasetPublic, DatasetsPublic, ImagePublic, ImagesPublic, SkippedPublic, dataset_public,
                            image_url, thumb_url)
from server.store import DatasetRecord, Store

router = APIRouter(prefix="/api/datasets", tags=["datasets"])
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "a zip with one folder per class"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "images, each named by its relative path (class/image.png)"},
        "builtin": {"type": "string", "description": "a built-in set: mnist5k, digits, synthetic"},
        "name": {"type": "string"}}}}}}}


def _invalid(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": "value_error"}])


@router.post("", status_code=202, operation_id="datasets-create", openapi_extra=_UPLOAD_SCHEMA)
async def create_dataset(request: Request, store: StoreDep, imports: ImportsDep) -> DatasetPublic:
    """Check and store the upload, then import it in a worker: the answer is the dataset in state `importing`
    (a built-in set already imported: `ready`); follow it at GET /api/datasets/{id}/events."""
    limits = store.upload_limits()
    form = await request.form(max_files=limits.max_members, max_fields=100)
    try:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        zip_file = form.get("file")
        builtin = form.get("builtin")
        name = form.get("name")
        given = [k for k, v in (("file", zip_file), ("files", uploads), ("builtin", builtin)) if v]
        if len(given) != 1:
            raise _invalid("file", "send exactly one of: file (a zip), files (images with relative paths as "
                                   f"names), builtin (a built-in set name); got {', '.join(given) or 'none'}"
                                   f"{_what_arrived(request, list(form.keys()))}")
        if name is not None and (not isinstance(name, str) or not 0 < len(name.strip()) <= 200):
            raise _invalid("name", "name must be 1 to 200 characters")
        name = name.strip() if isinstance(name, str) else None
        if builtin:
            if not isinstance(builtin, str):
                raise _invalid("builtin", "builtin must be a name, not a file")
            rec, new = await run_in_threadpool(record_builtin, store, builtin)
        elif zip_file:
            if not isinstance(zip_file, UploadFile):
                raise _invalid("file", "file must be an uploaded zip file")
            rec, new = await _stage_zip(store, zip_file, name), True
        else:
            files = [(f.filename or "", await f.read()) for f in uploads]
            rec, new = await run_in_threadpool(stage_files, store, files, name or _folder_name(files)), True
    finally:
        await form.close()
    if new:
        imports.submit(rec)
    return dataset_public(rec, store.run_count(rec.id))


def _what_arrived(request: Request, fields: list[str]) -> str:
    """What the request did send, for the "send exactly one of" error: wrong field names or not a form at all."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        return (f" (the body was sent as {kind or 'no content type'}; an upload is multipart/form-data, e.g. "
                f"curl -F file=@data.zip)")
    return f" (the form held {', '.join(sorted(set(fields)))[:300]})" if fields else " (the form was empty)"


async def _stage_zip(store: Store, upload: UploadFile, name: str | None) -> DatasetRecord:
    tmp = store.temp_path(".zip")
    try:
        with tmp.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
        stem = PurePosixPath(upload.filename or "upload.zip").stem or "upload"
        return await run_in_threadpool(stage_zip, store, tmp, name or stem)
    finally:
        tmp.unlink(missing_ok=True)  # gone already once staged


def _folder_name(files: list[tuple[str, bytes]]) -> str:
    """The picked folder's name when every file sits under one top folder (as browsers send them)."""
    tops = {PurePosixPath(n).parts[0] for n, _ in files if len(PurePosixPath(n).parts) > 2}
    return tops.pop() if len(tops) == 1 else "upload"


@router.get("", operation_id="datasets-list")
def list_datasets(store: StoreDep) -> DatasetsPublic:
    data = [dataset_public(r, store.run_count(r.id)) for r in store.list_datasets()]
    return DatasetsPublic(data=data, count=len(data))


@router.get("/{dataset_id}", operation_id="datasets-get")
def get_dataset(dataset_id: DatasetId, store: StoreDep) -> DatasetPublic:
    return dataset_public(store.get_dataset(dataset_id), store.run_count(dataset_id))


@router.post("/{dataset_id}/cancel", operation_id="datasets-cancel")
def cancel_import(dataset_id: DatasetId, store: StoreDep, imports: ImportsDep) -> DatasetPublic:
    """Stop an import in progress and remove every trace of it; the answer is its last state, `cancelled`."""
    rec = imports.cancel(dataset_id)
    return dataset_public(rec, 0)


@router.get("/{dataset_id}/events", operation_id="datasets-events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `dataset`, `progress`, and a final `end` (see docs/api.md)"}})
async def dataset_events(dataset_id: DatasetId, store: StoreDep, imports: ImportsDep) -> StreamingResponse:
    queue, rec = subscribed(imports.hub, dataset_id, lambda: store.get_dataset(dataset_id))
    imports.watch(rec)

    def public(r: DatasetRecord) -> dict[str, Any]:
        return dataset_public(r, store.run_count(r.id)).model_dump(mode="json", by_alias=True)

    return follow(imports.hub, dataset_id, queue, "dataset", rec, rec.progress, public,
                  lambda r: r.state != "importing")


@router.delete("/{dataset_id}", status_code=204, operation_id="datasets-delete")
def delete_dataset(dataset_id: DatasetId, store: StoreDep, force: bool = False) -> Response:
    store.delete_dataset(dataset_id, force=force)
    return Response(status_code=204)


@router.get("/{dataset_id}/skipped", operation_id="datasets-skipped")
def list_skipped(dataset_id: DatasetId, store: StoreDep, offset: int = Query(0, ge=0),
                 limit: int = Query(1000, ge=1, le=10_000)) -> SkippedPublic:
    """Every file the import skipped, with why (the dataset itself lists only the first few)."""
    skipped = store.get_dataset(dataset_id).info["skipped"]
    return SkippedPublic(data=skipped[offset:offset + limit], count=len(skipped), offset=offset, limit=limit)


@router.get("/{dataset_id}/images", operation_id="datasets-images")
def list_images(dataset_id: DatasetId, store: StoreDep, offset: int = Query(0, ge=0),
                limit: int = Query(100, ge=1, le=1000), class_name: str | None = None) -> ImagesPublic:
    image_set = store.image_set(dataset_id)
    indices = list(range(len(image_set)))
    if class_name is not None:
        if class_name not in image_set.class_names:
            raise RequestValidationError([{"loc": ("query", "class_name"), "type": "value_error",
                                           "msg": f"no class {class_name!r} in this dataset"}])
        wanted = image_set.class_names.index(class_name)
        indices = [i for i in indices if image_set.labels[i] == wanted]
    page = indices[offset:offset + limit]
    data = [ImagePublic(id=i, class_=image_set.class_names[image_set.labels[i]], path=str(image_set.paths[i]),
                        url=image_url(dataset_id, i), thumb_url=thumb_url(dataset_id, i)) for i in page]
    return ImagesPublic(data=data, count=len(indices), offset=offset, limit=limit)


def _checked_image_set(store: Store, dataset_id: str, image_id: int) -> Any:
    image_set = store.image_set(dataset_id)
    if not image_set.has_images:
        raise Conflict(f"dataset {dataset_id} holds the labels of imported embeddings; it has no images")
    if image_id >= len(image_set):
        raise NotFound(f"dataset {dataset_id} has {len(image_set)} images (ids 0 to {len(image_set) - 1}); "
                       f"there is no image {image_id}")
    return image_set


@router.get("/{dataset_id}/images/{image_id}", operation_id="datasets-image", response_class=FileResponse)
def get_image(dataset_id: DatasetId, image_id: ImageId, store: StoreDep) -> FileResponse:
    image_set = _checked_image_set(store, dataset_id, image_id)
    return FileResponse(image_set.image_path(image_id), media_type=image_set.media_type, headers=IMMUTABLE)


@router.get("/{dataset_id}/images/{image_id}/thumb", operation_id="datasets-thumb", response_class=FileResponse)
def get_thumb(dataset_id: DatasetId, image_id: ImageId, store: StoreDep) -> FileResponse:
    image_set = _checked_image_set(store, dataset_id, image_id)
    return FileResponse(image_set.thumbnail_path(image_id), media_type="image/png", headers=IMMUTABLE)
