"""Providers and their API keys: registration, and the audit-trail events that record them."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict
from service.events import append_event
from service.models import ApiKey, Provider
from service.security import NewApiKey, new_api_key


def register_provider(
    session: Session, name: str, public_key: str | None, challenge_deadline_seconds: float | None
) -> tuple[Provider, NewApiKey]:
    """Register a provider and issue its first API key (the key is returned once, stored as a hash)."""
    if session.scalars(select(Provider.id).where(Provider.name == name)).first() is not None:
        raise Conflict(f"a provider named {name!r} already exists")
    provider = Provider(
        name=name, public_key=public_key, challenge_deadline_seconds=challenge_deadline_seconds
    )
    session.add(provider)
    session.flush()
    key = new_api_key()
    session.add(ApiKey(provider_id=provider.id, prefix=key.prefix, secret_hash=key.secret_hash))
    append_event(session, "provider.created", provider_id=provider.id, payload={"name": provider.name})
    append_event(session, "api_key.issued", provider_id=provider.id, payload={"prefix": key.prefix})
    return provider, key


def list_providers(session: Session) -> list[Provider]:
    return list(session.scalars(select(Provider).order_by(Provider.created_at)))
