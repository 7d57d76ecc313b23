"""Backbone weights files: upload (multipart), list, delete; a run config chooses one by `weights_id`."""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from server.routes.deps import StoreDep
from server.store import ID_PATTERN
from server.weights import add_weights, delete_weights, get_weights, list_weights

router = APIRouter(prefix="/api/weights", tags=["weights"])
WeightsId = Annotated[str, Path(pattern=ID_PATTERN, description="weights id (12 hex characters)")]
_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "backbone"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "a state_dict saved with torch.save (loaded with weights_only=True)"},
        "backbone": {"type": "string", "description": "the backbone it must fit, e.g. resnet50"},
        "name": {"type": "string", "description": "shown in the list (default: the file name)"}}}}}}}


def _invalid(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": msg, "type": "value_error"}])


@router.post("", status_code=201, operation_id="weights-create", openapi_extra=_UPLOAD_SCHEMA)
async def upload_weights(request: Request, store: StoreDep) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=10)
    try:
        upload, backbone, name = form.get("file"), form.get("backbone"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise _invalid("file", "send the weights as the multipart file field 'file' "
                                   "(e.g. curl -F file=@resnet50.pth -F backbone=resnet50)")
        if not isinstance(backbone, str) or not 0 < len(backbone) <= 64:
            raise _invalid("backbone", "name the backbone the weights are for, e.g. backbone=resnet50")
        if name is not None and (not isinstance(name, str) or not 0 < len(name.strip()) <= 200):
            raise _invalid("name", "name must be 1 to 200 characters")
        name = name.strip() if isinstance(name, str) else PurePosixPath(upload.filename or "weights").name[:200]
        tmp = store.temp_path(".pt")
        try:
            with tmp.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
            return await run_in_threadpool(add_weights, store, tmp, name, backbone)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        await form.close()


@router.get("", operation_id="weights-list")
def get_weights_list(store: StoreDep) -> dict[str, Any]:
    data = list_weights(store)
    return {"data": data, "count": len(data)}


@router.get("/{weights_id}", operation_id="weights-get")
def get_one(weights_id: WeightsId, store: StoreDep) -> dict[str, Any]:
    return get_weights(store, weights_id)


@router.delete("/{weights_id}", status_code=204, operation_id="weights-delete")
def delete(weights_id: WeightsId, store: StoreDep) -> Response:
    delete_weights(store, weights_id)
    return Response(status_code=204)
