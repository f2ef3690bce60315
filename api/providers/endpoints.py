"""Providers and their API keys (auditor admin)."""

from fastapi import APIRouter, status
from sqlalchemy import select

from api.deps import AdminDep, ProviderDep, SessionDep
from api.problems import COMMON_PROBLEMS, problem_responses
from api.providers.schemas import ProviderCreate, ProviderCreated, ProviderOut
from service.errors import Conflict
from service.events import append_event
from service.models import ApiKey, Provider
from service.security import new_api_key

router = APIRouter(prefix="/v1/providers", tags=["providers"], responses=COMMON_PROBLEMS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProviderCreated,
    responses=problem_responses(401, 403, 409),
)
def create_provider(payload: ProviderCreate, session: SessionDep, _: AdminDep) -> ProviderCreated:
    """Register a provider and issue its first API key (returned once, never stored in clear)."""
    if session.scalars(select(Provider.id).where(Provider.name == payload.name)).first() is not None:
        raise Conflict(f"a provider named {payload.name!r} already exists")
    provider = Provider(
        name=payload.name,
        public_key=payload.public_key,
        challenge_deadline_seconds=payload.challenge_deadline_seconds,
    )
    session.add(provider)
    session.flush()
    key = new_api_key()
    session.add(ApiKey(provider_id=provider.id, prefix=key.prefix, secret_hash=key.secret_hash))
    append_event(session, "provider.created", provider_id=provider.id, payload={"name": provider.name})
    append_event(session, "api_key.issued", provider_id=provider.id, payload={"prefix": key.prefix})
    return ProviderCreated(**ProviderOut.model_validate(provider).model_dump(), api_key=key.key)


@router.get("", response_model=list[ProviderOut], responses=problem_responses(401, 403))
def list_providers(session: SessionDep, _: AdminDep) -> list[ProviderOut]:
    return [
        ProviderOut.model_validate(p) for p in session.scalars(select(Provider).order_by(Provider.created_at))
    ]


@router.get("/me", response_model=ProviderOut, responses=problem_responses(401, 403))
def who_am_i(provider: ProviderDep) -> ProviderOut:
    """The provider that the API key belongs to."""
    return ProviderOut.model_validate(provider)
