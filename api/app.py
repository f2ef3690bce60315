"""The FastAPI application: resources, problem details, middleware, metrics and the embedded scheduler."""

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from anyio import to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.auditor_info.endpoints import router as auditor_info
from api.audits.endpoints import router as audits
from api.challenges.endpoints import router as challenges
from api.health.endpoints import router as health
from api.middleware import BodySizeLimit, RequestContext, RequestMetrics
from api.problems import add_problem_schemas, install_problem_handlers
from api.providers.endpoints import router as providers
from api.reports.endpoints import router as reports
from service.context import ServiceContext
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
413 body too large, 422 schema error (`errors` lists the fields), 429 quota, 503 store unavailable.
"""


def run_periodic_jobs(context: ServiceContext) -> None:
    """What celery beat does with a broker: every job that has a period, once."""
    for job in registered_jobs().values():
        if job.every is not None:
            job(context)


async def _embedded_scheduler(context: ServiceContext) -> None:
    periods = [job.every(context.settings) for job in registered_jobs().values() if job.every is not None]
    while True:
        await asyncio.sleep(min(periods))
        try:
            await to_thread.run_sync(run_periodic_jobs, context)
        except Exception:
            log.exception("jobs.periodic_failed")


def create_app(settings: Settings | None = None, context: ServiceContext | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    context = context or ServiceContext.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.embedded:  # jobs run in this process, so it verifies: load the models now
            from service.audits.verification import preload_models

            await asyncio.to_thread(preload_models, settings)
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

    tags = [
        {"name": "providers", "description": "providers and API keys (auditor admin)"},
        {"name": "reports", "description": "one report per billed request; signed receipts"},
        {"name": "audits", "description": "audits and their signed verdicts"},
        {"name": "challenges", "description": "what a provider must open, and its answers"},
        {"name": "auditor", "description": "the auditor's public key and parameters"},
        {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
    ]
    app = FastAPI(
        title="CoIn Audit", version="1.0.0", description=DESCRIPTION, lifespan=lifespan, openapi_tags=tags
    )
    app.state.context = context
    for router in (providers, reports, audits, challenges, auditor_info, health):
        app.include_router(router)
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
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
