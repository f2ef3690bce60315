"""Challenges: a provider fetches its open ones and answers each once, before its deadline."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from api.challenges.schemas import ChallengeOut, ChallengePage, ResponseAccepted, ResponseIn
from api.deps import ContextDep, ListQuery, ProviderDep, SessionDep, list_query
from api.problems import COMMON_PROBLEMS, problem_responses
from service.audits.repository import list_challenges
from service.audits.service import accept_response
from service.models import ChallengeStatus

router = APIRouter(prefix="/v1/challenges", tags=["challenges"], responses=COMMON_PROBLEMS)


@router.get("", response_model=ChallengePage, responses=problem_responses(401, 403))
def get_challenges(
    session: SessionDep,
    listed: Annotated[ListQuery, Depends(list_query("issued"))],
    challenge_status: Annotated[ChallengeStatus | None, Query(alias="status", examples=["open"])] = None,
) -> ChallengePage:
    """Challenges, soonest deadline first (`status=open`: those waiting for an answer), filtered; a page
    at a time (`next_cursor`). A provider sees only its own."""
    page = list_challenges(session, listed.filters, listed.page, status=challenge_status)
    return ChallengePage.of(page, ChallengeOut.of)


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
    # exclude_unset: a coin/1 response is stored as sent, without a `repetition` it never had
    body = payload.model_dump(mode="json", exclude_unset=True)
    audit = accept_response(session, context, provider, challenge_id, body)
    return ResponseAccepted(challenge_id=challenge_id, audit_id=audit.id, status=audit.status)
