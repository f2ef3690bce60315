"""Challenges: a provider fetches its open ones and answers each once, before its deadline."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import select

from api.challenges.schemas import ChallengeOut, ResponseAccepted, ResponseIn
from api.deps import ContextDep, ProviderDep, Role, SessionDep, StaffDep
from api.problems import COMMON_PROBLEMS, problem_responses
from auditor.protocol.challenge import Challenge as ChallengeSpec
from service.audits.service import accept_response
from service.models import Audit, Challenge, ChallengeStatus, Report

router = APIRouter(prefix="/v1/challenges", tags=["challenges"], responses=COMMON_PROBLEMS)


@router.get("", response_model=list[ChallengeOut], responses=problem_responses(401, 403))
def list_challenges(
    session: SessionDep,
    caller: StaffDep,
    challenge_status: Annotated[ChallengeStatus | None, Query(alias="status", examples=["open"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ChallengeOut]:
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
        query = query.where(Challenge.status == challenge_status)
    out = []
    for challenge, report_id, request_id in session.execute(query):
        spec = ChallengeSpec.from_json(challenge.body)
        out.append(
            ChallengeOut(
                challenge_id=challenge.id,
                audit_id=challenge.audit_id,
                report_id=report_id,
                request_id=request_id,
                round=challenge.round,
                status=challenge.status,
                issued_at=challenge.issued_at,
                deadline=challenge.deadline,
                indices=list(spec.indices),
                content_indices=list(spec.content_indices),
                challenge=challenge.body,
            )
        )
    return out


@router.post(
    "/{challenge_id}/response",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResponseAccepted,
    responses=problem_responses(400, 401, 403, 404, 409, 410),
)
def respond(
    challenge_id: uuid.UUID,
    payload: ResponseIn,
    session: SessionDep,
    context: ContextDep,
    provider: ProviderDep,
) -> ResponseAccepted:
    """Answer a challenge with the openings and inclusion proofs it asks for; verification is queued."""
    audit = accept_response(session, context, provider, challenge_id, payload.model_dump(mode="json"))
    return ResponseAccepted(challenge_id=challenge_id, audit_id=audit.id, status=audit.status)
