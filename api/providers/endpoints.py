"""Providers, their API keys, sampling policies and monitoring standing (auditor admin)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, status

from api.deps import AdminDep, ContextDep, ProviderDep, SessionDep
from api.problems import COMMON_PROBLEMS, problem_responses
from api.providers.schemas import (
    ApiKeyIssued,
    ApiKeyOut,
    PolicyIn,
    PolicyOut,
    ProviderCreate,
    ProviderCreated,
    ProviderOut,
    StandingOut,
)
from service.errors import NotFound
from service.monitoring.service import standing
from service.providers.service import (
    get_provider,
    issue_api_key,
    list_api_keys,
    list_providers,
    register_provider,
    revoke_api_key,
)
from service.scheduling.service import get_policy, set_policy

router = APIRouter(prefix="/v1/providers", tags=["providers"], responses=COMMON_PROBLEMS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProviderCreated,
    responses=problem_responses(401, 403, 409),
)
def create_provider(
    payload: ProviderCreate, session: SessionDep, context: ContextDep, caller: AdminDep
) -> ProviderCreated:
    """Register a provider and issue its first API key (returned once, never stored in clear)."""
    provider, key = register_provider(
        session,
        payload.name,
        payload.public_key,
        payload.challenge_deadline_seconds,
        longest_deadline_seconds=context.settings.longest_challenge_deadline_seconds,
        actor=caller.actor,
    )
    return ProviderCreated.model_validate(
        {**ProviderOut.model_validate(provider).model_dump(), "api_key": key.key}
    )


@router.get("", response_model=list[ProviderOut], responses=problem_responses(401, 403))
def get_providers(session: SessionDep, _: AdminDep) -> list[ProviderOut]:
    """Every registered provider, oldest first."""
    return [ProviderOut.model_validate(provider) for provider in list_providers(session)]


@router.get("/me", response_model=ProviderOut, responses=problem_responses(401, 403))
def who_am_i(provider: ProviderDep) -> ProviderOut:
    """The provider that the API key belongs to."""
    return ProviderOut.model_validate(provider)


KeyPrefix = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="the key's prefix")]


@router.get("/{provider_id}/keys", response_model=list[ApiKeyOut], responses=problem_responses(401, 403, 404))
def get_keys(provider_id: uuid.UUID, session: SessionDep, _: AdminDep) -> list[ApiKeyOut]:
    """The provider's keys, newest first, revoked ones included: prefixes and dates, never secrets."""
    return [
        ApiKeyOut.model_validate(key) for key in list_api_keys(session, get_provider(session, provider_id))
    ]


@router.post(
    "/{provider_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyIssued,
    responses=problem_responses(401, 403, 404),
)
def rotate_key(provider_id: uuid.UUID, session: SessionDep, caller: AdminDep) -> ApiKeyIssued:
    """Issue a new key (shown once). The provider's other keys stay valid until revoked: deploy the new
    key, then revoke the old one. Recorded in the audit trail."""
    row, key = issue_api_key(session, get_provider(session, provider_id), actor=caller.actor)
    return ApiKeyIssued.model_validate({**ApiKeyOut.model_validate(row).model_dump(), "api_key": key.key})


@router.delete(
    "/{provider_id}/keys/{prefix}", response_model=ApiKeyOut, responses=problem_responses(401, 403, 404)
)
def revoke_key(provider_id: uuid.UUID, prefix: KeyPrefix, session: SessionDep, caller: AdminDep) -> ApiKeyOut:
    """Revoke a key: from now on it authenticates nothing (401). Revoking it again changes nothing.
    Recorded in the audit trail."""
    key = revoke_api_key(session, get_provider(session, provider_id), prefix, actor=caller.actor)
    return ApiKeyOut.model_validate(key)


@router.get("/{provider_id}/policy", response_model=PolicyOut, responses=problem_responses(401, 403, 404))
def get_sampling_policy(
    provider_id: uuid.UUID, session: SessionDep, context: ContextDep, _: AdminDep
) -> PolicyOut:
    """The provider's sampling policy and the state of its escalation; 404 when it has none (it is not
    sampled on a schedule)."""
    policy = get_policy(session, get_provider(session, provider_id))
    if policy is None:
        raise NotFound("this provider has no sampling policy: it is not audited on a schedule")
    return PolicyOut.of(policy, context.settings.retention_days)


@router.put("/{provider_id}/policy", response_model=PolicyOut, responses=problem_responses(401, 403, 404))
def put_sampling_policy(
    provider_id: uuid.UUID, payload: PolicyIn, session: SessionDep, context: ContextDep, caller: AdminDep
) -> PolicyOut:
    """Set the provider's sampling policy (a term left out takes its default). An escalation in progress
    stays. Recorded in the audit trail."""
    provider = get_provider(session, provider_id)
    policy = set_policy(session, provider, payload.terms(), actor=caller.actor)
    return PolicyOut.of(policy, context.settings.retention_days)


@router.get("/{provider_id}/standing", response_model=StandingOut, responses=problem_responses(401, 403, 404))
def get_standing(provider_id: uuid.UUID, session: SessionDep, _: AdminDep) -> StandingOut:
    """The provider's monitor this period: e-value, alarm, lower bound on the share of inflated reports."""
    provider = get_provider(session, provider_id)
    return StandingOut.of(provider.id, standing(session, provider.id))
