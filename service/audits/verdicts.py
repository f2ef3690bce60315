"""Signed verdicts (DESIGN §3 "Verdict"): what the auditor states about one audit, and its evidence.

The statement format is `coin-verdict/3` (docs/protocol.md, "Verdicts"): the outcome is `pass`,
`suspect`, `fail` or `inconclusive`; `fail` is reserved for proof checks and `suspect` for statistical
ones, and the evidence names both apart; `decided_by` names the embedding model, the head checkpoint
and the calibration of the provider's monitor (3 added the calibration). The signature covers the
RFC 8785 canonical JSON of the statement.

The verdict's transaction also updates the provider's monitor (`service.monitoring.service`): the
monitor counts every scheduled audit's verdict and any audit's `fail`, each exactly once, and the
calibration the statement names is the one in force, which counted it if it counts.
"""

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from auditor.protocol.challenge import DEFAULT_EPSILON, Challenge, detection_probability
from service.events import append_audit_event, row_digest
from service.models import Audit, AuditStatus, Outcome, Report, Verdict, utcnow
from service.monitoring.service import open_monitor, record_verdict

if TYPE_CHECKING:
    from service.context import ServiceContext

VERDICT_VERSION = "coin-verdict/3"

# What decided a verdict: the embedding model id, the head checkpoint (None when no head ran) and, added
# by `write_verdict`, the calibration of the provider's monitor ("shipped" or "<domain>@<version>").
DecidedBy = dict[str, str | None]

# What a `verdicts` row says, vouched for by its `verdict.issued` event (`row_digest` in the payload).
VERDICT_ROW_FIELDS = ("id", "audit_id", "outcome", "statement", "signature", "signing_key", "decided_at")


def proof_failures(checks: list[dict[str, Any]]) -> list[str]:
    """Names of the proof checks that failed: each is proof of inflation on its own."""
    return [c["name"] for c in checks if c["kind"] == "proof" and c["outcome"] == "fail"]


def statistical_flags(checks: list[dict[str, Any]]) -> list[str]:
    """Names of the statistical checks that flagged the trace: evidence, no accusation."""
    return [c["name"] for c in checks if c["kind"] == "statistical" and c["outcome"] == "suspect"]


def evidence_of(challenge: Challenge, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict's evidence: each check (`CheckResult.to_json()`: kind, outcome, figure, threshold,
    detail), which proof checks failed and which statistical checks flagged, and what the challenge
    exposed."""
    k = len(challenge.count_indices)
    return {
        "checks": checks,
        "proof_failures": proof_failures(checks),
        "statistical_flags": statistical_flags(checks),
        "count_openings": k,
        "detection_probability_at_5_percent": detection_probability(DEFAULT_EPSILON, k),
        "exposure": {"blocks": challenge.block_exposure, "tokens": challenge.token_visibility},
    }


def write_verdict(
    session: Session,
    context: "ServiceContext",
    audit: Audit,
    outcome: Outcome,
    evidence: dict[str, Any],
    decided_by: DecidedBy,
    *,
    planned_blocks: int,
) -> Verdict:
    """Sign and store the verdict, close the audit, record the event and update the provider's monitor
    (caller holds the audit lock). `planned_blocks`: the blocks the audit's exposure plan allows."""
    report = session.get_one(Report, audit.report_id)
    decided_at = utcnow()
    monitor = open_monitor(session, audit.provider_id, decided_at)
    signer = context.signer
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
        "decided_by": {**decided_by, "calibration": monitor.calibration},
        "decided_at": decided_at.isoformat(timespec="microseconds"),
    }
    verdict = Verdict(
        id=uuid.uuid4(),
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
        {
            "verdict_id": str(verdict.id),
            "outcome": outcome.value,
            "signature": verdict.signature,
            "row_digest": row_digest(
                {name: getattr(verdict, name) for name in VERDICT_ROW_FIELDS}, VERDICT_ROW_FIELDS
            ),
        },
    )
    record_verdict(session, context, monitor, audit, statement, planned_blocks)
    return verdict
