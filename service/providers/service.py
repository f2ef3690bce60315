"""Providers and their API keys: registration, rotation and revocation, and the audit-trail events that
record them.

A key is rotated in two steps, so that a provider never has a moment without a working key: a new key
is issued (the old one keeps working), the provider deploys it, then the old one is revoked. Every key
event names who did it (`actor`: "admin" for the admin token, "staff:<account id>" for a dashboard
user — an id, not an email, since the trail can never be rewritten to forget a person).
"""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound, ServiceError
from service.events import append_event
from service.models import ApiKey, Provider, utcnow
from service.security import NewApiKey, new_api_key
from service.settings import MIN_CHALLENGE_DEADLINE_SECONDS
from service.text import display_name, name_key


def register_provider(
    session: Session,
    name: str,
    public_key: str | None,
    challenge_deadline_seconds: float | None,
    *,
    longest_deadline_seconds: float,
    actor: str,
) -> tuple[Provider, NewApiKey]:
    """Register a provider and issue its first API key (the key is returned once, stored as a hash).

    A challenge deadline beyond `longest_deadline_seconds` (`Settings.longest_challenge_deadline_seconds`)
    is refused: the provider's reports could never be drawn.

    The name is stored in NFC; a name that matches another ignoring case and Unicode compatibility forms
    is a conflict (service/text.py): two providers must not look alike."""
    try:
        name = display_name(name)
    except ValueError as exc:
        raise ServiceError(f"name: {exc}") from None
    if challenge_deadline_seconds is not None and challenge_deadline_seconds < MIN_CHALLENGE_DEADLINE_SECONDS:
        raise ServiceError(f"challenge_deadline_seconds: at least {MIN_CHALLENGE_DEADLINE_SECONDS:.0f}")
    if challenge_deadline_seconds is not None and challenge_deadline_seconds > longest_deadline_seconds:
        raise ServiceError(
            f"challenge_deadline_seconds: at most {longest_deadline_seconds:.0f}: every round of a scheduled "
            "audit must end before the provider may delete the report's openings (COIN_RETENTION_DAYS)"
        )
    compared = name_key(name)
    existing = session.scalars(select(Provider.name).where(Provider.name_key == compared)).first()
    if existing is not None:
        raise Conflict(f"a provider named {existing!r} already exists (names are compared ignoring case)")
    provider = Provider(
        name=name,
        name_key=compared,
        public_key=public_key,
        challenge_deadline_seconds=challenge_deadline_seconds,
    )
    session.add(provider)
    session.flush()
    append_event(session, "provider.created", provider_id=provider.id, payload={"name": provider.name})
    _, key = issue_api_key(session, provider, actor=actor)
    return provider, key


def list_providers(session: Session) -> list[Provider]:
    return list(session.scalars(select(Provider).order_by(Provider.created_at)))


def get_provider(session: Session, provider_id: uuid.UUID) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound("provider not found")
    return provider


def find_provider(session: Session, reference: str) -> Provider:
    """A provider by its id or its name (compared as names are: ignoring case and compatibility forms)."""
    try:
        return get_provider(session, uuid.UUID(reference))
    except ValueError:
        pass
    provider = session.scalars(select(Provider).where(Provider.name_key == name_key(reference))).first()
    if provider is None:
        raise NotFound(f"no provider has the id or name {reference!r}")
    return provider


def list_api_keys(session: Session, provider: Provider) -> list[ApiKey]:
    """Every key the provider was issued, newest first, revoked ones included (their secrets are
    never stored, so there is nothing secret to list)."""
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.provider_id == provider.id).order_by(ApiKey.created_at.desc())
        )
    )


def issue_api_key(session: Session, provider: Provider, *, actor: str) -> tuple[ApiKey, NewApiKey]:
    """A new key for `provider`; its other keys stay valid until revoked. The clear key is in the
    returned `NewApiKey` only: show it once."""
    key = new_api_key()
    row = ApiKey(provider_id=provider.id, prefix=key.prefix, secret_hash=key.secret_hash, created_at=utcnow())
    session.add(row)
    session.flush()
    append_event(
        session, "api_key.issued", provider_id=provider.id, payload={"prefix": key.prefix, "by": actor}
    )
    return row, key


def revoke_api_key(session: Session, provider: Provider, prefix: str, *, actor: str) -> ApiKey:
    """Revoke one of the provider's keys: from the commit on, it authenticates nothing. Revoking a
    revoked key changes nothing (and records nothing)."""
    key = session.scalars(
        select(ApiKey).where(ApiKey.provider_id == provider.id, ApiKey.prefix == prefix).with_for_update()
    ).one_or_none()
    if key is None:
        raise NotFound("this provider has no key with that prefix")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        append_event(
            session, "api_key.revoked", provider_id=provider.id, payload={"prefix": prefix, "by": actor}
        )
    return key
