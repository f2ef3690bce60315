"""Request and response schemas of the audits resource."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import Page
from service.models import Audit, AuditStatus, AuditTrigger, ChallengeStatus, Outcome, Verdict


class AuditCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21"}]},
    )

    report_id: uuid.UUID = Field(strict=False, description="the report to audit")


class AuditAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11", "status": "pending", "created": True}
            ]
        }
    )

    audit_id: uuid.UUID
    status: AuditStatus
    created: bool = Field(description="False when an audit of this report was already running: that one")


class ChallengeSummary(BaseModel):
    challenge_id: uuid.UUID
    round: int
    status: ChallengeStatus
    issued_at: datetime
    deadline: datetime


class VerdictOut(BaseModel):
    outcome: Outcome = Field(
        description="fail = proof of inflation (a proof check failed); suspect = statistical evidence, "
        "which raises the provider's monitoring and accuses nobody; pass; inconclusive = no decision"
    )
    proof_failures: list[str] = Field(
        description="the proof checks that failed (each is proof of inflation): why the outcome is fail; "
        "empty for coin-verdict/1 statements, which did not tell proof from statistics"
    )
    statistical_flags: list[str] = Field(
        description="the statistical checks that flagged the trace (evidence for monitoring, no "
        "accusation): why the outcome is suspect; their figures and thresholds are in the statement"
    )
    decided_at: datetime
    statement: dict[str, Any] = Field(
        description="what is signed (coin-verdict/3): outcome, evidence (every check with its kind, "
        "figure and threshold), decided_by (embedding model, head checkpoint and the calibration of the "
        "provider's monitor), ids"
    )
    signature: str = Field(description="Ed25519 over the RFC 8785 canonical JSON of statement, hex")
    signing_key: str = Field(description="the auditor's public key, hex")

    @classmethod
    def of(cls, verdict: Verdict) -> "VerdictOut":
        evidence = verdict.statement.get("evidence", {})
        return cls(
            outcome=verdict.stated_outcome,
            proof_failures=evidence.get("proof_failures", []),
            statistical_flags=evidence.get("statistical_flags", []),
            decided_at=verdict.decided_at,
            statement=verdict.statement,
            signature=verdict.signature,
            signing_key=verdict.signing_key,
        )


class AuditOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11",
                    "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                    "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "request_id": "chatcmpl-9f2c4e1a",
                    "status": "done",
                    "trigger": "admin",
                    "created_at": "2025-01-01T12:00:00Z",
                    "updated_at": "2025-01-01T12:00:09Z",
                    "challenges": [],
                    "verdict": None,
                }
            ]
        }
    )

    audit_id: uuid.UUID
    report_id: uuid.UUID
    provider_id: uuid.UUID
    request_id: str
    status: AuditStatus
    trigger: AuditTrigger
    created_at: datetime
    updated_at: datetime
    challenges: list[ChallengeSummary]
    verdict: VerdictOut | None

    @classmethod
    def of(cls, audit: Audit) -> "AuditOut":
        verdict = audit.verdict
        return cls(
            audit_id=audit.id,
            report_id=audit.report_id,
            provider_id=audit.provider_id,
            request_id=audit.report.request_id,
            status=audit.status,
            trigger=audit.trigger,
            created_at=audit.created_at,
            updated_at=audit.updated_at,
            challenges=[
                ChallengeSummary(
                    challenge_id=c.id,
                    round=c.round,
                    status=c.status,
                    issued_at=c.issued_at,
                    deadline=c.deadline,
                )
                for c in audit.challenges
            ],
            verdict=None if verdict is None else VerdictOut.of(verdict),
        )


class AuditPage(Page[AuditOut]):
    """Audits, newest first."""
