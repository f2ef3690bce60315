"""Signed verdicts (DESIGN §3 "Verdict"): what the auditor states about one audit, and its evidence."""

from typing import Any

from sqlalchemy.orm import Session

from auditor.protocol.challenge import DEFAULT_EPSILON, Challenge, detection_probability
from service.events import append_audit_event
from service.models import Audit, AuditStatus, Outcome, Report, Verdict, utcnow
from service.security import Signer

VERDICT_VERSION = "coin-verdict/1"


def evidence_of(challenge: Challenge, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict's evidence: each check with its figure, and what the challenge exposed."""
    k = len(challenge.count_indices)
    return {
        "checks": checks,
        "count_openings": k,
        "detection_probability_at_5_percent": detection_probability(DEFAULT_EPSILON, k),
        "exposure": {"blocks": challenge.block_exposure, "tokens": challenge.token_visibility},
    }


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
        outcome=outcome,
        statement=statement,
        signature=signer.sign(statement),
        signing_key=signer.public_key_hex,
        decided_at=decided_at,
    )
    session.add(verdict)
    audit.status = AuditStatus.DONE
    audit.updated_at = decided_at
    session.flush()
    append_audit_event(
        session,
        audit,
        "verdict.issued",
        {"verdict_id": str(verdict.id), "outcome": outcome.value, "signature": verdict.signature},
    )
    return verdict
