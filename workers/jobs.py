"""The audit state machine, as plain functions over the database (DESIGN §2 steps 3–6).

    pending --start_audit--> challenged --(API: response)--> verifying --verify_audit--> done
                                 ^  \\--expire_challenges (deadline missed)-------------> done (fail)
                                 \\------- next round (progressive exposure) <-------/

An audit reveals blocks in rounds (DESIGN §3 check 8): its exposure plan is drawn once when it starts,
each round's challenge is the plan's next blocks (cumulative), and a round whose semantic verdict is
still `inconclusive` opens the next one until the plan — the exposure budget — is spent.

Celery tasks (`workers/tasks.py`) and the embedded dispatcher both call these. Each one is idempotent:
it locks the audit row and acts only if the audit is still in the state the job expects, and a verdict
is unique per audit. So a message delivered twice, a worker killed mid-task, or a re-enqueue by the
sweeper all end in exactly one verdict.
"""

import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.events import append_audit_event
from api.models import (
    Audit,
    AuditStatus,
    Challenge,
    ChallengeResponse,
    ChallengeStatus,
    Outcome,
    Report,
    Verdict,
    utcnow,
)
from api.security import Signer
from auditor.challenge import Challenge as ChallengeSpec
from auditor.challenge import detection_probability
from auditor.commitment import PublicCommitment, Response
from auditor.errors import ModelError, ProtocolError
from auditor.exposure import ExposurePlan, ExposurePolicy, plan_exposure
from auditor.fingerprint import get_embedder
from auditor.heads.models import load_heads
from auditor.semantic import SemanticSuite
from auditor.verify import verify_response
from workers.names import EXPIRE_CHALLENGES, START_AUDIT, SWEEP_AUDITS, VERIFY_AUDIT

if TYPE_CHECKING:
    from api.context import ServiceContext

log = logging.getLogger(__name__)

VERDICT_VERSION = "coin-verdict/1"
# How many rows one run of a periodic job handles; the next run takes the rest.
PERIODIC_BATCH = 500


def public_commitment_of(report: Report) -> PublicCommitment:
    return PublicCommitment.from_json(
        {"commitment": report.body["commitment"], "answer": report.body["answer"]}
    )


def lock_audit(session: Session, audit_id: uuid.UUID) -> Audit | None:
    """The audit row, locked until the end of the transaction (SELECT ... FOR UPDATE)."""
    return session.scalars(select(Audit).where(Audit.id == audit_id).with_for_update()).one_or_none()


def write_verdict(
    session: Session, signer: Signer, audit: Audit, outcome: Outcome, evidence: dict[str, Any]
) -> Verdict:
    """Sign and store the verdict, close the audit and record the event (caller holds the audit lock)."""
    report = session.get_one(Report, audit.report_id)
    decided_at = utcnow()
    statement = {
        "version": VERDICT_VERSION,
        "audit_id": str(audit.id),
        "report_id": str(report.id),
        "provider_id": str(report.provider_id),
        "request_id": report.request_id,
        "report_digest": report.digest,
        "commitment_root": report.body["commitment"]["root"],
        "reasoning_tokens": report.reasoning_tokens,
        "outcome": outcome.value,
        "evidence": evidence,
        "decided_at": decided_at.isoformat(timespec="microseconds"),
    }
    verdict = Verdict(
        audit_id=audit.id,
        outcome=outcome.value,
        statement=statement,
        signature=signer.sign(statement),
        signing_key=signer.public_key_hex,
        decided_at=decided_at,
    )
    session.add(verdict)
    audit.status = AuditStatus.DONE.value
    audit.updated_at = decided_at
    session.flush()
    append_audit_event(
        session,
        audit,
        "verdict.issued",
        {"verdict_id": str(verdict.id), "outcome": outcome.value, "signature": verdict.signature},
    )
    return verdict


@cache
def semantic_suite(embd_id: str, tokenizer_id: str) -> SemanticSuite:
    """Checks 4–8 with the shipped heads, loaded once per process (ModelError if missing or mismatched)."""
    return SemanticSuite.for_tokenizer(load_heads(embd_id=embd_id), tokenizer_id)


def preload_models(context: "ServiceContext") -> None:
    """Load Embd and the heads when a verifying process starts: a missing or mismatched checkpoint is a
    clear ModelError at start, not a surprise at the first audit."""
    embedder = get_embedder(context.settings.embed_device)
    semantic_suite(embedder.embd_id, "qwen2")


def _challenge_rng(context: "ServiceContext", audit_id: uuid.UUID) -> random.Random:
    """A CSPRNG; tests may pin a seed (refused in production) so that draws are reproducible."""
    seed = context.settings.challenge_seed
    return random.Random(f"{seed}/{audit_id}") if seed is not None else secrets.SystemRandom()


def open_round(session: Session, context: "ServiceContext", audit: Audit, round_index: int) -> Challenge:
    """Issue round `round_index` (0-based) of the audit's exposure plan, with a fresh deadline."""
    report = session.get_one(Report, audit.report_id)
    plan = ExposurePlan.from_json(audit.exposure_plan)
    deadline_seconds = (
        report.provider.challenge_deadline_seconds or context.settings.challenge_deadline_seconds
    )
    spec = plan.challenge(round_index)
    now = utcnow()
    challenge = Challenge(
        audit_id=audit.id,
        provider_id=audit.provider_id,
        round=round_index + 1,
        body=spec.to_json(),
        status=ChallengeStatus.OPEN.value,
        issued_at=now,
        deadline=now + timedelta(seconds=deadline_seconds),
    )
    session.add(challenge)
    audit.status = AuditStatus.CHALLENGED.value
    audit.updated_at = now
    session.flush()
    append_audit_event(
        session,
        audit,
        "challenge.issued",
        {
            "challenge_id": str(challenge.id),
            "round": challenge.round,
            "indices": len(spec.indices),
            "deadline": challenge.deadline.isoformat(),
        },
    )
    return challenge


def start_audit(context: "ServiceContext", audit_id: str) -> None:
    """Draw the exposure plan of a pending audit (after its report is stored) and open its first round."""
    with context.db.unit_of_work() as session:
        audit = lock_audit(session, uuid.UUID(audit_id))
        if audit is None or audit.status != AuditStatus.PENDING:
            return
        commitment = public_commitment_of(session.get_one(Report, audit.report_id)).commitment
        plan = plan_exposure(
            commitment.size, commitment.block_size, ExposurePolicy(), _challenge_rng(context, audit.id)
        )
        audit.exposure_plan = plan.to_json()
        open_round(session, context, audit, 0)


def _evidence(spec: ChallengeSpec, checks: list[dict[str, Any]], **figures: Any) -> dict[str, Any]:
    """The verdict's evidence: each check with its figure, and what the challenge exposed."""
    k = len(spec.count_indices)
    return {
        "checks": checks,
        "count_openings": k,
        "detection_probability_at_5_percent": detection_probability(0.05, k),
        "exposure": {"blocks": spec.block_exposure, "tokens": spec.token_visibility},
        **figures,
    }


def verify_audit(context: "ServiceContext", audit_id: str) -> None:
    """Verify the stored response of an audit and write its signed verdict.

    The expensive part runs outside any transaction, so no lock is held while embedding; the verdict
    is written under the audit lock only if the audit is still waiting for it."""
    audit_uuid = uuid.UUID(audit_id)
    with context.db.unit_of_work() as session:
        audit = session.get(Audit, audit_uuid)
        if audit is None or audit.status != AuditStatus.VERIFYING:
            return
        report = session.get_one(Report, audit.report_id)
        challenge, response = session.execute(
            select(Challenge, ChallengeResponse)
            .join(ChallengeResponse, ChallengeResponse.challenge_id == Challenge.id)
            .where(Challenge.audit_id == audit_uuid)
            .order_by(Challenge.round.desc())
            .limit(1)
        ).one()
        public = public_commitment_of(report)
        spec = ChallengeSpec.from_json(challenge.body)
        response_body = response.body
        round_index = challenge.round - 1

    if context.settings.verify_delay_seconds:
        time.sleep(context.settings.verify_delay_seconds)
    try:
        embedder = get_embedder(context.settings.embed_device)
        suite = semantic_suite(public.commitment.embd_id, public.commitment.tokenizer_id)
        verification = verify_response(
            public, spec, Response.from_json(response_body), embedder=embedder, semantic_checks=suite.checks()
        )
        outcome = Outcome(verification.verdict)
        evidence = _evidence(spec, [check.to_json() for check in verification.checks])
        undecided = outcome == Outcome.INCONCLUSIVE  # the semantic test wants more blocks
    except (ProtocolError, ModelError) as exc:
        # The API checked the response's shape on receipt, so what is left is a mismatch on the
        # auditor's side (e.g. its embedding model or heads changed since the report): no verdict.
        outcome = Outcome.INCONCLUSIVE
        check = {"name": "protocol", "outcome": "inconclusive", "figure": None, "detail": str(exc)}
        evidence = _evidence(spec, [check])
        undecided = False  # more blocks would not help

    with context.db.unit_of_work() as session:
        audit = lock_audit(session, audit_uuid)
        if audit is None or audit.status != AuditStatus.VERIFYING:
            return
        plan = ExposurePlan.from_json(audit.exposure_plan)
        if undecided and round_index + 1 < plan.rounds:
            open_round(session, context, audit, round_index + 1)
            return
        write_verdict(session, context.signer, audit, outcome, evidence)


def expire_challenges(context: "ServiceContext") -> int:
    """Close every open challenge past its deadline: a missed deadline fails the audit (DESIGN §3)."""
    now = utcnow()
    with context.db.unit_of_work() as session:
        overdue = session.scalars(
            select(Challenge)
            .where(Challenge.status == ChallengeStatus.OPEN, Challenge.deadline < now)
            .order_by(Challenge.deadline)
            .limit(PERIODIC_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for challenge in overdue:
            challenge.status = ChallengeStatus.EXPIRED.value
            audit = lock_audit(session, challenge.audit_id)
            if audit is None or audit.status != AuditStatus.CHALLENGED:
                continue
            append_audit_event(
                session,
                audit,
                "challenge.expired",
                {"challenge_id": str(challenge.id), "deadline": challenge.deadline.isoformat()},
            )
            spec = ChallengeSpec.from_json(challenge.body)
            check = {
                "name": "deadline",
                "outcome": "fail",
                "figure": None,
                "detail": f"no response to challenge {challenge.id} by {challenge.deadline.isoformat()}",
            }
            write_verdict(session, context.signer, audit, Outcome.FAIL, _evidence(spec, [check]))
        return len(overdue)


# The job that moves an audit out of each working state; CHALLENGED waits on the provider instead.
_RESUME = {AuditStatus.PENDING.value: START_AUDIT, AuditStatus.VERIFYING.value: VERIFY_AUDIT}


def sweep_audits(context: "ServiceContext") -> int:
    """Re-enqueue audits left in a working state for longer than `stale_after_seconds`.

    The database, not the broker, says what is outstanding: after a flushed Redis, a lost message or a
    killed worker, this finds the audit and sends its task again (a duplicate is harmless)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=context.settings.stale_after_seconds)
    with context.db.unit_of_work() as session:
        stuck = session.scalars(
            select(Audit)
            .where(Audit.status.in_(list(_RESUME)), Audit.updated_at < cutoff)
            .order_by(Audit.updated_at)
            .limit(PERIODIC_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for audit in stuck:
            audit.updated_at = now
            audit.enqueue_count += 1
            append_audit_event(
                session,
                audit,
                "audit.requeued",
                {"status": audit.status, "enqueue_count": audit.enqueue_count},
            )
            context.dispatcher.enqueue(session, _RESUME[audit.status], str(audit.id))
        if stuck:
            log.info("sweeper re-enqueued %d audits", len(stuck))
        return len(stuck)


JOBS: dict[str, Callable[..., object]] = {
    START_AUDIT: start_audit,
    VERIFY_AUDIT: verify_audit,
    EXPIRE_CHALLENGES: expire_challenges,
    SWEEP_AUDITS: sweep_audits,
}
