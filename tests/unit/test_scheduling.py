"""Scheduled verification and provider monitoring without services (Issue 13): the keyed draw's scores,
policy terms, webhook signatures, the shipped calibration and its checkpoint, a domain's calibration,
the receipt's format, and escalation and the monitor on the embedded store (SQLite)."""

import hashlib
import hmac
import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.reports.schemas import ReceiptOut
from auditor.cli import build_app
from auditor.monitoring import THRESHOLDS, AuditEvidence, MonitorState
from auditor.monitoring.bounds import wilson_upper
from auditor.semantic.exposure import ExposurePolicy
from auditor.semantic.heads import CHECKPOINT_NAME, WEIGHTS_DIR, checkpoint_id_of
from service.context import ServiceContext
from service.errors import ServiceError
from service.migrate import upgrade_database
from service.models import (
    Audit,
    AuditEvent,
    AuditTrigger,
    EscalationReason,
    MonitorAlarm,
    Outcome,
    PolicyLevel,
    Provider,
    utcnow,
)
from service.monitoring.calibration import SHIPPED, reference_policy, shipped_calibration
from service.monitoring.references import read_reference_traces
from service.monitoring.service import open_monitor, record_verdict, standing
from service.providers.service import register_provider
from service.scheduling import draws
from service.scheduling.draws import disclosable_day_key, draw_for_provider, earliest_drawable
from service.scheduling.service import PolicyTerms, apply_verdict, get_policy, set_policy
from service.security import ScheduleKey, score_below, webhook_signature
from service.settings import Settings, get_settings
from tests.conftest import REPO_ROOT


def test_a_score_is_an_hmac_under_the_days_key_which_discloses_no_other_day() -> None:
    key = ScheduleKey("k" * 40)
    report = uuid.UUID("6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21")
    day_key = hmac.digest(b"k" * 40, b"coin-schedule/1:2026-12-14", "sha256")
    assert key.day_key("2026-12-14") == day_key
    # What anyone holding the disclosed day key recomputes:
    assert key.score("2026-12-14", report) == hmac.digest(day_key, str(report).encode(), "sha256").hex()
    assert key.score("2026-12-15", report) != key.score("2026-12-14", report)
    assert key.key_id != ScheduleKey("j" * 40).key_id and "k" not in key.key_id
    assert ScheduleKey.derived("s" * 40).key_id == ScheduleKey.derived("s" * 40).key_id
    assert ScheduleKey.derived("s" * 40).key_id != ScheduleKey("s" * 40).key_id


def test_a_score_is_below_a_share_as_a_fraction_of_2_to_the_256() -> None:
    assert score_below("00" * 32, 1e-9) and not score_below("00" * 32, 0.0)
    assert score_below("7f" + "ff" * 31, 0.5) and not score_below("80" + "00" * 31, 0.5)
    assert score_below("ff" * 32, 1.0)
    key = ScheduleKey("k" * 40)
    drawn = sum(score_below(key.score("2026-12-14", uuid.uuid4()), 0.25) for _ in range(4000))
    assert 850 < drawn < 1150  # a quarter, give or take five standard deviations


def test_policy_terms_default_their_escalation_and_refuse_what_is_out_of_range() -> None:
    terms = PolicyTerms("math", 0.3, 2).resolved()
    assert (terms.escalated_share, terms.escalated_min_per_day) == (1.0, 8)
    assert (terms.clean_audits, terms.warning_e_value) == (5, 10.0)
    for bad, named in (
        (PolicyTerms("Math", 0.1, 1), "domain"),
        (PolicyTerms("math", 1.5, 1), "share"),
        (PolicyTerms("math", 0.5, 1, escalated_share=0.2), "escalated_share"),
        (PolicyTerms("math", 0.1, -1), "min_per_day"),
        (PolicyTerms("math", 0.1, 4, escalated_min_per_day=2), "escalated_min_per_day"),
        (PolicyTerms("math", 0.1, 1, clean_audits=0), "clean_audits"),
        (PolicyTerms("math", 0.1, 1, warning_e_value=1.0), "warning_e_value"),
    ):
        with pytest.raises(ServiceError, match=named):
            bad.resolved()


def test_a_drawn_reports_audit_ends_within_the_retention_its_receipt_states() -> None:
    """Each round's challenge gets a fresh deadline: a report drawn at the window's edge, every round
    answered at its deadline, is still within the days its openings must be kept."""
    now, deadline = datetime(2026, 12, 14, 12, tzinfo=UTC), 3600.0
    earliest = earliest_drawable(now, 30, deadline)
    rounds = ExposurePolicy().rounds
    assert rounds > 1 and now + timedelta(seconds=rounds * deadline) == earliest + timedelta(days=30)


class _RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.warnings.append((event, fields))

    def info(self, event: str, **fields: object) -> None:
        pass


def test_a_challenge_deadline_under_which_no_report_could_be_drawn_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longest deadline is the one under which a report seen by its first draw (the settle time and
    one draw interval after its receipt) is exactly at the drawable window's edge; a longer one is
    refused in the settings and at registration, and a provider registered under a longer retention is
    reported at every draw."""
    settings = Settings(retention_days=1, schedule_settle_seconds=60, schedule_interval_seconds=300)
    longest = settings.longest_challenge_deadline_seconds
    received = datetime(2026, 12, 14, 12, tzinfo=UTC)
    first_draw = received + timedelta(seconds=60 + 300)
    assert earliest_drawable(first_draw, 1, longest) == received
    assert earliest_drawable(first_draw, 1, longest + 1) > received
    with pytest.raises(ValueError, match="COIN_CHALLENGE_DEADLINE_SECONDS: at most 28680"):
        Settings(retention_days=1, challenge_deadline_seconds=longest + 1)
    assert (
        Settings(retention_days=1, challenge_deadline_seconds=longest).challenge_deadline_seconds == longest
    )
    with pytest.raises(ValueError, match="COIN_RETENTION_DAYS=1 leaves no room"):
        Settings(retention_days=1, schedule_interval_seconds=86_400)

    url = f"sqlite:///{tmp_path / 'coin.sqlite3'}"
    upgrade_database(url)
    context = ServiceContext.from_settings(Settings(database_url=url, retention_days=1))
    try:
        with context.db.unit_of_work() as session:
            with pytest.raises(ServiceError, match="challenge_deadline_seconds: at most 28680"):
                register_provider(
                    session, "slow", None, longest + 1, longest_deadline_seconds=longest, actor="admin"
                )
            assert session.scalars(select(Provider)).all() == []
            # Registered while the retention was longer:
            provider, _ = register_provider(
                session, "slow", None, 2 * longest, longest_deadline_seconds=3 * longest, actor="admin"
            )
            set_policy(session, provider, PolicyTerms(domain="math", share=1.0, min_per_day=1), actor="admin")
            provider_id = provider.id
        # The module's own logger, recorded: structlog may have cached its configured one by now.
        logged = _RecordingLog()
        monkeypatch.setattr(draws, "log", logged)
        draw_for_provider(context, provider_id, utcnow())
        [warning] = [
            fields for event, fields in logged.warnings if event == "schedule.deadline_beyond_retention"
        ]
        assert warning["deadline_seconds"] == 2 * longest
    finally:
        context.close()


def test_a_webhook_signature_covers_the_timestamp_and_the_body() -> None:
    body = b'{"kind":"audit.failed"}'
    signature = webhook_signature("secret", 1_765_000_000, body)
    expected = hmac.new(b"secret", b"1765000000." + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert webhook_signature("secret", 1_765_000_001, body) != signature  # a replay with a new timestamp


def test_the_shipped_calibration_goes_with_the_shipped_heads() -> None:
    shipped = shipped_calibration()
    assert shipped.heads == checkpoint_id_of(WEIGHTS_DIR / CHECKPOINT_NAME), (
        "auditor/semantic/weights/heads.pt changed: refit service/monitoring/shipped_calibration.json "
        "(coin monitor-eval) for the new checkpoint"
    )
    assert shipped.policy.bound.thresholds == THRESHOLDS
    assert all(r >= t for t, r in shipped.policy.bound.pairs)
    reported = json.loads((REPO_ROOT / "docs" / "eval-results" / "monitor" / "monitor.json").read_text())
    assert shipped.policy.to_json() == reported["calibration"]  # the run docs/evaluation.md reports


def test_a_domains_calibration_bounds_its_references_honest_rates() -> None:
    scores = [1.0] * 38 + [0.01, 0.001]  # one reference under 0.05, one under 0.006 and 0.05
    rates, policy = reference_policy("math", scores)
    assert (rates.honest_audits, rates.honest_flags) == (40, (1, 2))
    assert policy.bound.rates == (
        max(0.006, wilson_upper(1, 40)),
        max(0.05, wilson_upper(2, 40)),
    )
    assert policy.bound.domains == ("math",)
    shipped = shipped_calibration().policy
    assert (policy.alpha, policy.fractions) == (shipped.alpha, shipped.fractions)
    assert policy.reference is not None and policy.reference.honest_rates == (1 / 40, 2 / 40)
    with pytest.raises(ValueError):
        reference_policy("math", [])


def test_reference_traces_are_read_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "refs.jsonl"
    rows = [
        {"id": "a", "reasoning": "think", "answer": "42", "domain": "math"},
        {"reasoning": "r", "answer": "1"},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    traces = read_reference_traces(path, "math")
    assert [(t.id, t.reasoning, t.answer) for t in traces] == [("a", "think", "42"), ("2", "r", "1")]
    with pytest.raises(ValueError, match=r"refs.jsonl:1.domain"):
        read_reference_traces(path, "medical")
    path.write_text('{"reasoning": "", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"refs.jsonl:1.reasoning"):
        read_reference_traces(path, "math")


def test_a_coin_receipt_2_is_served_without_the_field_it_lacks() -> None:
    receipt = {
        "version": "coin-receipt/2", "report_id": str(uuid.uuid4()), "provider_id": str(uuid.uuid4()),
        "request_id": "r", "digest": "ab" * 32, "received_at": "2026-01-01T00:00:00.000000+00:00",
        "auditor_key": "cd" * 32,
    }  # fmt: skip
    served = {
        "report_id": receipt["report_id"],
        "receipt": receipt,
        "signature": "ef" * 64,
        "receipt_token": None,
    }
    dumped = ReceiptOut.model_validate(served).model_dump(mode="json", exclude_unset=True)
    assert dumped["receipt"] == receipt  # the signed bytes are unchanged
    v3 = {**receipt, "version": "coin-receipt/3", "retention_days": 30}
    dumped = ReceiptOut.model_validate({**served, "receipt": v3}).model_dump(mode="json", exclude_unset=True)
    assert dumped["receipt"] == v3


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[ServiceContext]:
    """The embedded default: a migrated SQLite store, no broker."""
    url = f"sqlite:///{tmp_path / 'coin.sqlite3'}"
    upgrade_database(url)
    context = ServiceContext.from_settings(Settings(database_url=url))
    yield context
    context.close()


def _provider(context: ServiceContext, **terms: object) -> uuid.UUID:
    with context.db.unit_of_work() as session:
        provider, _ = register_provider(
            session,
            f"p-{uuid.uuid4().hex[:6]}",
            None,
            None,
            longest_deadline_seconds=context.settings.longest_challenge_deadline_seconds,
            actor="admin",
        )
        if terms:
            set_policy(session, provider, PolicyTerms(**terms), actor="admin")  # type: ignore[arg-type]
        return provider.id


def _kinds(context: ServiceContext) -> list[str]:
    with context.db.unit_of_work() as session:
        return list(session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)))


def test_a_policy_escalates_on_failure_or_evidence_and_returns_to_base_after_a_clean_run(
    embedded: ServiceContext,
) -> None:
    provider_id = _provider(embedded, domain="math", share=0.1, min_per_day=1, clean_audits=2)

    def verdict(outcome: Outcome, e_value: float = 1.0, alarm: bool = False) -> tuple[PolicyLevel, int]:
        with embedded.db.unit_of_work() as session:
            apply_verdict(session, provider_id, uuid.uuid4(), outcome, e_value=e_value, alarm_raised=alarm)
            policy = get_policy(session, session.get_one(Provider, provider_id))
            assert policy is not None
            return policy.level, policy.clean_streak

    assert verdict(Outcome.PASS) == (PolicyLevel.BASE, 0)
    assert verdict(Outcome.SUSPECT, e_value=3.0) == (PolicyLevel.BASE, 0)  # below the warning level
    assert verdict(Outcome.FAIL, e_value=3.4, alarm=True) == (PolicyLevel.ESCALATED, 0)
    with embedded.db.unit_of_work() as session:
        policy = get_policy(session, session.get_one(Provider, provider_id))
        assert policy is not None and policy.escalation_reason == EscalationReason.FAIL
        assert (policy.effective_share, policy.effective_min_per_day) == (0.4, 4)
    assert verdict(Outcome.PASS) == (PolicyLevel.ESCALATED, 1)
    assert verdict(Outcome.INCONCLUSIVE) == (PolicyLevel.ESCALATED, 1)  # neither counts nor resets
    assert verdict(Outcome.SUSPECT, e_value=2.0) == (PolicyLevel.ESCALATED, 0)
    assert verdict(Outcome.PASS) == (PolicyLevel.ESCALATED, 1)
    assert verdict(Outcome.PASS, e_value=12.0) == (PolicyLevel.ESCALATED, 0)  # evidence still rising
    assert verdict(Outcome.PASS) == (PolicyLevel.ESCALATED, 1)
    assert verdict(Outcome.PASS) == (PolicyLevel.BASE, 0)
    assert verdict(Outcome.SUSPECT, e_value=10.0) == (PolicyLevel.ESCALATED, 0)
    with embedded.db.unit_of_work() as session:
        policy = get_policy(session, session.get_one(Provider, provider_id))
        assert policy is not None and policy.escalation_reason == EscalationReason.EVIDENCE
    kinds = _kinds(embedded)
    assert kinds.count("sampling_policy.set") == 1
    assert (
        kinds.count("sampling_policy.escalated") == 2 and kinds.count("sampling_policy.returned_to_base") == 1
    )


def _evidence_statement(outcome: str, p_value: float | None) -> dict[str, object]:
    checks = [] if p_value is None else [{"name": "verifier", "figure": p_value}]
    flags = ["verifier"] if outcome == "suspect" else []
    failures = ["proof"] if outcome == "fail" else []
    evidence = {"checks": checks, "statistical_flags": flags, "proof_failures": failures}
    return {"outcome": outcome, "evidence": evidence, "report_id": "r",
            "request_id": "q", "reasoning_tokens": 10, "decided_at": "t"}  # fmt: skip


def test_the_monitor_counts_each_verdict_and_alarms_at_the_first_proof_failure(
    embedded: ServiceContext,
) -> None:
    provider_id = _provider(embedded)  # no policy: the shipped calibration, nothing to escalate
    audit = Audit(
        id=uuid.uuid4(), provider_id=provider_id, trigger=AuditTrigger.SCHEDULED
    )  # ids and trigger read
    # An audit the auditor could not read (no verifier figure, nothing failed or flagged) is not counted:
    # as a clean audit it would dilute the provider's evidence.
    unread = ("inconclusive", None)
    assert not AuditEvidence.from_verdict(_evidence_statement(*unread), 8).carries_evidence
    assert AuditEvidence.from_verdict(_evidence_statement("inconclusive", 0.4), 8).carries_evidence
    for outcome, p_value in (("pass", 0.5), unread, ("pass", 0.9), unread, ("fail", None)):
        with embedded.db.unit_of_work() as session:
            monitor = open_monitor(session, provider_id, utcnow())
            assert monitor.calibration == SHIPPED
            record_verdict(session, embedded, monitor, audit, _evidence_statement(outcome, p_value), 8)
    with embedded.db.unit_of_work() as session:
        now = standing(session, provider_id)
    assert (now.audits, now.proof_failures, now.alarm, now.alarm_at) == (3, 1, MonitorAlarm.PROOF, 3)
    state = MonitorState.start(now.period, shipped_calibration().policy)
    for outcome, p_value in (("pass", 0.5), ("pass", 0.9), ("fail", None)):
        state = state.update(AuditEvidence.from_verdict(_evidence_statement(outcome, p_value), 8))
    assert math.isclose(now.e_value, math.exp(state.log_e)) and now.anytime_p_value == state.anytime_p_value
    assert now.token_share_interval[1] == 1.0
    assert _kinds(embedded).count("monitor.alarm") == 1


def test_a_past_days_schedule_key_is_disclosed_once_no_draw_can_use_it(
    embedded: ServiceContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    provider_id = _provider(embedded, domain="math", share=0.1, min_per_day=1)
    now = utcnow()
    today, yesterday = now.date(), now.date() - timedelta(days=1)
    with embedded.db.unit_of_work() as session:
        assert disclosable_day_key(session, embedded, yesterday, now) == embedded.schedule_key.day_key(
            yesterday.isoformat()
        )
        with pytest.raises(ServiceError, match="has not ended"):
            disclosable_day_key(session, embedded, today, now)
        policy = get_policy(session, session.get_one(Provider, provider_id))
        assert policy is not None
        policy.drawn_through = now - timedelta(days=2)  # a beat that was down: yesterday's reports wait
    with embedded.db.unit_of_work() as session, pytest.raises(ServiceError, match="not passed the end"):
        disclosable_day_key(session, embedded, yesterday, now)

    # The command, on the same store: refused (exit 1, nothing printed on stdout), then a malformed day.
    monkeypatch.setenv("COIN_DATABASE_URL", str(embedded.settings.database_url))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        refused = runner.invoke(build_app(), ["schedule-key", "--day", yesterday.isoformat()])
        assert refused.exit_code == 1 and "not passed the end" in refused.output
        bad = runner.invoke(build_app(), ["schedule-key", "--day", "yesterday"])
        assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
        older = (now - timedelta(days=3)).date()
        shown = runner.invoke(build_app(), ["schedule-key", "--day", older.isoformat()])
        assert shown.exit_code == 0, shown.output
        assert embedded.schedule_key.day_key(older.isoformat()).hex() in shown.output
    finally:
        get_settings.cache_clear()
