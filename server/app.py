"""The FastAPI application: routers, error handlers, security middleware, the static frontend, and `serve`."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.config import RunConfig
from server import __version__
from server.errors import BadRequest, error_body, install_error_handlers
from server.jobs import JobManager
from server.routes import analysis, datasets, explore, model_import, runs, system
from server.settings import Settings
from server.store import Store

log = logging.getLogger("dmlscope")
FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# 'unsafe-eval': Plotly's WebGL traces (scattergl, via regl) compile their draw calls with Function();
# 'unsafe-inline' styles: Plotly injects <style> rules. Everything still comes from this origin only.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# /docs: Swagger UI from the fastapi-offline package, served here (no CDN, works offline). Its one inline
# script (the bootstrap) is allowed by its hash; it injects inline styles. (No /redoc: ReDoc fetches its logo
# from a CDN.)
DOCS_CSP = ("default-src 'self'; script-src 'self' {script_hash}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
DOCS_ASSETS = "/docs-assets"


def _warm_umap() -> None:
    from models.projection import warm_up_umap

    try:
        warm_up_umap()
    except Exception:  # the first real map then pays the compilation instead; nothing else depends on this
        log.exception("UMAP warm-up failed")


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


async def _send_error(send: Send, status: int, code: str, detail: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(code, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds CSP, nosniff, frame, referrer and cross-origin policies to every HTTP response.

    `docs_csp` is the policy of the API documentation pages (their inline script's hash differs per app).
    Cross-Origin-Resource-Policy keeps other sites from embedding the images and downloads.
    """

    def __init__(self, app: ASGIApp, docs_csp: str):
        self.app, self.docs_csp = app, docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = self.docs_csp if scope["path"] == "/docs" else CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", csp.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"x-frame-options", b"DENY"),
                                      (b"referrer-policy", b"no-referrer"),
                                      (b"cross-origin-opener-policy", b"same-origin"),
                                      (b"cross-origin-resource-policy", b"same-origin")]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """413 for request bodies over the limit, whether announced by Content-Length or streamed chunked.

    A streamed body that grows too large raises HTTPException(413) from `receive`: FastAPI re-raises those from
    its body parsing, so the app's error handler answers it like any other error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return (f"the request body is larger than {self.max_bytes // (1 << 20)} MiB; send a smaller upload or raise "
                f"DMLSCOPE_MAX_REQUEST_MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(send, 413, "payload_too_large", self._message())
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)


class SameOrigin:
    """403 for a mutating request that a browser sent from another site (cross-site request forgery).

    A page anywhere on the web can make the browser POST a form (a dataset upload) or a bodiless request
    (cancel a run) to 127.0.0.1 without any CORS preflight, and a server on loopback usually has no token.
    Browsers name the sending page's origin on every such request; it must be this server's own (the Host it
    was addressed as) or one of DMLSCOPE_CORS_ORIGINS. Requests without an Origin (curl, scripts) pass.
    """

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app, self.allowed = app, {o.rstrip("/") for o in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope["headers"])
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and origin not in self.allowed and urlsplit(origin).netloc != host:
                return await _send_error(send, 403, "forbidden",
                                         f"a page at {origin} may not change data on this server (cross-site "
                                         f"request); use the app at its own address, or list that origin in "
                                         f"DMLSCOPE_CORS_ORIGINS")
        await self.app(scope, receive, send)


class BearerAuth:
    """When a token is set, every mutating request must carry it (compared in constant time).

    Every method but GET/HEAD/OPTIONS, on any path: a route added later cannot slip through a path filter.
    """

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await _send_error(send, 401, "unauthorized",
                                         "this server requires 'Authorization: Bearer <token>' (DMLSCOPE_API_TOKEN) "
                                         "for requests that change data",
                                         [(b"www-authenticate", b'Bearer realm="dmlscope"')])
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings`; the store opens and the job workers start with the app's lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store.open(settings)
        leftovers = store.remove_leftovers()
        if leftovers:
            log.warning("removed what the last server process left half-written: %s", ", ".join(leftovers))
        jobs = JobManager(store, settings)
        app.state.store, app.state.jobs = store, jobs
        interrupted = jobs.start()
        if interrupted:
            log.warning("runs interrupted by the last shutdown (resume them): %s", ", ".join(interrupted))
        if settings.warm_umap:  # numba compiles UMAP once per process (~20-50 s): pay it before the first map
            threading.Thread(target=_warm_umap, name="dmlscope-umap-warmup", daemon=True).start()
        try:
            builtins = [store.ensure_builtin(name) for name in settings.builtin_datasets]
            if settings.demo_run and builtins and not store.list_runs():
                _queue_demo_run(store, jobs, builtins[0].id)
            yield
        finally:
            jobs.stop()
            explore.clear_caches()
            analysis.clear_caches()
            store.close()

    app = FastAPI(title="dmlscope", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Deep-metric-learning workbench API; see docs/api.md for the event stream and the "
                              "binary points layout.")
    app.state.settings = settings
    install_error_handlers(app)
    for module in (system, datasets, runs, explore, analysis, model_import):
        app.include_router(module.router)
    docs_csp = _mount_docs(app)
    _mount_frontend(app)
    if settings.api_token is not None:
        app.add_middleware(BearerAuth, token=settings.api_token.get_secret_value())
    app.add_middleware(SameOrigin, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_mb << 20)
    app.add_middleware(SecurityHeaders, docs_csp=docs_csp)  # outermost, so even 401/403/413 answers carry them
    return app


def _mount_docs(app: FastAPI) -> str:
    """Swagger UI at /docs from local assets; returns the CSP that lets exactly its scripts run."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    swagger = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API", oauth2_redirect_url=None,
                                  swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                  swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                  swagger_favicon_url="/static/favicon.svg")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return swagger

    inline = re.findall(rb"<script>(.*?)</script>", swagger.body, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(code).digest()).decode()}'" for code in inline)
    return DOCS_CSP.format(script_hash=hashes)


def _queue_demo_run(store: Store, jobs: JobManager, dataset_id: str) -> None:
    """A first visit should find a map to explore, not an empty run list: queue the default config once."""
    config = RunConfig()
    try:
        runs.check_fits(store, dataset_id, config)
    except BadRequest as exc:
        log.warning("no demo run: %s", exc)
        return
    jobs.submit(store.create_run(dataset_id, config, name="demo: triplet baseline").id)


def _mount_frontend(app: FastAPI) -> None:
    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(_plotly_js(), media_type="text/javascript", headers=no_cache)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(FRONTEND / "index.html", media_type="text/html", headers=no_cache)

    app.mount("/static", StaticFiles(directory=FRONTEND, check_dir=False), name="static")


def serve(settings: Settings) -> None:
    """Check the settings (a token off loopback), then run the server until interrupted. Used by `dmlscope serve`."""
    import uvicorn

    settings.check_serving()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU-feature probe at INFO
    print(f"dmlscope {__version__}: data in {settings.data_dir.resolve()}; "
          f"open http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    # SSE streams never end on their own: give them a few seconds, then shut down regardless.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, timeout_graceful_shutdown=3,
                log_level="info")
