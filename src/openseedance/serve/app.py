"""The FastAPI application: both APIs, result files, the web page, and the server's background
loops (housekeeping: dead workers, lost jobs, expired results; and callback delivery)."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openseedance import engines
from openseedance.engines import Capabilities
from openseedance.serve import ark, live, openai_api, openapi, web
from openseedance.serve.api import ApiError, ServeSettings, Service
from openseedance.serve.bounds import Refused
from openseedance.serve.callbacks import Callbacks
from openseedance.serve.files import file_response
from openseedance.serve.jobs import JobStore
from openseedance.serve.worker import WorkerPool

log = logging.getLogger("openseedance.serve")

_FILES = ("video.mp4", "last_frame.png", "thumbnail.jpg", "spritesheet.jpg")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _error(request_path: str, status: int, code: str, message: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    shape = openai_api.error if request_path.startswith("/v1/") or request_path == "/v1" else ark.error
    return shape(status, code, message, param, headers)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = _error(path, 413, "RequestTooLarge", f"the request body is over the {self.limit} byte limit")
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, "RequestTooLarge", f"the request body is over the {self.limit} byte limit")
            return message

        await self.app(scope, limited, send)


class Every(threading.Thread):
    """Call `fn` every `interval` s until closed, surviving its failures (a locked file, a full disk)."""

    def __init__(self, interval: float, fn: Callable[[], object], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.interval, self.fn = interval, fn
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.fn()
            except Exception:
                log.exception("%s failed", self.name)

    def close(self) -> None:
        self._halt.set()
        self.join(10.0)


def housekeeping(service: Service, pool: WorkerPool | None) -> None:
    """Replace dead workers, re-queue lost jobs, expire overdue ones, delete results past their time."""
    s, store = service.settings, service.store
    if pool is not None:
        pool.check()
    for job_id in store.reap(s.stale_after, s.max_attempts):
        log.warning("reaped %s", job_id)
    for job in store.expired_results(time.time()):
        folder = service.folder(job.id)
        for name in (job.result or {}).get("files", {}).values():
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / "inputs", ignore_errors=True)
        store.set_result(job.id, {**job.result, "files": None})


def create_app(settings: ServeSettings, card: Capabilities | None = None, store: JobStore | None = None) -> FastAPI:
    """The HTTP app; it checks requests against the model's card (read from the model folder without
    loading weights), and its workers, separate processes, load the model."""
    store = store or settings.open_store()
    service = Service(settings, store, card or engines.read_card(settings.model))
    callbacks = Callbacks(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = WorkerPool(settings, store) if settings.workers > 0 else None
        if pool is not None:
            pool.start()
        app.state.pool = pool
        loops = [Every(min(1.0, settings.heartbeat), lambda: housekeeping(service, pool), "housekeeping"),
                 Every(0.5, callbacks.deliver, "callbacks")]  # fmt: skip
        for loop in loops:
            loop.start()
        try:
            yield
        finally:
            for loop in loops:
                loop.close()
            if pool is not None:
                pool.close()

    app = FastAPI(title="Open-Seedance", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.pool = None
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(ark.router)
    app.include_router(openai_api.router)
    app.include_router(web.router)
    app.include_router(live.router)

    def described() -> dict[str, Any]:  # the routes read their own bodies: their description is written by hand
        if app.openapi_schema is None:
            app.openapi_schema = openapi.document(app, service.card)
        return app.openapi_schema

    app.openapi = described

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(request.url.path, e.status, e.code, e.message, e.param, e.headers)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return _error(request.url.path, 400, "InvalidParameter", e.message, e.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(request.url.path, 400, "InvalidParameter", f"{where}: {first.get('msg', 'invalid')}", where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "BadRequest")
        return _error(request.url.path, e.status_code, code, str(e.detail), headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(request.url.path, 500, "InternalServiceError", "the server failed on this request")

    @app.api_route("/files/{job_id}/{name}", methods=["GET", "HEAD"])
    async def files(job_id: str, name: str, request: Request) -> Response:
        """Finished clips: the job id (random, 96 bits) is the capability, as with a signed URL."""
        found = None
        if name in _FILES and _JOB_ID.fullmatch(job_id):
            found = file_response(service.folder(job_id) / name, request.headers.get("range"),
                                  head=request.method == "HEAD")  # fmt: skip
        if found is None:
            raise ApiError(404, "NotFound", "no such file (it may have expired)")
        return found

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Up or not, and how many workers run (their process ids are nobody's business)."""
        pool = app.state.pool
        return {"status": "ok", "workers": len(pool.pids()) if pool else 0}

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("openseedance.serve").joinpath("static/index.html").read_text())

    return app
