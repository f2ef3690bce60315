"""Challenges: a provider fetches its open ones and answers each once, before its deadline."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from api.auditing import accept_response
from api.deps import ContextDep, ProviderDep, Role, SessionDep, StaffDep
from api.models import Audit, Challenge, ChallengeStatus, Report
from api.validation import check_storable
from auditor.challenge import Challenge as ChallengeSpec

router = APIRouter(prefix="/v1/challenges", tags=["challenges"])


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
    status: str = Field(description="open | answered | expired")
    issued_at: datetime
    deadline: datetime
    indices: list[int] = Field(description="every leaf index to open")
    content_indices: list[int] = Field(description="indices to open with fingerprint and token")
    challenge: dict[str, Any] = Field(description="the challenge as drawn (DESIGN §3)")


class ResponseIn(BaseModel):
    """DESIGN §3 "Response"; each opening is checked by the protocol library (400 when malformed)."""

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
                    ]
                }
            ]
        },
    )

    openings: list[dict[str, Any]] = Field(max_length=100_000)

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: Any) -> Any:
        return check_storable(data)


class ResponseAccepted(BaseModel):
    challenge_id: uuid.UUID
    audit_id: uuid.UUID
    status: str


@router.get("", response_model=list[ChallengeOut])
def list_challenges(
    session: SessionDep,
    caller: StaffDep,
    challenge_status: Annotated[ChallengeStatus | None, Query(alias="status", examples=["open"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Challenges waiting for an answer (`status=open`), oldest deadline first. A provider sees its own."""
    query = (
        select(Challenge, Audit.report_id, Report.request_id)
        .join(Audit, Audit.id == Challenge.audit_id)
        .join(Report, Report.id == Audit.report_id)
        .order_by(Challenge.deadline, Challenge.id)
        .limit(limit)
    )
    if caller.role == Role.PROVIDER:
        query = query.where(Challenge.provider_id == caller.provider_id)
    if challenge_status is not None:
        query = query.where(Challenge.status == challenge_status.value)
    out = []
    for challenge, report_id, request_id in session.execute(query):
        spec = ChallengeSpec.from_json(challenge.body)
        out.append(
            {
                "challenge_id": challenge.id,
                "audit_id": challenge.audit_id,
                "report_id": report_id,
                "request_id": request_id,
                "round": challenge.round,
                "status": challenge.status,
                "issued_at": challenge.issued_at,
                "deadline": challenge.deadline,
                "indices": list(spec.indices),
                "content_indices": list(spec.content_indices),
                "challenge": challenge.body,
            }
        )
    return out


@router.post(
    "/{challenge_id}/response",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResponseAccepted,
    responses={
        400: {"description": "the response is malformed (it may be corrected before the deadline)"},
        404: {"description": "no such challenge for this provider"},
        409: {"description": "the challenge was already answered"},
        410: {"description": "the deadline has passed"},
    },
)
def respond(
    challenge_id: uuid.UUID,
    payload: ResponseIn,
    session: SessionDep,
    context: ContextDep,
    provider: ProviderDep,
) -> dict[str, Any]:
    """Answer a challenge with the openings and inclusion proofs it asks for; verification is queued."""
    audit = accept_response(session, context, provider, challenge_id, payload.model_dump(mode="json"))
    return {"challenge_id": challenge_id, "audit_id": audit.id, "status": audit.status}
