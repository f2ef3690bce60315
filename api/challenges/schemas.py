"""Request and response schemas of the challenges resource."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import Page, StorableBody
from auditor.protocol.challenge import Challenge as ChallengeSpec
from service.models import AuditStatus, Challenge, ChallengeStatus


class ChallengeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "challenge_id": "7c1e9d0b-2a44-4f6e-8b3d-5e0f1a2b3c4d",
                    "audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11",
                    "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                    "request_id": "chatcmpl-9f2c4e1a",
                    "round": 1,
                    "status": "open",
                    "issued_at": "2025-01-01T12:00:01Z",
                    "deadline": "2025-01-01T13:00:01Z",
                    "indices": [0, 17, 1186],
                    "content_indices": [17],
                    "challenge": {
                        "size": 1187,
                        "block_size": 256,
                        "count_indices": [0, 1186],
                        "block_indices": [0],
                        "block_token_indices": [17],
                    },
                }
            ]
        }
    )

    challenge_id: uuid.UUID
    audit_id: uuid.UUID
    report_id: uuid.UUID
    request_id: str
    round: int
    status: ChallengeStatus
    issued_at: datetime
    deadline: datetime
    indices: list[int] = Field(description="every leaf index to open")
    content_indices: list[int] = Field(description="indices to open with fingerprint and token")
    challenge: dict[str, Any] = Field(description="the challenge as drawn (DESIGN §3)")

    @classmethod
    def of(cls, challenge: Challenge) -> "ChallengeOut":
        """`challenge` with its audit and the audit's report loaded."""
        spec = ChallengeSpec.from_json(challenge.body)
        return cls(
            challenge_id=challenge.id,
            audit_id=challenge.audit_id,
            report_id=challenge.audit.report_id,
            request_id=challenge.audit.report.request_id,
            round=challenge.round,
            status=challenge.status,
            issued_at=challenge.issued_at,
            deadline=challenge.deadline,
            indices=list(spec.indices),
            content_indices=list(spec.content_indices),
            challenge=challenge.body,
        )


class ChallengePage(Page[ChallengeOut]):
    """Challenges, soonest deadline first."""


class ResponseIn(StorableBody):
    """DESIGN §3 "Response"; each opening is checked by the protocol library (400 when malformed). A
    coin/2 report's responses carry its repetition profile (docs/protocol.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "openings": [
                        {
                            "index": 0,
                            "salt": "00" * 16,
                            "fingerprint_digest": "ab" * 32,
                            "proof": ["cd" * 32],
                        },
                        {
                            "index": 17,
                            "salt": "11" * 16,
                            "fingerprint": "<base64 of 768 int8>",
                            "token": "IHRoZQ==",
                            "proof": ["ef" * 32],
                        },
                    ],
                    "repetition": {
                        "profile": "<base64 of 4 bytes per committed token>",
                        "keys": [{"bucket": 941, "key": "5a" * 32, "proof": ["12" * 32]}],
                    },
                }
            ]
        },
    )

    openings: list[dict[str, Any]] = Field(max_length=100_000)
    repetition: dict[str, Any] | None = Field(
        None, description="coin/2: the repetition profile and the bucket keys the content openings need"
    )


class ResponseAccepted(BaseModel):
    challenge_id: uuid.UUID
    audit_id: uuid.UUID
    status: AuditStatus
