"""Providers and their API keys (auditor admin)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, status

from api.deps import AdminDep, ProviderDep, SessionDep
from api.problems import COMMON_PROBLEMS, problem_responses
from api.providers.schemas import ApiKeyIssued, ApiKeyOut, ProviderCreate, ProviderCreated, ProviderOut
from service.providers.service import (
    get_provider,
    issue_api_key,
    list_api_keys,
    list_providers,
    register_provider,
    revoke_api_key,
)

router = APIRouter(prefix="/v1/providers", tags=["providers"], responses=COMMON_PROBLEMS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProviderCreated,
    responses=problem_responses(401, 403, 409),
)
def create_provider(payload: ProviderCreate, session: SessionDep, caller: AdminDep) -> ProviderCreated:
    """Register a provider and issue its first API key (returned once, never stored in clear)."""
    provider, key = register_provider(
        session, payload.name, payload.public_key, payload.challenge_deadline_seconds, actor=caller.actor
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
