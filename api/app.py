"""The FastAPI application: routers, error mapping, body-size limit, metrics and the embedded scheduler."""

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import ServiceContext
from api.deps import key_refusal
from api.errors import ServiceError
from api.events import ChainWriter, link_pending_events
from api.metrics import HTTP_LATENCY, HTTP_REQUESTS
from api.routers import auditor, audits, challenges, health, providers, reports
from api.settings import Settings, get_settings
from auditor.errors import ProtocolError
from workers import jobs

log = logging.getLogger(__name__)

DESCRIPTION = """\
CoIn Audit: a third-party audit of the hidden reasoning tokens that LLM providers bill.

Providers submit one **report** per billed request (a commitment to the hidden trace) and get a signed
**receipt**; the auditor draws **challenges**, the provider answers with openings, and workers write a
signed **verdict**. Authenticate with `Authorization: Bearer <token>`.

Errors: 400 protocol violation, 401/403 credentials, 404 not found (also for another provider's
resources), 409 conflict, 410 deadline passed, 413 body too large, 422 schema error (field-level).
"""


class BodySizeLimit:
    """Answer 413 for a body above `max_bytes`, declared or streamed, before any endpoint sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response(scope, receive, send)


class RequestMetrics:
    """Count and time every request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def capture(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], route, str(status_code)).inc()
            HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


# What an overloaded or unreachable store asks clients to wait before they retry, in seconds.
RETRY_AFTER_SECONDS = 1


def _error(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _unavailable(detail: str) -> JSONResponse:
    return _error(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = await key_refusal(request)
        if refusal is not None:
            return _error(refusal.status_code, refusal.detail, headers=dict(refusal.headers or {}))
        # Field-level messages without echoing the input back.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, exc.message)

    @app.exception_handler(ProtocolError)
    async def protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
        return _error(status.HTTP_400_BAD_REQUEST, f"protocol violation: {exc}")

    @app.exception_handler(IntegrityError)
    async def integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error (a concurrent write won): %s", exc.orig)
        return _error(status.HTTP_409_CONFLICT, "a concurrent request changed the same resource; retry")

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        return _unavailable("the audit store is unavailable; retry later")

    @app.exception_handler(PoolTimeout)
    async def overloaded(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection stayed busy for the whole pool timeout: more requests are in flight
        # than the store can serve. Shedding them is the answer, not an internal error.
        log.warning("no database connection free in time: %s", exc)
        return _unavailable("the service is overloaded; retry later")

    @app.exception_handler(Exception)
    async def last_resort(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def run_periodic_jobs(context: ServiceContext) -> None:
    """What celery beat does with a broker: expire overdue challenges, re-enqueue stuck audits."""
    link_pending_events(context.db)
    jobs.expire_challenges(context)
    jobs.sweep_audits(context)


async def _embedded_scheduler(context: ServiceContext) -> None:
    period = min(context.settings.expire_interval_seconds, context.settings.sweep_interval_seconds)
    while True:
        await asyncio.sleep(period)
        try:
            await to_thread.run_sync(run_periodic_jobs, context)
        except Exception:
            log.exception("embedded periodic jobs failed; retrying next period")


def create_app(settings: Settings | None = None, context: ServiceContext | None = None) -> FastAPI:
    settings = settings or get_settings()
    context = context or ServiceContext.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.embedded:  # tasks run in this process, so it verifies: load the models now
            from workers.jobs import preload_models

            await asyncio.to_thread(preload_models, context)
        # Everything loaded so far (torch and the models: ~300 k objects) lives as long as the process.
        # Frozen, the collector stops traversing it: a full collection would otherwise pause every
        # request in flight for ~150 ms, which is the whole latency tail under load.
        gc.collect()
        gc.freeze()
        scheduler = asyncio.create_task(_embedded_scheduler(context)) if settings.embedded else None
        chain_writer = ChainWriter(context.db)
        chain_writer.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.cancel()
            await asyncio.to_thread(chain_writer.stop)
            context.close()

    app = FastAPI(
        title="CoIn Audit",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "providers", "description": "providers and API keys (auditor admin)"},
            {"name": "reports", "description": "one report per billed request; signed receipts"},
            {"name": "audits", "description": "audits and their signed verdicts"},
            {"name": "challenges", "description": "what a provider must open, and its answers"},
            {"name": "auditor", "description": "the auditor's public key and parameters"},
            {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
        ],
    )
    app.state.context = context
    for module in (providers, reports, audits, challenges, auditor, health):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
