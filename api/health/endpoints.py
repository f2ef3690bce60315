"""Liveness, readiness and metrics."""

import redis
from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text

from api.deps import ContextDep
from api.health.schemas import BrokerKind, Liveness, Readiness, ReadyOut
from api.problems import COMMON_PROBLEMS
from service.metrics import AUDITS_BY_STATUS, OPEN_CHALLENGES
from service.models import Audit, AuditStatus, Challenge, ChallengeStatus

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
def readyz(context: ContextDep, response: Response) -> ReadyOut:
    """Ready to serve: the database answers and, unless tasks run in-process, the broker too."""
    problems = [p for p in (_check_database(context), _check_broker(context)) if p]
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return ReadyOut(status=Readiness.UNAVAILABLE, problems=problems)
    return ReadyOut(
        status=Readiness.READY, broker=BrokerKind.EMBEDDED if context.settings.embedded else BrokerKind.REDIS
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(context: ContextDep) -> Response:
    """Prometheus text format; audit and challenge gauges are read from the database at scrape time."""
    try:
        with context.db.sessions() as session:
            rows = session.execute(select(Audit.status, func.count()).group_by(Audit.status)).all()
            counts = {audit_status: count for audit_status, count in rows}
            open_challenges = session.scalar(
                select(func.count()).select_from(Challenge).where(Challenge.status == ChallengeStatus.OPEN)
            )
        for audit_status in AuditStatus:
            AUDITS_BY_STATUS.labels(audit_status.value).set(counts.get(audit_status, 0))
        OPEN_CHALLENGES.set(open_challenges or 0)
    except Exception:
        pass  # a scrape still returns the process metrics while the database is down
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
