"""The audit state machine, as jobs over the database (DESIGN §2 steps 3–6).

    pending --start_audit--> challenged --(API: response)--> verifying --verify_audit--> done
                                 ^  \\--expire_challenges (deadline missed)-------------> done (fail)
                                 \\------- next round (progressive exposure) <-------/

An audit reveals blocks in rounds (DESIGN §3 check 8): its exposure plan is drawn once when it starts,
each round's challenge is the plan's next blocks (cumulative), and a round whose verdict is still
`inconclusive` opens the next one until the plan — the exposure budget — is spent. A round that ends
`pass`, `suspect` (statistical evidence) or `fail` (proof) is the verdict. The scheduled audits of an
escalated provider (`Audit.full_exposure`, `service.scheduling`) reveal the whole plan in one round.

Each step is a job (`service.jobs`) that the Celery workers and the embedded dispatcher both run, and
each is idempotent: it locks the audit row and acts only if the audit is still in the state the job
expects, and a verdict is unique per audit. So a message delivered twice, a worker killed mid-task, or
a re-enqueue by the sweeper all end in exactly one verdict.

Recovery is driven by the database, not the broker: a verification holds a lease on its audit
(`heartbeat_at`, renewed every `heartbeat_interval_seconds`), and the sweeper, every
`sweep_interval_seconds`, re-enqueues an audit in a working state whose lease (or last move) is older
than `stale_after_seconds`. A killed worker or a flushed Redis thus costs at most stale + sweep period
(15 + 5 s by default) before the audit runs again, and a live verification is never started twice: a
second task finds the lease fresh and leaves.

The exposure plan is not stored: the audit keeps a secret seed (`exposure_seed`) and each round
re-derives the plan from it (`exposure_plan`), capped so that its cost does not grow with the count a
report claims.
"""

import dataclasses
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import blake3
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from auditor.protocol.challenge import DEFAULT_MAX_COUNT_OPENINGS, KeyedRandom
from auditor.protocol.challenge import Challenge as ChallengeSpec
from auditor.protocol.commitment import Commitment, PublicCommitment, response_size_bound
from auditor.protocol.verify import CheckResult
from auditor.semantic.exposure import ExposurePlan, ExposurePolicy, min_run_for, plan_exposure
from service.audits.verdicts import evidence_of, write_verdict
from service.context import ServiceContext
from service.events import append_audit_event
from service.jobs import Job, Queue, job
from service.metrics import SWEEPER_REQUEUES, VERIFICATION_SECONDS
from service.models import (
    Audit,
    AuditStatus,
    Challenge,
    ChallengeResponse,
    ChallengeStatus,
    Outcome,
    PlanGenerator,
    Report,
    utcnow,
)
from service.monitoring.calibration import copy_rule_for

log = structlog.get_logger(__name__)

# How many rows one run of a periodic job handles; the next run takes the rest.
PERIODIC_BATCH = 500
# Verifications of one audit that may raise before it is closed as `inconclusive`: more than one, so
# that a passing fault (a device out of memory, a time limit on a loaded worker) costs no verdict.
MAX_VERIFICATION_ERRORS = 3


def public_commitment_of(report: Report) -> PublicCommitment:
    return PublicCommitment.from_json(
        {"commitment": report.body["commitment"], "answer": report.body["answer"]}
    )


def lock_audit(session: Session, audit_id: uuid.UUID) -> Audit | None:
    """The audit row, locked until the end of the transaction (SELECT ... FOR UPDATE)."""
    return session.scalars(select(Audit).where(Audit.id == audit_id).with_for_update()).one_or_none()


# What one audit may reveal, whatever the count its report claims: beyond these the default policy's
# fractions (25 % of the blocks, 2 % of the tokens) are lowered. Without a cap, the plan of a report
# claiming 2**24 tokens grew with the claim, in the time to draw it and the room to store it, and its
# later rounds asked for more openings than one response may hold.
MAX_PLAN_BLOCKS = 256
MAX_PLAN_TOKENS = 4096


def exposure_policy(size: int, block_size: int) -> ExposurePolicy:
    """The default exposure policy, capped at MAX_PLAN_BLOCKS blocks and MAX_PLAN_TOKENS content tokens
    for a commitment of `size` leaves in blocks of `block_size`."""
    default = ExposurePolicy()
    blocks = -(-size // block_size)
    return ExposurePolicy(
        max_block_fraction=min(default.max_block_fraction, MAX_PLAN_BLOCKS / blocks),
        max_token_fraction=min(default.max_token_fraction, MAX_PLAN_TOKENS / size),
    )


def response_bytes_bound(commitment: Commitment) -> int:
    """The most bytes an honest response to any round of the service's plan for `commitment` takes: its
    last round asks for every token the plan reveals."""
    size, block_size = commitment.size, commitment.block_size
    policy = exposure_policy(size, block_size)
    blocks = policy.block_budget(-(-size // block_size))
    return response_size_bound(
        size,
        commitment.version,
        content_openings=min(size, policy.token_budget(size, blocks)),
        count_openings=min(size, DEFAULT_MAX_COUNT_OPENINGS),
    )


def new_exposure_seed(context: ServiceContext, audit_id: uuid.UUID) -> str:
    """256 bits from the CSPRNG; tests may pin a seed (refused in production) so that draws are
    reproducible."""
    pinned = context.settings.challenge_seed
    if pinned is not None:
        return blake3.blake3(f"{pinned}/{audit_id}".encode()).hexdigest()
    return secrets.token_hex(32)


def plan_for(
    commitment: Commitment,
    seed: str,
    *,
    full_exposure: bool = False,
    generator: PlanGenerator = PlanGenerator.BLAKE3,
) -> ExposurePlan:
    """The exposure plan the service draws for `commitment` from `seed` (64 hex) with `generator`; with
    `full_exposure`, the whole plan in its first round (the same blocks and tokens: only the rounds
    change)."""
    rng = KeyedRandom(bytes.fromhex(seed)) if generator == PlanGenerator.BLAKE3 else random.Random(seed)
    plan = plan_exposure(
        commitment.size,
        commitment.block_size,
        exposure_policy(commitment.size, commitment.block_size),
        rng,
        min_run_for(commitment.version),
    )
    return dataclasses.replace(plan, round_ends=(len(plan.blocks),)) if full_exposure else plan


def exposure_plan(audit: Audit, report: Report) -> ExposurePlan:
    """The audit's plan, derived again from its secret seed: the same plan every round (the seed never
    leaves the server, so the provider cannot tell which blocks later rounds will ask for)."""
    if audit.exposure_seed is None:
        raise RuntimeError(f"audit {audit.id} has no exposure seed: it has not started")
    return plan_for(
        public_commitment_of(report).commitment,
        audit.exposure_seed,
        full_exposure=audit.full_exposure,
        generator=audit.plan_generator,
    )


def open_round(session: Session, context: ServiceContext, audit: Audit, round_index: int) -> Challenge:
    """Issue round `round_index` (0-based) of the audit's exposure plan, with a fresh deadline."""
    report = session.get_one(Report, audit.report_id)
    plan = exposure_plan(audit, report)
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
        status=ChallengeStatus.OPEN,
        issued_at=now,
        deadline=now + timedelta(seconds=deadline_seconds),
    )
    session.add(challenge)
    audit.status = AuditStatus.CHALLENGED
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
    log.info(
        "challenge.issued", audit_id=str(audit.id), challenge_id=str(challenge.id), round=challenge.round
    )
    return challenge


@job("coin.audit.start")
def start_audit(context: ServiceContext, audit_id: str) -> None:
    """Draw the exposure plan of a pending audit (after its report is stored) and open its first round."""
    with context.db.unit_of_work() as session:
        audit = lock_audit(session, uuid.UUID(audit_id))
        if audit is None or audit.status != AuditStatus.PENDING:
            return
        audit.exposure_seed = new_exposure_seed(context, audit.id)
        audit.plan_generator = PlanGenerator.BLAKE3
        open_round(session, context, audit, 0)


def _claim(context: ServiceContext, audit_id: uuid.UUID) -> bool:
    """Take the verification lease of an audit that is waiting for it: False when the audit is not
    verifying, or when another task holds a fresh lease (a duplicate message: it must not verify twice)."""
    now = utcnow()
    stale = now - timedelta(seconds=context.settings.stale_after_seconds)
    with context.db.unit_of_work() as session:
        claimed = session.execute(
            update(Audit)
            .where(
                Audit.id == audit_id,
                Audit.status == AuditStatus.VERIFYING,
                (Audit.heartbeat_at.is_(None)) | (Audit.heartbeat_at < stale),
            )
            .values(heartbeat_at=now)
            .returning(Audit.id)
        ).first()
    return claimed is not None


@contextmanager
def _heartbeat(context: ServiceContext, audit_id: uuid.UUID) -> Iterator[None]:
    """Renew the lease every `heartbeat_interval_seconds` while the block runs (from a thread: the
    verification itself holds no connection)."""
    stopped = threading.Event()

    def beat() -> None:
        while not stopped.wait(context.settings.heartbeat_interval_seconds):
            try:
                with context.db.unit_of_work() as session:
                    session.execute(
                        update(Audit)
                        .where(Audit.id == audit_id, Audit.status == AuditStatus.VERIFYING)
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:
                # A missed beat costs nothing while the next ones land; if none does, the lease goes
                # stale and the sweeper hands the audit to another worker, which is the point.
                log.warning("audit.heartbeat_failed", audit_id=str(audit_id), exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{audit_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


@job("coin.audit.verify", queue=Queue.GPU)
def verify_audit(context: ServiceContext, audit_id: str) -> None:
    """Verify the stored response of an audit and write its signed verdict (or open the next round).

    The expensive part runs outside any transaction, so no lock is held while embedding (the lease,
    renewed by a heartbeat, keeps other tasks off the audit); the verdict is written under the audit
    lock only if the audit is still waiting for it."""
    audit_uuid = uuid.UUID(audit_id)
    if not _claim(context, audit_uuid):
        return
    with _heartbeat(context, audit_uuid):
        _verify_claimed(context, audit_uuid)


def _verify_claimed(context: ServiceContext, audit_uuid: uuid.UUID) -> None:
    # Imported here: it loads torch, which a process that never verifies (the API with a broker) skips.
    from service.audits.verification import verify_round

    audit_id = str(audit_uuid)
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
        copy_rule = copy_rule_for(session, report.provider_id)

    started = time.perf_counter()
    if context.settings.verify_delay_seconds:
        time.sleep(context.settings.verify_delay_seconds)
    try:
        policy = exposure_policy(public.commitment.size, public.commitment.block_size)
        result = verify_round(
            context.settings, public, spec, response_body, copy_rule=copy_rule, policy=policy
        )
    except Exception as error:
        _record_verification_error(context, audit_uuid, round_index, spec, error)
        raise
    VERIFICATION_SECONDS.observe(time.perf_counter() - started)

    with context.db.unit_of_work() as session:
        audit = _still_verifying(session, audit_uuid, round_index)
        if audit is None:
            return
        audit.heartbeat_at = None  # the lease ends with this transaction
        plan = exposure_plan(audit, session.get_one(Report, audit.report_id))
        if result.wants_more_blocks and round_index + 1 < plan.rounds:
            open_round(session, context, audit, round_index + 1)
            return
        write_verdict(
            session,
            context,
            audit,
            result.outcome,
            result.evidence,
            result.decided_by,
            planned_blocks=len(plan.blocks),
        )
    log.info(
        "audit.verdict",
        audit_id=audit_id,
        report_id=str(audit.report_id),
        provider_id=str(audit.provider_id),
        outcome=result.outcome.value,
        failed_checks=result.evidence["proof_failures"],
        flagged_checks=result.evidence["statistical_flags"],
        rounds=round_index + 1,
    )


def _still_verifying(session: Session, audit_uuid: uuid.UUID, round_index: int) -> Audit | None:
    """The audit, locked, if it still waits for the verification of round `round_index`."""
    audit = lock_audit(session, audit_uuid)
    if audit is None or audit.status != AuditStatus.VERIFYING:
        return None
    latest = session.scalar(select(func.max(Challenge.round)).where(Challenge.audit_id == audit_uuid))
    if latest != round_index + 1:
        # This worker's lease went stale and another took the audit on to a later round, whose answer
        # this worker's result is not about: that worker decides it.
        log.warning(
            "audit.verification_superseded", audit_id=str(audit_uuid), round=round_index + 1, latest=latest
        )
        return None
    return audit


def _record_verification_error(
    context: ServiceContext, audit_uuid: uuid.UUID, round_index: int, spec: ChallengeSpec, error: Exception
) -> None:
    """Count a verification that raised on its audit and release the lease, so that the sweeper tries
    again; at `MAX_VERIFICATION_ERRORS` the audit is closed as `inconclusive`, which accuses nobody.

    A worker that dies counts nothing (it never gets here), so only a job that keeps failing is closed —
    a defect of the auditor's, or a response that crashes the verifier, which staff then see named in
    the verdict's evidence instead of an audit re-queued for ever."""
    # The trail and the verdict, which the provider reads, name the error's type only: its message may
    # quote the response or the auditor's internals. The log keeps the traceback.
    kind = type(error).__name__
    log.exception("audit.verification_error", audit_id=str(audit_uuid), round=round_index + 1, error=kind)
    with context.db.unit_of_work() as session:
        audit = _still_verifying(session, audit_uuid, round_index)
        if audit is None:
            return
        audit.verification_errors += 1
        audit.heartbeat_at = None
        audit.updated_at = utcnow()
        append_audit_event(
            session,
            audit,
            "audit.verification_failed",
            {"round": round_index + 1, "error": kind, "verification_errors": audit.verification_errors},
        )
        if audit.verification_errors < MAX_VERIFICATION_ERRORS:
            return
        check = CheckResult(
            "protocol",
            "inconclusive",
            None,
            f"the auditor's verification raised {kind} on {audit.verification_errors} attempts: not verified",
        )
        _decide_by_one_check(session, context, audit, spec, check, Outcome.INCONCLUSIVE)
    log.warning("audit.verdict", audit_id=str(audit_uuid), outcome=Outcome.INCONCLUSIVE.value, error=kind)


def _decide_by_one_check(
    session: Session,
    context: ServiceContext,
    audit: Audit,
    spec: ChallengeSpec,
    check: CheckResult,
    outcome: Outcome,
) -> dict[str, Any]:
    """Write the verdict of one check the service itself decided (no head ran); returns its evidence."""
    evidence = evidence_of(spec, [check.to_json()])
    report = session.get_one(Report, audit.report_id)
    decided_by = {"embd_id": report.body["commitment"]["embd_id"], "heads": None}
    planned_blocks = len(exposure_plan(audit, report).blocks)
    write_verdict(session, context, audit, outcome, evidence, decided_by, planned_blocks=planned_blocks)
    return evidence


@job("coin.challenges.expire", every=lambda settings: settings.expire_interval_seconds)
def expire_challenges(context: ServiceContext) -> int:
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
            challenge.status = ChallengeStatus.EXPIRED
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
            # An unanswered challenge is a count opening not given: a failed proof, decided by no head.
            check = CheckResult(
                "deadline",
                "fail",
                None,
                f"no response to challenge {challenge.id} by {challenge.deadline.isoformat()}",
                kind="proof",
            )
            evidence = _decide_by_one_check(session, context, audit, spec, check, Outcome.FAIL)
            log.info(
                "audit.verdict",
                audit_id=str(audit.id),
                outcome=Outcome.FAIL.value,
                failed_checks=evidence["proof_failures"],
                flagged_checks=evidence["statistical_flags"],
            )
        return len(overdue)


# The job that moves an audit out of each working state; CHALLENGED waits on the provider instead.
_RESUME: dict[AuditStatus, Job[None]] = {
    AuditStatus.PENDING: start_audit,
    AuditStatus.VERIFYING: verify_audit,
}


@job("coin.audits.sweep", every=lambda settings: settings.sweep_interval_seconds)
def sweep_audits(context: ServiceContext) -> int:
    """Re-enqueue audits in a working state whose lease (or, with none, last move) is older than
    `stale_after_seconds`.

    The database, not the broker, says what is outstanding: after a flushed Redis, a lost message or a
    killed worker, this finds the audit and sends its job again (a duplicate is harmless: the lease
    keeps it from verifying twice)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=context.settings.stale_after_seconds)
    with context.db.unit_of_work() as session:
        stuck = session.scalars(
            select(Audit)
            .where(
                Audit.status.in_(list(_RESUME)),
                func.coalesce(Audit.heartbeat_at, Audit.updated_at) < cutoff,
            )
            .order_by(Audit.updated_at)
            .limit(PERIODIC_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for audit in stuck:
            SWEEPER_REQUEUES.labels(audit.status.value).inc()
            audit.updated_at = now
            audit.heartbeat_at = None  # a stale lease is a dead worker's: the next task may take it
            audit.enqueue_count += 1
            append_audit_event(
                session,
                audit,
                "audit.requeued",
                {"status": audit.status.value, "enqueue_count": audit.enqueue_count},
            )
            context.dispatcher.enqueue(session, _RESUME[audit.status], str(audit.id))
        if stuck:
            log.info("audits.requeued", count=len(stuck))
        return len(stuck)
