"""Providers and their API keys (auditor admin)."""

from fastapi import APIRouter, status

from api.deps import AdminDep, ProviderDep, SessionDep
from api.problems import COMMON_PROBLEMS, problem_responses
from api.providers.schemas import ProviderCreate, ProviderCreated, ProviderOut
from service.providers.service import list_providers, register_provider

router = APIRouter(prefix="/v1/providers", tags=["providers"], responses=COMMON_PROBLEMS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProviderCreated,
    responses=problem_responses(401, 403, 409),
)
def create_provider(payload: ProviderCreate, session: SessionDep, _: AdminDep) -> ProviderCreated:
    """Register a provider and issue its first API key (returned once, never stored in clear)."""
    provider, key = register_provider(
        session, payload.name, payload.public_key, payload.challenge_deadline_seconds
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
