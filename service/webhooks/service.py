"""Webhooks to the auditor's staff: a failed audit, a provider alarm (COIN_WEBHOOK_URL; unset: none).

A notification is a row (`webhook_deliveries`), written in the transaction of the event it announces
and unique per (event, URL), so an event recorded twice is sent once. The job `coin.webhooks.deliver`
sends what is due — right after that commit, and every sweep period for the retries — and records
every attempt (`webhook_attempts`: the status code or the error, and when the next one is due). A
failed attempt is retried after `webhook_backoff_seconds`, doubled each time, until
`webhook_max_attempts`; then the delivery is given up (`failed`). A worker that dies mid-send leaves
the delivery claimed only for a lease, after which it is sent again: delivery is at least once, and a
receiver deduplicates on `X-Coin-Delivery`.

Each POST carries the RFC 8785 canonical JSON of the body and

    X-Coin-Delivery: <delivery id>     X-Coin-Event: <kind>
    X-Coin-Timestamp: <unix seconds>   X-Coin-Signature: sha256=<HMAC-SHA256(secret, timestamp "." body)>

A receiver recomputes the signature with COIN_WEBHOOK_SECRET and refuses a timestamp more than a few
minutes old (a replay).
"""

import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditor.protocol.encoding import canonical_json
from service.database import insert_rows
from service.jobs import job
from service.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, utcnow
from service.security import webhook_signature

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)

# Deliveries one run sends; the next run (a sweep period later) takes the rest.
BATCH = 50
# Kept of a receiver's error or an exception, per attempt.
MAX_ERROR_CHARS = 500


def notify(
    session: Session,
    context: "ServiceContext",
    kind: str,
    key: str,
    data: dict[str, Any],
    *,
    provider_id: uuid.UUID | None = None,
) -> None:
    """Queue the webhook `kind` about `key` (what makes the event unique, e.g. an audit id) with the
    caller's transaction; sent once it has committed. Nothing without COIN_WEBHOOK_URL."""
    url = context.settings.webhook_url
    if url is None:
        return
    now = utcnow()
    delivery_id = uuid.uuid4()
    body = {
        "id": str(delivery_id),
        "kind": kind,
        "occurred_at": now.isoformat(timespec="microseconds"),
        "provider_id": None if provider_id is None else str(provider_id),
        "data": data,
    }
    row = {
        "id": delivery_id,
        "event_key": f"{kind}:{key}",
        "kind": kind,
        "provider_id": provider_id,
        "url": url,
        "body": body,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "last_status_code": None,
        "last_error": None,
        "created_at": now,
        "delivered_at": None,
    }
    if insert_rows(session, WebhookDelivery, [row], skip_conflicts_on=["event_key", "url"]):
        context.dispatcher.enqueue(session, deliver_webhooks)


def _claim(context: "ServiceContext") -> tuple[uuid.UUID, str, str, dict[str, Any], int] | None:
    """The next due delivery, claimed for a lease (its next attempt moved past the time one send can
    take), so that a concurrent run does not send it too. One at a time: a lease taken for a whole batch
    would run out while the batch's first sends wait on a slow receiver."""
    now = utcnow()
    with context.db.unit_of_work() as session:
        delivery = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if delivery is None:
            return None
        delivery.next_attempt_at = now + timedelta(seconds=2 * context.settings.webhook_timeout_seconds)
        return delivery.id, delivery.kind, delivery.url, delivery.body, delivery.attempts + 1


def _send(
    context: "ServiceContext",
    client: httpx.Client,
    delivery_id: uuid.UUID,
    kind: str,
    url: str,
    body: dict[str, Any],
) -> tuple[int | None, str | None]:
    """POST one delivery: (status code, None) on an answer, (None, error) when there was none."""
    secret = context.settings.webhook_secret
    assert secret is not None  # the settings refuse a URL without a secret
    payload = canonical_json(body)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Coin-Delivery": str(delivery_id),
        "X-Coin-Event": kind,
        "X-Coin-Timestamp": str(timestamp),
        "X-Coin-Signature": webhook_signature(secret.get_secret_value(), timestamp, payload),
    }
    try:
        response = client.post(url, content=payload, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    error = None if response.is_success else response.text[:MAX_ERROR_CHARS]
    return response.status_code, error


def _record(
    context: "ServiceContext",
    delivery_id: uuid.UUID,
    number: int,
    started: datetime,
    seconds: float,
    status_code: int | None,
    error: str | None,
) -> None:
    settings = context.settings
    delivered = status_code is not None and 200 <= status_code < 300
    given_up = not delivered and number >= settings.webhook_max_attempts
    next_attempt = None
    if not delivered and not given_up:
        next_attempt = utcnow() + timedelta(seconds=settings.webhook_backoff_seconds * 2 ** (number - 1))
    with context.db.unit_of_work() as session:
        delivery = session.get_one(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery.attempts >= number:
            # A send that outlasted its lease: another run claimed the delivery again and recorded this
            # attempt first (the receiver dedupes on X-Coin-Delivery).
            log.warning("webhook.attempt_already_recorded", delivery_id=str(delivery_id), attempt=number)
            return
        session.add(
            WebhookAttempt(
                delivery_id=delivery_id,
                number=number,
                attempted_at=started,
                status_code=status_code,
                error=error,
                seconds=seconds,
                next_attempt_at=next_attempt,
            )
        )
        delivery.attempts = number
        delivery.last_status_code = status_code
        delivery.last_error = error
        delivery.next_attempt_at = next_attempt
        if delivered:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = utcnow()
        elif given_up:
            delivery.status = DeliveryStatus.FAILED
    fields = {"delivery_id": str(delivery_id), "attempt": number, "status_code": status_code}
    if delivered:
        log.info("webhook.delivered", **fields)
    elif given_up:
        log.error("webhook.gave_up", error=error, **fields)
    else:
        log.warning("webhook.retry", error=error, next_attempt_at=next_attempt, **fields)


@job("coin.webhooks.deliver", every=lambda settings: settings.sweep_interval_seconds)
def deliver_webhooks(context: "ServiceContext") -> int:
    """Send the webhook deliveries that are due (at most `BATCH` a run), and record each attempt; returns
    how many were sent."""
    claimed, sent = _claim(context), 0
    if claimed is None:
        return 0
    with httpx.Client(timeout=context.settings.webhook_timeout_seconds, follow_redirects=False) as client:
        while claimed is not None:
            delivery_id, kind, url, body, number = claimed
            started = utcnow()
            clock = time.perf_counter()
            status_code, error = _send(context, client, delivery_id, kind, url, body)
            _record(context, delivery_id, number, started, time.perf_counter() - clock, status_code, error)
            sent += 1
            claimed = _claim(context) if sent < BATCH else None
    return sent
