"""The FastAPI application: routers, error handlers, security middleware, the static frontend, and `serve`."""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from models.config import RunConfig
from models.errors import InvalidInput
from server import __version__, lifecycle
from server.errors import ERROR_RESPONSES, install_error_handlers
from server.explorer import Explorer
from server.folder_lock import ServerLock
from server.import_jobs import ImportJobs
from server.imports import ensure_builtin
from server.jobs import JobManager
from server.middleware import AllowedHosts, BearerAuth, BodyLimit, SameOrigin, SecurityHeaders
from server.routes import (analysis, configs, datasets, embeddings_import, explore, model_import, run_groups, runs,
                           sweeps, system, weights)
from server.settings import Settings, is_loopback
from server.store import Store
from server.sweeps import SweepManager

log = logging.getLogger("dmlscope")
FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
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


def create_app(settings: Settings | None = None, server_lock: ServerLock | None = None) -> FastAPI:
    """The app for `settings`; the store opens and the job workers start with the app's lifespan, which takes
    the data folder's server lock unless the caller (`serve`) already holds it."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as held:  # undone in reverse, also when start-up fails half-way: store, then lock
            if server_lock is None:
                held.callback(ServerLock(settings.data_dir).release)  # before anything touches the folder
            store = Store.open(settings)
            held.callback(store.close)
            jobs = JobManager(store, settings)
            sweep_manager = SweepManager(store, jobs, settings)
            imports = ImportJobs(store, settings)
            app.state.store, app.state.jobs, app.state.sweeps = store, jobs, sweep_manager
            app.state.explorer = Explorer(store)
            app.state.imports = imports
            with store.folder.alone() as alone:
                if not alone:
                    log.warning("a dmlscope command is writing to %s: the start-up cleanup (half-written uploads, "
                                "runs left running) is skipped until the next start", settings.data_dir.resolve())
                failed_imports = store.mark_interrupted_imports()
                leftovers = store.remove_leftovers()
                sweep_manager.start()  # before the workers: a stopped sweep's queued runs are cancelled, not started
                interrupted = jobs.start()
            if leftovers:
                log.warning("removed what the last server process left half-written: %s", ", ".join(leftovers))
            if interrupted:
                log.warning("runs interrupted by the last shutdown (resume them): %s", ", ".join(interrupted))
            if failed_imports:
                log.warning("imports interrupted by the last shutdown (upload them again): %s",
                            ", ".join(failed_imports))
            imports.start()
            try:
                # The built-in sets first: their import (scikit-learn's digits) must not race the warm-up thread's
                # import of umap → scikit-learn, which once left a half-initialised module in the other thread.
                builtins = [ensure_builtin(store, name) for name in settings.builtin_datasets]
                if settings.warm_umap:  # numba compiles UMAP once per process (~20-50 s): pay it before a map
                    threading.Thread(target=_warm_umap, name="dmlscope-umap-warmup", daemon=True).start()
                if settings.demo_run and builtins and builtins[0].state == "ready" and not store.list_runs():
                    _queue_demo_run(store, jobs, builtins[0].id)
                yield
            finally:
                sweep_manager.stop()  # first: runs the job manager interrupts now are not sweep failures
                jobs.stop()
                imports.stop()
                app.state.explorer.clear()

    app = FastAPI(title="dmlscope", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  responses=ERROR_RESPONSES,
                  description="Deep-metric-learning workbench API; see docs/api.md for the event stream and the "
                              "binary points layout.")
    app.state.settings = settings
    install_error_handlers(app)
    for module in (system, configs, datasets, runs, run_groups, sweeps, explore, analysis, model_import, weights,
                   embeddings_import):
        app.include_router(module.router)
    docs_csp = _mount_docs(app)
    _mount_frontend(app)
    if settings.api_token is not None:
        app.add_middleware(BearerAuth, token=settings.api_token.get_secret_value())
    app.add_middleware(SameOrigin, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_mb << 20, stall_s=settings.body_timeout_s)
    app.add_middleware(AllowedHosts, allowed=settings.allowed_host_names())
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
        rec = lifecycle.record(store, dataset_id, config, name="demo: triplet baseline")
    except InvalidInput as exc:
        log.warning("no demo run: %s", exc)
        return
    jobs.submit(rec.id)


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
    server_lock = ServerLock(settings.data_dir)  # refuses, touching nothing, while another server has the folder
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU-feature probe at INFO
    print(f"dmlscope {__version__}: data in {settings.data_dir.resolve()}; "
          f"open http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    if not is_loopback(settings.host):
        print(f"answering to host names {', '.join(sorted(settings.allowed_host_names()))} only; add the names "
              f"clients use to reach it with --allowed-hosts (DMLSCOPE_ALLOWED_HOSTS)", flush=True)
    # SSE streams never end on their own: give them a few seconds, then shut down regardless.
    try:
        uvicorn.run(create_app(settings, server_lock), host=settings.host, port=settings.port,
                    timeout_graceful_shutdown=3, log_level="info")
    finally:
        server_lock.release()
