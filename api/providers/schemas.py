"""Request and response schemas of the providers resource."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.validation import check_storable
from service.settings import MIN_CHALLENGE_DEADLINE_SECONDS
from service.text import display_name

HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, lowercase hex")]


class ProviderCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"name": "example-llm-inc", "public_key": "3d4017c3e8" + "0" * 54}]},
    )

    name: Annotated[str, AfterValidator(display_name)] = Field(
        min_length=1,
        max_length=200,
        description="display name, stored in NFC without surrounding spaces; no control, bidi-override or "
        "invisible characters; unique ignoring case and Unicode compatibility forms",
    )
    public_key: HexKey | None = Field(
        None, description="if set, every report of this provider must carry an Ed25519 signature by this key"
    )
    challenge_deadline_seconds: float | None = Field(
        None,
        ge=MIN_CHALLENGE_DEADLINE_SECONDS,
        le=30 * 86400,
        strict=False,
        description="time this provider has to answer a challenge (default: COIN_CHALLENGE_DEADLINE_SECONDS)",
    )

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: Any) -> Any:
        return check_storable(data)


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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


class ApiKeyOut(BaseModel):
    """One of a provider's API keys: its public prefix and its dates, never its secret."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {"prefix": "9f2c4e1a7b3d5c60", "created_at": "2025-01-01T00:00:00Z", "revoked_at": None}
            ]
        },
    )

    prefix: str = Field(description="the key's public part: `coin_<prefix>_<secret>`")
    created_at: datetime
    revoked_at: datetime | None = Field(description="from then on the key authenticates nothing")


class ApiKeyIssued(ApiKeyOut):
    api_key: str = Field(description="the new key; shown once, stored only as a hash")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prefix": "5c60a7b39f2c4e1a",
                    "created_at": "2025-02-01T00:00:00Z",
                    "revoked_at": None,
                    "api_key": "coin_5c60a7b39f2c4e1a_Qm4…",
                }
            ]
        }
    )
