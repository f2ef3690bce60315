"""The auditor's staff: accounts, password sign-in with a rate limit, and server-side sessions.

- Passwords are hashed with Argon2id (argon2-cffi's `PasswordHasher`, RFC 9106 parameters); a hash made
  with older parameters is replaced at the next sign-in.
- A session is a row: the browser's cookie holds a random token, the store its SHA-256. Rows (rather
  than a signed token) because logout and expiry must end a session at once, and a signed token stays
  valid until it expires whatever the server does. A session ends `staff_session_seconds` after sign-in,
  or after `staff_idle_seconds` without a request.
- Failed sign-ins are rows too, counted per account and per client address over `login_window_seconds`,
  so that the limit holds across API processes. A refused attempt checks no password (the limit is not
  an oracle) and an unknown email costs the same hash as a known one (no account enumeration by timing).
"""

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TypeGuard

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session, joinedload

from service.database import is_postgres
from service.errors import Conflict, ServiceError
from service.models import LoginFailure, StaffAccount, StaffSession, utcnow
from service.security import sha256_hex
from service.settings import Settings

log = structlog.get_logger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing is cheap in the length, but a megabyte "password" is no password
# A session's last request is written at most this often: not a write per page view.
_TOUCH_EVERY = timedelta(seconds=60)
# Arbitrary constant naming "dashboard sign-ins" among PostgreSQL's two-key advisory locks.
_LOGIN_LOCK_SPACE = 0x436F496E

_hasher = PasswordHasher()


class SignInOutcome(enum.StrEnum):
    SIGNED_IN = "signed_in"
    REFUSED = "refused"  # unknown email or wrong password (the same answer for both)
    THROTTLED = "throttled"  # too many failures for this account or address: no password was checked


@dataclass(frozen=True)
class SignIn:
    outcome: SignInOutcome
    token: str | None = None  # the session cookie's value, when signed in
    retry_after_seconds: int | None = None  # when throttled


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServiceError(f"a staff password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ServiceError(f"a staff password has at most {MAX_PASSWORD_LENGTH} characters")


def create_staff(session: Session, email: str, password: str) -> StaffAccount:
    """A new staff account (Conflict if the email has one)."""
    email = normalise_email(email)
    if "@" not in email or len(email) > 320:
        raise ServiceError("a staff account is named by an email address")
    check_password_policy(password)
    if session.scalars(select(StaffAccount.id).where(StaffAccount.email == email)).first() is not None:
        raise Conflict(f"a staff account for {email} already exists")
    account = StaffAccount(email=email, password_hash=_hasher.hash(password), created_at=utcnow())
    session.add(account)
    session.flush()
    log.info("staff.created", staff_id=str(account.id))
    return account


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(account: StaffAccount | None, password: str) -> TypeGuard[StaffAccount]:
    """Whether `account` exists and `password` is its own; one password verification either way."""
    try:
        _hasher.verify(account.password_hash if account else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return account is not None


def _lock(session: Session, *keys: str) -> None:
    """Serialise sign-ins that count the same rows, so that a burst of parallel guesses cannot all read
    the count before any of them writes (SQLite's BEGIN IMMEDIATE serialises every writer anyway).
    Always account before address: one order, no deadlock."""
    if is_postgres(session):
        for key in keys:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
                {"space": _LOGIN_LOCK_SPACE, "key": key},
            )


def _failures(session: Session, column: InstrumentedAttribute[str], value: str, since: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(column == value, LoginFailure.occurred_at >= since)
        )
        or 0
    )


def sign_in(session: Session, settings: Settings, email: str, password: str, address: str) -> SignIn:
    """Check a sign-in and open a session. Never raises for a refusal: the failure it records must be
    committed with the caller's transaction, which an exception would roll back."""
    now = utcnow()
    window = timedelta(seconds=settings.login_window_seconds)
    account_key = sha256_hex(normalise_email(email))
    _lock(session, f"account/{account_key}", f"address/{address}")
    session.execute(delete(LoginFailure).where(LoginFailure.occurred_at < now - window))  # forgotten
    since = now - window
    account_failures = _failures(session, LoginFailure.account, account_key, since)
    address_failures = _failures(session, LoginFailure.address, address, since)
    if (
        account_failures >= settings.login_failures_per_account
        or address_failures >= settings.login_failures_per_address
    ):
        log.warning("staff.sign_in_throttled", address=address)
        return SignIn(SignInOutcome.THROTTLED, retry_after_seconds=int(window.total_seconds()))
    account = session.scalars(
        select(StaffAccount).where(StaffAccount.email == normalise_email(email))
    ).one_or_none()
    # Hash before deciding: an unknown email costs the same verification as a wrong password, so the
    # answer's timing does not say which addresses have accounts.
    if not _password_matches(account, password):
        session.add(LoginFailure(account=account_key, address=address, occurred_at=now))
        log.warning("staff.sign_in_refused", address=address)
        return SignIn(SignInOutcome.REFUSED)
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    # The account's earlier failures were the person now signed in (or a guesser who now faces a reset
    # count against a password it does not have); the address keeps its count.
    session.execute(delete(LoginFailure).where(LoginFailure.account == account_key))
    session.execute(delete(StaffSession).where(StaffSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=sha256_hex(token),
            staff_id=account.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=settings.staff_session_seconds),
        )
    )
    log.info("staff.signed_in", staff_id=str(account.id), address=address)
    return SignIn(SignInOutcome.SIGNED_IN, token=token)


def resume_session(
    session: Session, settings: Settings, token: str, *, active: bool = True
) -> StaffSession | None:
    """The live session of a cookie's token (with its staff account), or None; an expired or idle
    session is deleted. Only an `active` request (not a page polling on its own) keeps it from idling."""
    row = session.scalars(
        select(StaffSession)
        .options(joinedload(StaffSession.staff))
        .where(StaffSession.token_hash == sha256_hex(token))
    ).one_or_none()
    if row is None:
        return None
    now = utcnow()
    if now >= row.expires_at or now - row.last_seen_at >= timedelta(seconds=settings.staff_idle_seconds):
        session.delete(row)
        return None
    if active and now - row.last_seen_at >= _TOUCH_EVERY:
        row.last_seen_at = now
    return row


def sign_out(session: Session, token: str) -> None:
    """End the session of a cookie's token (nothing happens for an unknown one)."""
    session.execute(delete(StaffSession).where(StaffSession.token_hash == sha256_hex(token)))
