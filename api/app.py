"""The FastAPI application: resources, problem details, middleware, metrics and the embedded scheduler."""

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import structlog
from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from api.auditor_info.endpoints import router as auditor_info
from api.audits.endpoints import router as audits
from api.challenges.endpoints import router as challenges
from api.dashboard.endpoints import STATIC as DASHBOARD_STATIC
from api.dashboard.endpoints import router as dashboard
from api.deps import QueryParameterCheck, provider_key_refusal
from api.health.endpoints import router as health
from api.limits import RequestLimits, limiter_for
from api.middleware import BodySizeLimit, RequestContext, RequestMetrics
from api.problems import add_problem_schemas, install_problem_handlers
from api.providers.endpoints import router as providers
from api.reports.endpoints import router as reports
from api.warmup import warm_up
from service.context import ServiceContext
from service.database import PoolLimits
from service.events import ChainWriter
from service.jobs import registered_jobs
from service.logging import configure_logging
from service.settings import Settings, get_settings

log = structlog.get_logger(__name__)

DESCRIPTION = """\
CoIn Audit: a third-party audit of the hidden reasoning tokens that LLM providers bill.

Providers submit one **report** per billed request (a commitment to the hidden trace) and get a signed
**receipt**; the auditor draws **challenges**, the provider answers with openings, and workers write a
signed **verdict**. Authenticate with `Authorization: Bearer <token>`.

Every error is an RFC 9457 problem (`application/problem+json`): 400 protocol violation, 401/403
credentials, 404 not found (also for another provider's resources), 409 conflict, 410 deadline passed,
408 body not sent in time, 413 body too large, 422 schema error (`errors` lists the fields), 429 rate
limit or quota (`Retry-After`), 503 store unavailable.
"""


def run_periodic_jobs(context: ServiceContext, names: Collection[str] | None = None) -> None:
    """What celery beat does with a broker: every job that has a period (of `names`, if given), once."""
    for job in registered_jobs().values():
        if job.every is not None and (names is None or job.name in names):
            job(context)


async def _embedded_scheduler(context: ServiceContext) -> None:
    """Each periodic job every its own period (the integrity check hourly, not at the sweeper's pace)."""
    periodic = [job for job in registered_jobs().values() if job.every is not None]
    next_run = {job.name: time.monotonic() + job.every(context.settings) for job in periodic if job.every}
    while True:
        await asyncio.sleep(max(0.0, min(next_run.values()) - time.monotonic()))
        now = time.monotonic()
        due = {name for name, at in next_run.items() if at <= now}
        for job in periodic:
            if job.name in due and job.every is not None:
                next_run[job.name] = now + job.every(context.settings)
        try:
            await to_thread.run_sync(run_periodic_jobs, context, due)
        except Exception:
            log.exception("jobs.periodic_failed")


def create_app(settings: Settings | None = None, context: ServiceContext | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    context = context or ServiceContext.from_settings(settings)

    limiter = limiter_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.embedded:  # jobs run in this process, so it verifies: load the models now
            from service.audits.verification import preload_models

            await asyncio.to_thread(preload_models, settings)
        await warm_up(context, limiter, PoolLimits().size)
        app.state.warm = True
        # Everything loaded so far (torch and the models) lives as long as the process. Frozen, the
        # collector stops traversing it: a full collection would otherwise pause every request in flight
        # while it walks them, which is the latency tail under load (docs/benchmarks.md, measured once).
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
            await limiter.close()
            context.close()

    tags = [
        {"name": "providers", "description": "providers and API keys (auditor admin)"},
        {"name": "reports", "description": "one report per billed request; signed receipts"},
        {"name": "audits", "description": "audits and their signed verdicts"},
        {"name": "challenges", "description": "what a provider must open, and its answers"},
        {"name": "auditor", "description": "the auditor's public key and parameters"},
        {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
    ]
    app = FastAPI(
        title="CoIn Audit",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=tags,
        dependencies=[Depends(QueryParameterCheck())],  # an unknown query parameter is a 422
    )
    app.state.context = context
    app.state.warm = False  # /readyz: not before the lifespan's warm-up
    for router in (providers, reports, audits, challenges, auditor_info, health, dashboard):
        app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=DASHBOARD_STATIC), name="dashboard-static")
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_response_bytes=settings.max_response_bytes,
        read_timeout=settings.body_read_timeout_seconds,
        provider_refusal=provider_key_refusal,
    )
    app.add_middleware(RequestLimits, settings=settings, limiter=limiter)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestContext)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=tags,
            )
            app.openapi_schema = add_problem_schemas(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
