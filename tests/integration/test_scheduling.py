"""Scheduled verification and provider monitoring on the real stack (Issue 13): the keyed draw run twice
at once and twice in a row, a failing provider escalated, alarmed and notified by signed, retried
webhooks, and back at base after a clean run; the policy API and the `coin policy` and `coin calibrate`
commands."""

import dataclasses
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from auditor.cli import build_app
from auditor.protocol.copies import COPY_RULE
from service.audits.workflow import exposure_plan
from service.context import ServiceContext
from service.database import Database, make_engine
from service.events import verify_chain
from service.migrate import alembic_config, upgrade_database
from service.models import (
    Audit,
    AuditEvent,
    AuditTrigger,
    Challenge,
    DeliveryStatus,
    EscalationReason,
    MonitorCalibration,
    Outcome,
    PolicyLevel,
    Report,
    SamplingPolicy,
    ScheduledDraw,
    Verdict,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)
from service.monitoring.calibration import copy_rule_json, shipped_calibration
from service.scheduling import draws
from service.scheduling.draws import MINIMUM_POOL, draw_for_provider, draw_scheduled_audits, utc_day
from service.security import score_below, webhook_signature
from service.settings import get_settings
from service.webhooks.service import _claim, _record, deliver_webhooks, notify
from tests.integration.support import (
    ADMIN,
    TEST_ENV,
    CommittedRequest,
    MakeProvider,
    MakeRequest,
    ProviderAccount,
    WorkerProcess,
    answer_until_verdict,
    bearer,
    decide,
    open_audit,
    respond,
    service_context,
    submit_report,
    wait_for,
    wait_for_challenge,
    wait_for_verdict,
)

SECRET = TEST_ENV["COIN_WEBHOOK_SECRET"]
SETTLE = float(TEST_ENV["COIN_SCHEDULE_SETTLE_SECONDS"])


def _put_policy(client: TestClient, provider_id: str, **terms: Any) -> dict[str, Any]:
    response = client.put(f"/v1/providers/{provider_id}/policy", json=terms, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _kinds(database: Database, provider_id: str) -> list[str]:
    with database.unit_of_work() as session:
        return list(
            session.scalars(
                select(AuditEvent.kind)
                .where(AuditEvent.provider_id == uuid.UUID(provider_id))
                .order_by(AuditEvent.seq)
            )
        )


def test_the_policy_api_is_the_admins_and_checks_its_terms(
    client: TestClient, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    path = f"/v1/providers/{provider.id}/policy"
    missing = client.get(path, headers=ADMIN)
    assert missing.status_code == 404 and "not audited on a schedule" in missing.json()["detail"]
    assert client.put(path, json={"domain": "math", "share": 0.1, "min_per_day": 1}, headers=provider.headers).status_code == 403  # fmt: skip
    wrong = client.put(path, json={"domain": "math", "share": 0.5, "min_per_day": 1, "escalated_share": 0.2}, headers=ADMIN)  # fmt: skip
    assert wrong.status_code == 400 and "escalated_share" in wrong.json()["detail"]
    assert client.put(path, json={"domain": "Math!", "share": 0.1, "min_per_day": 1}, headers=ADMIN).status_code == 422  # fmt: skip
    policy = _put_policy(client, provider.id, domain="math", share=0.1, min_per_day=2)
    assert (policy["level"], policy["escalated_share"], policy["escalated_min_per_day"]) == ("base", 0.4, 8)
    assert (policy["effective_share"], policy["retention_days"]) == (0.1, 30)
    assert client.get(path, headers=ADMIN).json() == policy
    standing = client.get(f"/v1/providers/{provider.id}/standing", headers=ADMIN).json()
    assert (standing["audits"], standing["e_value"], standing["alarm"]) == (0, 1.0, None)
    assert standing["calibration"] == "shipped" and standing["token_share_interval"] == [0.0, 1.0]
    assert client.get(f"/v1/providers/{uuid.uuid4()}/policy", headers=ADMIN).status_code == 404
    auditor = client.get("/v1/auditor").json()
    assert (auditor["receipt_version"], auditor["verdict_version"]) == ("coin-receipt/3", "coin-verdict/3")
    assert auditor["retention_days"] == 30


def _expected_draws(
    context: ServiceContext,
    database: Database,
    provider_id: str,
    share: float,
    minimum: int,
    pool: int = MINIMUM_POOL,
) -> set[uuid.UUID]:
    """The reports the draw's rule picks, recomputed from the key: share draws under each report's day
    key, then the lowest scores of the day up to the minimum, among the first `pool` reports in id order
    from the day's starting point."""
    key = context.schedule_key
    with database.unit_of_work() as session:
        reports = session.execute(
            select(Report.id, Report.received_at).where(Report.provider_id == uuid.UUID(provider_id))
        ).all()
    drawn = {rid for rid, at in reports if score_below(key.score(utc_day(at), rid), share)}
    today = utc_day(utcnow())
    start, ids = key.pool_start(today), sorted(rid for rid, _ in reports)
    pooled = ([rid for rid in ids if rid >= start] + [rid for rid in ids if rid < start])[:pool]
    rest = sorted((key.score(today, rid), rid) for rid in pooled if rid not in drawn)
    return drawn | {rid for _, rid in rest[: max(0, minimum - len(drawn))]}


def test_the_minimum_draws_pool_starts_at_the_days_keyed_point_not_at_the_latest_reports(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    worker_process: WorkerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool of the most recent reports let a provider fill it with honest ones sent just before the
    draw; the pool is now the ids that follow the day's keyed point, whenever the reports came."""
    worker_process.stop()  # its beat would draw too: here the draws are this test's own
    monkeypatch.setattr(draws, "MINIMUM_POOL", 3)
    context = service_context(client)
    provider = make_provider()
    _put_policy(client, provider.id, domain="math", share=0.0, min_per_day=2)
    for i in range(8):
        submit_report(client, provider, make_request(i))
    time.sleep(SETTLE + 0.2)
    assert draw_for_provider(context, uuid.UUID(provider.id), utcnow()) == 2
    with database.unit_of_work() as session:
        drawn = set(
            session.scalars(
                select(ScheduledDraw.report_id).where(ScheduledDraw.provider_id == uuid.UUID(provider.id))
            )
        )
    assert drawn == _expected_draws(context, database, provider.id, 0.0, 2, pool=3)


def test_one_providers_failing_draw_does_not_stop_the_others(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    worker_process: WorkerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker_process.stop()  # its beat would draw too: here the draws are this test's own
    context = service_context(client)
    providers = sorted((make_provider() for _ in range(2)), key=lambda p: uuid.UUID(p.id))
    for index, provider in enumerate(providers):
        _put_policy(client, provider.id, domain="math", share=1.0, min_per_day=0)
        submit_report(client, provider, make_request(index))
    time.sleep(SETTLE + 0.2)
    broken = uuid.UUID(providers[0].id)  # drawn first
    real_candidates = draws._candidates

    def fails_for_one(session: Any, context: Any, policy: Any, *args: Any) -> Any:
        if policy.provider_id == broken:
            raise RuntimeError("this provider's draw breaks")
        return real_candidates(session, context, policy, *args)

    monkeypatch.setattr(draws, "_candidates", fails_for_one)
    with pytest.raises(draws.DrawFailed, match="1 of 2 providers"):
        draw_scheduled_audits(context)

    def drawn_of(provider: ProviderAccount) -> int:
        with database.unit_of_work() as session:
            return len(
                session.scalars(
                    select(ScheduledDraw).where(ScheduledDraw.provider_id == uuid.UUID(provider.id))
                ).all()
            )

    assert [drawn_of(p) for p in providers] == [0, 1]
    monkeypatch.setattr(draws, "_candidates", real_candidates)
    assert draw_scheduled_audits(context) == 1  # the next run draws it
    assert [drawn_of(p) for p in providers] == [1, 1]


def test_a_draw_run_twice_at_once_or_in_a_row_opens_one_audit_per_drawn_report(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    worker_process: WorkerProcess,
) -> None:
    worker_process.stop()  # its beat would draw too: here the draws are this test's own
    context = service_context(client)
    provider = make_provider()
    _put_policy(client, provider.id, domain="math", share=0.5, min_per_day=3)
    receipts = [submit_report(client, provider, make_request(i)) for i in range(8)]
    assert {r["receipt"]["version"] for r in receipts} == {"coin-receipt/3"}
    assert {r["receipt"]["retention_days"] for r in receipts} == {30}
    time.sleep(SETTLE + 0.2)

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(draw_scheduled_audits(context))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results += [draw_scheduled_audits(context), draw_scheduled_audits(context)]

    expected = _expected_draws(context, database, provider.id, 0.5, 3)
    with database.unit_of_work() as session:
        draws = session.scalars(
            select(ScheduledDraw).where(ScheduledDraw.provider_id == uuid.UUID(provider.id))
        ).all()
        audits = session.scalars(select(Audit).where(Audit.provider_id == uuid.UUID(provider.id))).all()
        assert {d.report_id for d in draws} == expected and len(draws) == len(expected) >= 3
        assert sorted(results) == [0, 0, 0, len(expected)]  # the lock, then nothing new
        assert sorted(a.report_id for a in audits) == sorted(expected)  # one audit per drawn report
        assert {a.trigger for a in audits} == {AuditTrigger.SCHEDULED} and not any(
            a.full_exposure for a in audits
        )
        by_audit = {a.id: a for a in audits}
        for draw in draws:  # what justifies each draw, recomputed
            assert by_audit[draw.audit_id].report_id == draw.report_id
            assert draw.score == context.schedule_key.score(draw.key_period, draw.report_id)
            assert draw.key_id == context.schedule_key.key_id
            if draw.reason.value == "share":
                assert draw.share == 0.5 and score_below(draw.score, 0.5)
        assert verify_chain(session).ok
    kinds = _kinds(database, provider.id)
    assert kinds.count("schedule.drawn") == kinds.count("audit.requested") == len(expected)

    # A beat restarted mid-draw, without the lock: two draws of the provider at once still open one
    # audit per drawn report.
    more = {uuid.UUID(submit_report(client, provider, make_request(i))["report_id"]) for i in range(8, 12)}
    time.sleep(SETTLE + 0.2)
    now, pid = utcnow(), uuid.UUID(provider.id)
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda: counts.append(draw_for_provider(context, pid, now))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with database.unit_of_work() as session:
        per_report = dict(
            session.execute(
                select(Audit.report_id, func.count())
                .where(Audit.provider_id == pid)
                .group_by(Audit.report_id)
            ).all()
        )
        drawn = set(session.scalars(select(ScheduledDraw.report_id).where(ScheduledDraw.provider_id == pid)))
    assert set(per_report) == drawn and set(per_report.values()) == {1}
    assert drawn - expected <= more and sorted(counts) == [0, len(drawn - expected)]


@dataclass
class Receiver:
    """A webhook receiver in this process: answers 500 to the first attempt at each delivery, then 200."""

    server: ThreadingHTTPServer
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/coin"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    seen: set[str] = set()
    requests: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append((dict(self.headers.items()), body))
            delivery = self.headers["X-Coin-Delivery"]
            first = delivery not in seen
            seen.add(delivery)
            self.send_response(500 if first else 200)
            self.end_headers()
            self.wfile.write(b"try again" if first else b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(server, requests)
    server.shutdown()
    server.server_close()


def test_a_delivery_is_leased_alone_and_each_attempt_is_recorded_once(
    client: TestClient, clean_db: Database, worker_process: WorkerProcess, receiver: Receiver
) -> None:
    """A lease taken for a whole batch ran out while the batch's first sends waited on a slow receiver,
    and a second run sent the rest again; a run whose send outlasted its lease crashed on recording an
    attempt the other run had recorded."""
    worker_process.stop()  # only this test sends
    shared = service_context(client)
    context = dataclasses.replace(
        shared, settings=shared.settings.model_copy(update={"webhook_url": receiver.url})
    )
    with clean_db.unit_of_work() as session:
        for key in ("a", "b"):
            notify(session, context, "test.lease", key, {"key": key})
    claimed = _claim(context)
    assert claimed is not None
    with clean_db.unit_of_work() as session:
        leased = session.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.next_attempt_at > utcnow())
        ).all()
    assert leased == [claimed[0]]

    for _ in range(2):  # the same attempt recorded twice: once
        _record(context, claimed[0], claimed[4], utcnow(), 0.1, 200, None)
    with clean_db.unit_of_work() as session:
        attempts = session.scalars(
            select(WebhookAttempt.number).where(WebhookAttempt.delivery_id == claimed[0])
        ).all()
        delivery = session.get_one(WebhookDelivery, claimed[0])
        assert (attempts, delivery.status) == ([1], DeliveryStatus.DELIVERED)
    assert deliver_webhooks(context) == 1  # the other one (its first attempt answered 500)
    assert [h["X-Coin-Event"] for h, _ in receiver.requests] == ["test.lease"]


def _forge_proof(opening: dict[str, Any]) -> dict[str, Any]:
    salt = bytes.fromhex(opening["salt"])
    return {**opening, "salt": bytes([salt[0] ^ 1]).hex() + salt[1:].hex()}


def test_a_failing_provider_is_escalated_alarmed_notified_and_returns_to_base_after_a_clean_run(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    worker_process: WorkerProcess,
    receiver: Receiver,
) -> None:
    worker_process.stop()
    worker_process.start(COIN_WEBHOOK_URL=receiver.url)
    try:
        provider = make_provider()
        _put_policy(client, provider.id, domain="math", share=0.0, min_per_day=0, escalated_share=1.0,
                    clean_audits=2)  # fmt: skip

        # A forged opening: the audit fails a proof check.
        forged = make_request(2)
        audit_id = open_audit(client, submit_report(client, provider, forged)["report_id"])
        challenge = wait_for_challenge(client, provider, audit_id)
        body = forged.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        content = set(challenge["content_indices"])
        target = next(o for o in body["openings"] if o["index"] not in content)
        body["openings"] = [_forge_proof(o) if o is target else o for o in body["openings"]]
        assert respond(client, provider, challenge, body).status_code == 202
        assert wait_for_verdict(client, audit_id)["verdict"]["outcome"] == "fail"

        policy = client.get(f"/v1/providers/{provider.id}/policy", headers=ADMIN).json()
        assert (policy["level"], policy["escalation_reason"], policy["effective_share"]) == (
            "escalated",
            "fail",
            1.0,
        )
        standing = client.get(f"/v1/providers/{provider.id}/standing", headers=ADMIN).json()
        assert (standing["audits"], standing["proof_failures"], standing["alarm"], standing["alarm_at"]) == (1, 1, "proof", 1)  # fmt: skip
        kinds = _kinds(database, provider.id)
        assert (
            kinds.index("verdict.issued")
            < kinds.index("monitor.alarm")
            < kinds.index("sampling_policy.escalated")
        )

        # The staff are told, signed, and the first attempt's 500 is retried.
        def delivered() -> Sequence[WebhookDelivery] | None:
            with database.unit_of_work() as session:
                rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.provider_id == uuid.UUID(provider.id))).all()  # fmt: skip
                done = [r for r in rows if r.status == DeliveryStatus.DELIVERED]
                return rows if len(done) == 2 == len(rows) else None

        deliveries = wait_for(delivered, 30, "both webhooks delivered")
        assert {d.kind for d in deliveries} == {"audit.failed", "monitor.alarm"}
        with database.unit_of_work() as session:
            for delivery in deliveries:
                attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id).order_by(WebhookAttempt.number)).all()  # fmt: skip
                assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
                assert attempts[0].error == "try again" and attempts[0].next_attempt_at is not None
                assert attempts[1].next_attempt_at is None and delivery.attempts == 2
        for headers, payload in receiver.requests:
            timestamp = int(headers["X-Coin-Timestamp"])
            assert abs(time.time() - timestamp) < 60
            assert hmac.compare_digest(
                headers["X-Coin-Signature"], webhook_signature(SECRET, timestamp, payload)
            )
            sent = json.loads(payload)
            assert sent["id"] == headers["X-Coin-Delivery"] and sent["kind"] == headers["X-Coin-Event"]
        failed = next(json.loads(b) for h, b in receiver.requests if h["X-Coin-Event"] == "audit.failed")
        assert failed["data"]["audit_id"] == audit_id and failed["data"]["proof_failures"] == ["proof"]

        # Escalated: every report is drawn, and each scheduled audit reveals its whole plan at once.
        honest = [make_request(i) for i in (0, 1)]
        for request in honest:
            submit_report(client, provider, request)
        for request in honest:

            def scheduled(request: CommittedRequest = request) -> str | None:
                with database.unit_of_work() as session:
                    found = session.scalar(
                        select(Audit.id).join(Report, Report.id == Audit.report_id)
                        .where(Report.request_id == request.request_id, Audit.trigger == AuditTrigger.SCHEDULED)
                    )  # fmt: skip
                    return None if found is None else str(found)

            scheduled_id = wait_for(scheduled, 30, "the scheduled draw")
            wait_for_challenge(client, provider, scheduled_id)
            audit = answer_until_verdict(client, provider, scheduled_id, request.openings)
            assert audit["verdict"]["outcome"] == "pass", audit["verdict"]
            with database.unit_of_work() as session:
                row = session.get_one(Audit, uuid.UUID(scheduled_id))
                plan = exposure_plan(row, session.get_one(Report, row.report_id))
                [only] = session.scalars(select(Challenge).where(Challenge.audit_id == row.id)).all()
            assert row.full_exposure and plan.rounds == 1
            assert len(only.body["block_indices"]) == len(plan.blocks)
            with database.unit_of_work() as session:
                draw = session.scalars(select(ScheduledDraw).where(ScheduledDraw.audit_id == row.id)).one()
            assert (draw.reason.value, draw.share, draw.level.value) == ("share", 1.0, "escalated")

        policy = client.get(f"/v1/providers/{provider.id}/policy", headers=ADMIN).json()
        assert (policy["level"], policy["effective_share"], policy["clean_streak"]) == ("base", 0.0, 0)
        assert "sampling_policy.returned_to_base" in _kinds(database, provider.id)
        standing = client.get(f"/v1/providers/{provider.id}/standing", headers=ADMIN).json()
        assert standing["audits"] == 3 and standing["e_value"] < standing["max_e_value"]
        with database.unit_of_work() as session:
            assert verify_chain(session).ok
    finally:
        worker_process.stop()  # the next test's worker starts without the webhook URL


PROOF_FAILURE = {"name": "proof", "kind": "proof", "outcome": "fail", "figure": 1.0, "threshold": None,
                 "detail": "1 of 90 paths fail"}  # fmt: skip


def _verifier(outcome: Outcome) -> dict[str, object]:
    """The verifier's check as a verdict carries it (a monitor does not count an audit without it)."""
    flagged = outcome == Outcome.SUSPECT
    return {"name": "verifier", "kind": "statistical", "outcome": "suspect" if flagged else "pass",
            "figure": 1e-6 if flagged else 0.5, "threshold": 1e-4, "detail": ""}  # fmt: skip


def _decide(client: TestClient, report_id: str, trigger: AuditTrigger, outcome: Outcome) -> Verdict:
    """A verdict of an audit opened by `trigger`: a failing one fails the proof check, any other carries
    the verifier's figure."""
    checks = [PROOF_FAILURE] if outcome == Outcome.FAIL else [_verifier(outcome)]
    return decide(service_context(client), report_id, trigger, outcome, checks)


def test_only_the_draw_counts_in_the_monitor_and_towards_base_unless_an_audit_fails(
    client: TestClient, make_provider: MakeProvider, make_request: MakeRequest, database: Database
) -> None:
    """The provider issues every receipt token: customer audits of reports it knows to be honest, counted,
    would dilute its monitor and bring an escalated policy back to base; the staff's audits of a report
    they chose, counted, would pile its flags on an honest provider. A proof counts whoever asked."""
    escalated, clean = make_provider(), make_provider()
    for provider in (escalated, clean):
        _put_policy(client, provider.id, domain="math", share=0.0, min_per_day=0, clean_audits=3)
    reports = {p.id: submit_report(client, p, make_request(5))["report_id"] for p in (escalated, clean)}

    def standing(provider: ProviderAccount) -> tuple[str, int, int, str | None]:
        policy = client.get(f"/v1/providers/{provider.id}/policy", headers=ADMIN).json()
        monitor = client.get(f"/v1/providers/{provider.id}/standing", headers=ADMIN).json()
        return policy["level"], policy["clean_streak"], monitor["audits"], monitor["alarm"]

    _decide(client, reports[escalated.id], AuditTrigger.SCHEDULED, Outcome.FAIL)
    assert standing(escalated) == ("escalated", 0, 1, "proof")
    for trigger, outcome in ((AuditTrigger.CUSTOMER, Outcome.PASS),) * 3 + (
        (AuditTrigger.ADMIN, Outcome.SUSPECT),
    ):
        _decide(client, reports[escalated.id], trigger, outcome)
    assert standing(escalated) == ("escalated", 0, 1, "proof")
    _decide(client, reports[escalated.id], AuditTrigger.SCHEDULED, Outcome.PASS)
    assert standing(escalated) == ("escalated", 1, 2, "proof")  # the draw's audits count

    _decide(client, reports[clean.id], AuditTrigger.CUSTOMER, Outcome.FAIL)
    assert standing(clean) == ("escalated", 0, 1, "proof")
    assert "sampling_policy.escalated" in _kinds(database, clean.id)


def test_a_draw_opens_its_own_audit_beside_a_customers_running_one(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    worker_process: WorkerProcess,
) -> None:
    """A provider that opens a customer audit of each report it fears will be drawn (and answers late)
    must not have the draw fold into that audit, outside the monitor and without full exposure."""
    worker_process.stop()  # its beat would draw too: here the draw is this test's own
    context = service_context(client)
    provider = make_provider()
    _put_policy(client, provider.id, domain="math", share=1.0, min_per_day=0, escalated_share=1.0)
    with database.unit_of_work() as session:  # escalated: a draw's audit reveals its whole plan
        session.execute(sa.update(SamplingPolicy).where(SamplingPolicy.provider_id == uuid.UUID(provider.id))
                        .values(level=PolicyLevel.ESCALATED, escalation_reason=EscalationReason.FAIL))  # fmt: skip
    receipt = submit_report(client, provider, make_request(6))
    open_audit(client, receipt["report_id"], bearer(receipt["receipt_token"]))  # a receipt holder's audit
    time.sleep(SETTLE + 0.2)
    assert draw_for_provider(context, uuid.UUID(provider.id), utcnow()) == 1
    with database.unit_of_work() as session:
        audits = session.scalars(
            select(Audit).where(Audit.report_id == uuid.UUID(receipt["report_id"]))
        ).all()
        draw = session.scalars(
            select(ScheduledDraw).where(ScheduledDraw.report_id == uuid.UUID(receipt["report_id"]))
        ).one()
    by_trigger = {a.trigger: a for a in audits}
    assert set(by_trigger) == {AuditTrigger.CUSTOMER, AuditTrigger.SCHEDULED}
    assert (
        draw.audit_id == by_trigger[AuditTrigger.SCHEDULED].id
        and by_trigger[AuditTrigger.SCHEDULED].full_exposure
    )


def test_calibrate_a_domain_and_set_a_policy_from_the_command_line(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    short_traces: list[dict[str, Any]],
) -> None:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    references = tmp_path / "math.jsonl"
    references.write_text("".join(json.dumps({**t, "domain": "math"}) + "\n" for t in short_traces[:3]))
    runner = CliRunner()
    try:
        calibrated = runner.invoke(
            build_app(), ["calibrate", "--domain", "math", "--traces", str(references)]
        )
        assert calibrated.exit_code == 0, calibrated.output
        assert "calibration math@1: 3 traces" in calibrated.output
        # Three short GSM8K solutions copy nothing like the shipped rule's room: it stays.
        assert "copy rule of math: fail above copied 24% or repeated 60%" in calibrated.output
        refused = runner.invoke(
            build_app(), ["calibrate", "--domain", "medical", "--traces", str(references)]
        )
        assert refused.exit_code == 2 and "math.jsonl:1.domain" in refused.output
        # References that copy beyond the shipped rule, too few to fit a rule of their own: refused.
        doubled = tmp_path / "doubled.jsonl"
        doubled.write_text(
            "".join(
                json.dumps({**t, "reasoning": t["reasoning"] + "\n\n" + t["reasoning"]}) + "\n"
                for t in short_traces[:3]
            )
        )
        too_few = runner.invoke(build_app(), ["calibrate", "--domain", "math", "--traces", str(doubled)])
        assert too_few.exit_code == 2
        assert "3 of 3 reference traces fail the shipped copy rule" in too_few.output

        provider = make_provider()
        set_ = runner.invoke(build_app(), ["policy", "set", "--provider", provider.name, "--domain", "math",
                                           "--share", "0.05", "--min-per-day", "2"])  # fmt: skip
        assert set_.exit_code == 0, set_.output
        assert (
            "domain math; 5.00% of reports and at least 2 a day (escalated: 20.00%, 8 a day)" in set_.output
        )
        assert "monitor" in set_.output and "calibration math@1" in set_.output
        shown = runner.invoke(build_app(), ["policy", "show", "--provider", provider.id])
        assert shown.exit_code == 0 and "at base" in shown.output
        unknown = runner.invoke(build_app(), ["policy", "show", "--provider", "nobody-at-all"])
        assert unknown.exit_code == 1 and "no provider" in unknown.output
    finally:
        get_settings.cache_clear()
    with database.unit_of_work() as session:
        [calibration] = session.scalars(select(MonitorCalibration)).all()
        assert (calibration.label, calibration.traces, calibration.heads) == (
            "math@1",
            3,
            shipped_calibration().heads,
        )
        assert calibration.policy["bound"]["domains"] == ["math"]
        assert calibration.copy_rule == copy_rule_json(COPY_RULE)
    assert _kinds(database, provider.id).count("sampling_policy.set") == 1

    # The provider's next scheduled verdict (its monitor's first this period) is counted under its
    # domain's calibration, and its signed statement names it.
    report_id = submit_report(client, provider, make_request(4))["report_id"]
    verdict = _decide(client, report_id, AuditTrigger.SCHEDULED, Outcome.PASS)
    assert verdict.statement["decided_by"]["calibration"] == "math@1"
    assert verdict.statement["version"] == "coin-verdict/3"
    standing = client.get(f"/v1/providers/{provider.id}/standing", headers=ADMIN).json()
    assert (standing["calibration"], standing["audits"]) == ("math@1", 1)


def test_migration_0007_adds_and_drops_the_scheduling_tables(migration_url: str) -> None:
    url = migration_url
    tables = {"sampling_policies", "scheduled_draws", "monitor_states", "monitor_calibrations",
              "webhook_deliveries", "webhook_attempts"}  # fmt: skip

    def schema() -> tuple[set[str], set[str]]:
        engine = make_engine(url)
        try:
            inspector = sa.inspect(engine)
            return set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("audits")}
        finally:
            engine.dispose()

    upgrade_database(url)
    present, audit_columns = schema()
    assert tables <= present and "full_exposure" in audit_columns
    command.downgrade(alembic_config(url), "0006")
    present, audit_columns = schema()
    assert not tables & present and "full_exposure" not in audit_columns
    upgrade_database(url)
    assert tables <= schema()[0]


def test_migration_0008_gives_earlier_calibrations_the_shipped_copy_rule(migration_url: str) -> None:
    url = migration_url
    upgrade_database(url, "0007")
    engine = make_engine(url)
    calibrations = sa.table(
        "monitor_calibrations",
        sa.column("id", sa.Uuid()),
        *(sa.column(name, sa.String()) for name in ("domain", "heads", "embd_id")),
        *(sa.column(name, sa.Integer()) for name in ("version", "traces")),
        *(sa.column(name, sa.JSON()) for name in ("rates", "policy")),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    try:
        with engine.begin() as connection:
            row = {"id": uuid.uuid4(), "domain": "math", "version": 1, "traces": 3, "rates": {}, "policy": {},
                   "heads": "h", "embd_id": "e", "created_at": utcnow()}  # fmt: skip
            connection.execute(calibrations.insert().values(**row))
        upgrade_database(url)
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT copy_rule FROM monitor_calibrations")).scalar_one()
        assert (json.loads(stored) if isinstance(stored, str) else stored) == copy_rule_json(COPY_RULE)
        command.downgrade(alembic_config(url), "0007")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("monitor_calibrations")}
        assert "copy_rule" not in columns and "policy" in columns
    finally:
        engine.dispose()
