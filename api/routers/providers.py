"""Providers and their API keys (auditor admin)."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from api.deps import AdminDep, ProviderDep, SessionDep
from api.errors import Conflict
from api.events import append_event
from api.models import ApiKey, Provider
from api.security import new_api_key
from api.validation import check_storable

router = APIRouter(prefix="/v1/providers", tags=["providers"])

HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, lowercase hex")]


class ProviderCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"name": "example-llm-inc", "public_key": "3d4017c3e8" + "0" * 54}]},
    )

    name: str = Field(min_length=1, max_length=200, description="unique display name")
    public_key: HexKey | None = Field(
        None, description="if set, every report of this provider must carry an Ed25519 signature by this key"
    )
    challenge_deadline_seconds: float | None = Field(
        None,
        gt=0,
        le=30 * 86400,
        strict=False,
        description="time this provider has to answer a challenge (default: COIN_CHALLENGE_DEADLINE_SECONDS)",
    )

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: Any) -> Any:
        return check_storable(data)


class ProviderOut(BaseModel):
    id: uuid.UUID
    name: str
    public_key: str | None
    challenge_deadline_seconds: float | None
    created_at: datetime


class ProviderCreated(ProviderOut):
    api_key: str = Field(description="the provider's API key; shown once, stored only as a hash")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "name": "example-llm-inc",
                    "public_key": None,
                    "challenge_deadline_seconds": None,
                    "created_at": "2025-01-01T00:00:00Z",
                    "api_key": "coin_9f2c4e1a7b3d5c60_Vx3…",
                }
            ]
        }
    )


def _out(provider: Provider) -> dict[str, Any]:
    return {
        "id": provider.id,
        "name": provider.name,
        "public_key": provider.public_key,
        "challenge_deadline_seconds": provider.challenge_deadline_seconds,
        "created_at": provider.created_at,
    }


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProviderCreated)
def create_provider(payload: ProviderCreate, session: SessionDep, _: AdminDep) -> dict[str, Any]:
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
    return {**_out(provider), "api_key": key.key}


@router.get("", response_model=list[ProviderOut])
def list_providers(session: SessionDep, _: AdminDep) -> list[dict[str, Any]]:
    return [_out(p) for p in session.scalars(select(Provider).order_by(Provider.created_at))]


@router.get("/me", response_model=ProviderOut)
def who_am_i(provider: ProviderDep) -> dict[str, Any]:
    """The provider that the API key belongs to."""
    return _out(provider)
