"""Errors on the wire: the one mapping of domain errors (models/errors.py) to HTTP statuses, the exception
handlers, and the one JSON shape of every error answer, {"error": CODE, "detail": TEXT} (`ErrorPublic`).

The store, the job manager and models raise domain errors with no HTTP in them; only this module chooses a
status. The CLI maps the same errors to exit codes without importing this module (or FastAPI).
"""
from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from models.errors import Conflict, DmlscopeError, InvalidInput, NotFound, QueueFull

log = logging.getLogger("dmlscope")


# The one mapping of domain errors (models/errors.py) to HTTP: status and the wire's "error" code. The most
# specific class of an exception's MRO that is listed here wins.
DOMAIN_STATUS: dict[type[DmlscopeError], tuple[int, str]] = {
    DmlscopeError: (400, "bad_request"), InvalidInput: (400, "bad_request"), NotFound: (404, "not_found"),
    Conflict: (409, "conflict"), QueueFull: (503, "queue_full")}


class FieldErrorPublic(BaseModel):
    loc: list[str | int] = Field(description="where: body/query/path, then the field's path")
    msg: str


class ErrorPublic(BaseModel):
    """The body of every error answer (4xx and 5xx)."""

    error: str = Field(description="a stable code: bad_request, not_found, conflict, validation_error, queue_full, "
                                   "payload_too_large, insufficient_storage, internal_error, ...")
    detail: str = Field(description="what went wrong and what to change")
    fields: list[FieldErrorPublic] | None = Field(None, description="validation_error only: every invalid field")


# Declared on every operation (FastAPI(responses=...)); "4XX" also replaces FastAPI's own 422 schema, which is
# not the shape this API answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorPublic, "description": "the request cannot be served as sent; `detail` says why"},
    "5XX": {"model": ErrorPublic, "description": "queue full (503), disk full (507) or a bug (500)"}}


def domain_status(exc: DmlscopeError) -> tuple[int, str]:
    """(status, code) of a domain error, by its nearest listed base class."""
    return next(DOMAIN_STATUS[c] for c in type(exc).__mro__ if c in DOMAIN_STATUS)


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 409: "conflict", 413: "payload_too_large", 422: "validation_error", 503: "unavailable"}
# 507 Insufficient Storage (RFC 4918), not 500: the request was fine and nothing is broken; it can be repeated
# once space is freed, and a client or a monitor can tell "disk full" from a bug by the status alone.
DISK_FULL_STATUS = 507
DISK_FULL_DETAIL = ("the disk holding the data folder is full ({what}); nothing was stored. Free some space "
                    "(or move DMLSCOPE_DATA_DIR to a larger disk) and send the request again")


def disk_full(exc: BaseException) -> str | None:
    """What ran out when `exc` means the storage is full (ENOSPC, quota, SQLite's SQLITE_FULL), else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return exc.strerror or "no space left on device"
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return f"database: {exc}"
    return None


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def error_response(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, detail, **extra), status_code=status)


def _short(part: str | int, limit: int = 64) -> str | int:
    return part[:limit - 1] + "…" if isinstance(part, str) and len(part) > limit else part


def _field_errors(errors: list[dict[str, Any]], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        loc = [_short(p) for p in (*prefix, *e.get("loc", ()))]  # a key can be the client's 100 000 characters
        if e.get("type") == "json_invalid":  # its loc ends with the character position, not a field
            msg = f"not valid JSON at character {loc[-1]} ({e.get('ctx', {}).get('error', msg)}); send a JSON object"
            loc = loc[:-1]
        out.append({"loc": loc, "msg": msg})
    return out


def _first_field(fields: list[dict[str, Any]]) -> str:
    """"loc.of.field: message" of the first error, without the body/query prefix a reader does not need."""
    first = fields[0] if fields else {"loc": [], "msg": "invalid request"}
    loc = [str(p) for p in first["loc"] if p not in ("body", "query", "path", "form")]
    where = ".".join(loc) or ".".join(str(p) for p in first["loc"])  # "body" alone: the whole body is missing
    return f"{where}: {first['msg']}" if where else first["msg"]


def validation_response(fields: list[dict[str, Any]]) -> JSONResponse:
    """422 naming the first offending field in `detail`."""
    return error_response(422, "validation_error", _first_field(fields), fields=fields)


def config_validation_error(exc: ValidationError, prefix: tuple[str, ...]) -> JSONResponse:
    return validation_response(_field_errors(exc.errors(include_url=False), prefix))


def _body_error(exc: HTTPException) -> str:
    """FastAPI's "There was an error parsing the body", with what went wrong and what to send instead."""
    cause = exc.__cause__
    if isinstance(exc.__context__, MultiPartException):  # Starlette's form parser: "Invalid multipart data."
        return (f"the multipart/form-data body is malformed ({exc.detail.rstrip('.')}); send the file as a form "
                f"field and let the client write the boundary (curl -F file=@data.zip)")
    if isinstance(cause, RecursionError):
        return ("the JSON body is nested too deeply to read (hundreds of levels); send the flat objects "
                "docs/api.md describes")
    if cause is not None and exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return (f"the request body could not be read ({type(cause).__name__}: {str(cause)[:200]}); send JSON with "
                f"Content-Type: application/json, or multipart/form-data for file uploads")
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DmlscopeError)
    async def _app_error(_: Request, exc: DmlscopeError) -> JSONResponse:
        return error_response(*domain_status(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(_field_errors(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return validation_response(_field_errors(exc.errors(include_url=False)))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps it while parsing a form or JSON body
            return await _gone(request, exc.__cause__)
        code = _CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, _body_error(exc)), exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client hung up mid-request (a closed tab, a cancelled upload): nothing is wrong here, and nobody
        # will read this answer. Whatever the request had written is removed by its route's own clean-up.
        log.info("the client disconnected before sending all of %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client disconnected before the request was complete")

    async def _storage(_: Request, exc: Exception) -> JSONResponse:
        what = disk_full(exc)
        if what is None:
            raise exc  # any other I/O or database fault is a bug: the 500 handler below answers and logs it
        log.error("disk full: %s", exc)
        return error_response(DISK_FULL_STATUS, "insufficient_storage", DISK_FULL_DETAIL.format(what=what))

    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(sqlite3.Error, _storage)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
