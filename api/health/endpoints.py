"""Liveness, readiness and metrics."""

import contextlib
import os
from datetime import timedelta
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from api.deps import ContextDep, CredentialsDep, unauthorized
from api.health.schemas import BrokerKind, Liveness, Readiness, ReadyOut
from api.problems import COMMON_PROBLEMS, problem_responses
from service.context import ServiceContext
from service.events import pending_count
from service.jobs import Queue
from service.metrics import (
    AUDITS_BY_STATUS,
    INTEGRITY_CHECKED,
    INTEGRITY_PROBLEMS,
    OPEN_CHALLENGES,
    PENDING_EVENTS,
    QUEUE_DEPTH,
    STALE_AUDITS,
    VERDICTS,
)
from service.models import (
    Audit,
    AuditEvent,
    AuditStatus,
    Challenge,
    ChallengeStatus,
    Outcome,
    Verdict,
    utcnow,
)
from service.security import constant_time_equal

router = APIRouter(tags=["health"], responses=COMMON_PROBLEMS)


@router.get("/healthz")
def healthz() -> Liveness:
    """The process is up (no dependency is checked)."""
    return Liveness()


def _check_database(context: ContextDep) -> str | None:
    try:
        with context.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}"
    return None


def _check_broker(context: ContextDep) -> str | None:
    if context.settings.broker_url is None:
        return None
    try:
        client = redis.Redis.from_url(context.settings.broker_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"broker: {type(exc).__name__}"
    return None


@router.get(
    "/readyz",
    responses={503: {"description": "the database or the broker is unreachable", "model": ReadyOut}},
)
def readyz(request: Request, context: ContextDep, response: Response) -> ReadyOut:
    """Ready to serve: warmed up (api/warmup.py), the database answers and, unless tasks run in-process,
    the broker too."""
    warming = None if request.app.state.warm else "warming up"
    problems = [p for p in (warming, _check_database(context), _check_broker(context)) if p]
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyOut(status=Readiness.UNAVAILABLE, problems=problems)
    return ReadyOut(
        status=Readiness.READY, broker=BrokerKind.EMBEDDED if context.settings.embedded else BrokerKind.REDIS
    )


async def require_metrics_reader(context: ContextDep, credentials: CredentialsDep) -> None:
    """/metrics tells how busy the service is and how many verdicts of each kind it issued: for the
    operator's scraper (COIN_METRICS_TOKEN) or the admin, not for anyone who can reach the port."""
    token = credentials.credentials if credentials is not None else ""
    readers = [context.settings.admin_token, context.settings.metrics_token]
    if not token or not any(
        reader is not None and constant_time_equal(token, reader.get_secret_value()) for reader in readers
    ):
        raise unauthorized("/metrics needs the metrics token (COIN_METRICS_TOKEN) or the admin token")


# kombu's Redis transport keeps a queue's messages in one list per priority step.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _broker_gauges(context: ServiceContext) -> None:
    if context.settings.broker_url is None:
        return
    client = redis.Redis.from_url(context.settings.broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        prefix = context.settings.broker_key_prefix
        for queue in Queue:
            depth = sum(int(client.llen(f"{prefix}{queue.value}{suffix}")) for suffix in _PRIORITY_SUFFIXES)
            QUEUE_DEPTH.labels(queue.value).set(depth)
    finally:
        client.close()


def _store_gauges(context: ServiceContext, session: Session) -> None:
    audits = dict(session.execute(select(Audit.status, func.count()).group_by(Audit.status)).all())
    for audit_status in AuditStatus:
        AUDITS_BY_STATUS.labels(audit_status.value).set(audits.get(audit_status, 0))
    stale = utcnow() - timedelta(seconds=context.settings.stale_after_seconds)
    STALE_AUDITS.set(
        session.scalar(
            select(func.count())
            .select_from(Audit)
            .where(
                Audit.status.in_([AuditStatus.PENDING, AuditStatus.VERIFYING]),
                func.coalesce(Audit.heartbeat_at, Audit.updated_at) < stale,
            )
        )
        or 0
    )
    OPEN_CHALLENGES.set(
        session.scalar(
            select(func.count()).select_from(Challenge).where(Challenge.status == ChallengeStatus.OPEN)
        )
        or 0
    )
    verdicts = dict(session.execute(select(Verdict.outcome, func.count()).group_by(Verdict.outcome)).all())
    for outcome in Outcome:
        VERDICTS.labels(outcome.value).set(verdicts.get(outcome, 0))
    PENDING_EVENTS.set(pending_count(session))
    checked = session.execute(
        select(AuditEvent.occurred_at, AuditEvent.payload)
        .where(AuditEvent.kind == "integrity.checked")
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    if checked is not None:
        INTEGRITY_PROBLEMS.set(checked.payload["problems"])
        INTEGRITY_CHECKED.set(checked.occurred_at.timestamp())


def _exposition() -> bytes:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **problem_responses(401)},
)
def metrics(context: ContextDep, _: Annotated[None, Depends(require_metrics_reader)]) -> Response:
    """Prometheus text format (bearer: COIN_METRICS_TOKEN or the admin token). The gauges of the store
    (audits, verdicts, pending events, the last integrity check) and of the broker (queue depth) are read
    at scrape time; with PROMETHEUS_MULTIPROC_DIR set, the counters of every process are summed."""
    for refresh in (_store_session_gauges, _broker_gauges):
        # A scrape still returns the process metrics while the database or the broker is down.
        with contextlib.suppress(Exception):
            refresh(context)
    return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)


def _store_session_gauges(context: ServiceContext) -> None:
    with context.db.sessions() as session:
        _store_gauges(context, session)
