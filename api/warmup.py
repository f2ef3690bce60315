"""Warm-up before serving: the first requests after a restart must cost what the thousandth does.

Measured before this existed (100 reports/s right after a restart): p50 1–1.5 s and p99 up to 10 s for
20 s. The first report hashed the 87 MB embedding weights for `embd_id` (once per process), each of the
pool's connections was opened by a request, and every code path (validation, canonical JSON, signing,
the chain's MACs) ran cold; the requests that queued behind those then took seconds to drain. The
lifespan runs this before uvicorn accepts a connection, and /readyz says ready only after it.
"""

import base64
import uuid
from contextlib import ExitStack
from typing import Any

import structlog
from anyio import to_thread
from sqlalchemy import text

from api.limits import Bucket, Limiter
from api.reports.schemas import ReportIn
from auditor.protocol.tokenize import known_tokenizers
from service.context import ServiceContext
from service.events import row_digest
from service.models import Provider
from service.reports.service import (
    REPORT_ROW_FIELDS,
    accepted_embd_id,
    new_report,
    normalised_report,
    report_digest,
    validate_report,
)
from service.security import verify_signature

log = structlog.get_logger(__name__)


def _sample_report() -> dict[str, Any]:
    return {
        "request_id": "warm-up",
        "model": "warm-up",
        "usage": {"input_tokens": 1, "output_tokens": 32, "reasoning_tokens": 32},
        "commitment": {
            "version": "coin/1",
            "root": "00" * 32,
            "size": 32,
            "block_size": 16,
            "embd_id": accepted_embd_id(),
            "tokenizer_id": known_tokenizers()[0],
        },
        "answer": {"digest": "00" * 32, "embedding": base64.b64encode(bytes(384)).decode()},
    }


def _intake_paths(context: ServiceContext) -> None:
    """A report through everything intake does, storing nothing."""
    body = normalised_report(ReportIn.model_validate(_sample_report()).model_dump(mode="json"))
    validate_report(body, Provider(public_key=None), max_response_bytes=context.settings.max_response_bytes)
    row = new_report(
        context.signer,
        uuid.uuid4(),
        body,
        report_digest(body),
        retention_days=context.settings.retention_days,
    ).row
    row_digest(row, REPORT_ROW_FIELDS)
    verify_signature(context.signer.public_key_hex, row["receipt"]["receipt"], row["receipt"]["signature"])


def _connections(context: ServiceContext, count: int) -> None:
    """Open `count` pooled connections at once (held together, or the pool would hand one back and forth)."""
    with ExitStack() as held:
        for _ in range(count):
            held.enter_context(context.db.engine.connect()).execute(text("SELECT 1"))


async def warm_up(context: ServiceContext, limiter: Limiter, connections: int) -> None:
    """Run every cold path once and open `connections` pooled connections at once. A dependency that is
    down is left to /readyz to report: warming up never stops the process from starting."""
    try:
        await to_thread.run_sync(_intake_paths, context)
        await to_thread.run_sync(_connections, context, connections)
        await limiter.take([Bucket("warm-up", 0.0, 1.0)])
    except Exception:
        log.warning("api.warm_up_incomplete", exc_info=True)
