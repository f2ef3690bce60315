"""Typed FastAPI dependencies: the request's unit of work and who is calling.

Roles (DESIGN §2): the auditor *admin* (COIN_ADMIN_TOKEN, or a staff member signed in to the dashboard:
`api/dashboard/session.py`), a *provider* (its API key), and a *customer* holding a receipt token (checked
against one report by the endpoint that names it).
Every secret is compared in constant time; an unknown key and a wrong key look the same.
"""

import enum
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import structlog
from anyio import to_thread
from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BeforeValidator
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, joinedload
from starlette.types import Scope

from service.context import ServiceContext
from service.listing import DEFAULT_PAGE, MAX_PAGE, Cursor, Filters, PageRequest, as_utc
from service.models import ApiKey, Provider
from service.security import RECEIPT_TOKEN_PREFIX, constant_time_equal, sha256_hex, split_api_key

log = structlog.get_logger(__name__)


async def get_context(request: Request) -> ServiceContext:
    """The dependencies that need no database are `async def`: FastAPI runs a plain `def` dependency in
    its thread pool, and each such hop costs a request a GIL hand-over (up to the 5 ms switch interval
    when the event loop is busy) for a few microseconds of work."""
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One transaction per request: committed when the endpoint returns, rolled back if it raises."""
    with context.db.unit_of_work() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a 2xx means "stored".
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`: the admin token, a provider API key (`coin_…`) "
    "or a customer's receipt token (`rt_…`).",
)
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


class Role(enum.StrEnum):
    ADMIN = "admin"
    PROVIDER = "provider"
    RECEIPT = "receipt"


@dataclass(frozen=True)
class Caller:
    role: Role
    provider: Provider | None = None
    token: str | None = None  # the receipt token, for RECEIPT callers
    staff_id: uuid.UUID | None = None  # an ADMIN signed in to the dashboard, rather than the admin token

    @property
    def provider_id(self) -> uuid.UUID | None:
        return self.provider.id if self.provider else None

    @property
    def actor(self) -> str:
        """Who did it, as the audit trail records it."""
        if self.staff_id is not None:
            return f"staff:{self.staff_id}"
        if self.provider is not None:
            return f"provider:{self.provider.id}"
        return self.role.value


def unauthorized(message: str = "invalid or missing credentials") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, message)


# Compared against when a key's prefix is unknown, so that both failures cost the same.
_DUMMY_HASH = sha256_hex("no such key")


def _provider_for_key(session: Session, key: str) -> Provider | None:
    parts = split_api_key(key)
    if parts is None:
        return None
    prefix, secret = parts
    # The provider comes in the same query: every provider request starts here.
    api_key = session.scalars(
        select(ApiKey)
        .options(joinedload(ApiKey.provider))
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    matches = constant_time_equal(sha256_hex(secret), api_key.secret_hash if api_key else _DUMMY_HASH)
    return api_key.provider if api_key is not None and matches else None


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return credentials.credentials


def _is_admin(context: ServiceContext, token: str) -> bool:
    return constant_time_equal(token, context.settings.admin_token.get_secret_value())


def _is_receipt_token(token: str) -> bool:
    return token.startswith(f"{RECEIPT_TOKEN_PREFIX}_")


def authenticate_provider(session: Session, key: str) -> Provider:
    provider = _provider_for_key(session, key)
    if provider is None:
        raise unauthorized()
    return provider


def get_caller(context: ContextDep, session: SessionDep, credentials: CredentialsDep) -> Caller:
    token = _bearer_token(credentials)
    if _is_admin(context, token):
        return Caller(Role.ADMIN)
    if _is_receipt_token(token):
        return Caller(Role.RECEIPT, token=token)
    return Caller(Role.PROVIDER, provider=authenticate_provider(session, token))


CallerDep = Annotated[Caller, Depends(get_caller)]

_NEEDS_PROVIDER = "this operation needs a provider API key"


def ensure_admin(caller: Caller) -> Caller:
    """The check of every operation reserved to the auditor, whether the caller holds the admin token
    or signed in to the dashboard."""
    if caller.role != Role.ADMIN:
        raise forbidden("this operation is reserved to the auditor")
    return caller


async def require_admin(caller: CallerDep) -> Caller:
    return ensure_admin(caller)


async def require_provider(caller: CallerDep) -> Provider:
    if caller.role != Role.PROVIDER or caller.provider is None:
        raise forbidden(_NEEDS_PROVIDER)
    return caller.provider


async def require_staff(caller: CallerDep) -> Caller:
    """The admin or a provider (a provider then sees only its own resources)."""
    if caller.role == Role.RECEIPT:
        raise forbidden("a receipt token only gives access to its own report's status and audits")
    return caller


@dataclass(frozen=True)
class ProviderKey:
    """A bearer token that can only be a provider's API key; `provider` checks it in the caller's session.

    For endpoints that run their whole unit of work in one worker thread (see `api/routers/reports.py`):
    every check that needs no database is done here, in the event loop, before a thread is taken."""

    key: str

    def provider(self, session: Session) -> Provider:
        return authenticate_provider(session, self.key)


async def require_provider_key(context: ContextDep, credentials: CredentialsDep) -> ProviderKey:
    token = _bearer_token(credentials)
    if _is_admin(context, token) or _is_receipt_token(token):
        raise forbidden(_NEEDS_PROVIDER)
    return ProviderKey(token)


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


async def key_refusal(request: Request) -> HTTPException | None:
    """The 401/403 that the bearer token of `request` gets, for endpoints that check a provider key only
    inside their unit of work (`ProviderKeyDep`) — after FastAPI has validated the body. Asked when the
    body is invalid, so that a bad key is refused as a bad key there too, as on every other endpoint;
    None when the key is good or the endpoint checks keys before the body anyway."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not _depends_on(route.dependant, require_provider_key):
        return None
    try:
        await _authenticate_provider_key(request)
    except HTTPException as refusal:
        return refusal
    except SQLAlchemyError:
        # The store cannot check the key now (this runs inside an error handler, where nothing would
        # turn the failure into a 503); the body's own error still stands.
        log.warning("auth.provider_key_unchecked", reason="the database is unavailable; the body was invalid")
    return None


async def provider_key_refusal(scope: Scope) -> HTTPException | None:
    """None when the request of `scope` carries a valid provider API key (one query of the store), else
    the 401/403 it gets; SQLAlchemyError when the store cannot tell. Asked by the body-size limit before
    it reads a body only a provider may send."""
    try:
        await _authenticate_provider_key(Request(scope))
    except HTTPException as refusal:
        return refusal
    return None


async def _authenticate_provider_key(request: Request) -> None:
    """HTTPException unless the request's bearer token is a valid provider API key."""
    context = await get_context(request)
    key = await require_provider_key(context, await bearer_scheme(request))

    def authenticate() -> None:
        with context.db.unit_of_work() as session:
            key.provider(session)

    await to_thread.run_sync(authenticate)


AdminDep = Annotated[Caller, Depends(require_admin)]
ProviderDep = Annotated[Provider, Depends(require_provider)]
StaffDep = Annotated[Caller, Depends(require_staff)]
ProviderKeyDep = Annotated[ProviderKey, Depends(require_provider_key)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


class QueryParameterCheck:
    """A dependency of every operation: a query parameter that the operation does not declare is a 422,
    not ignored — a mistyped filter (`?outcom=fail`) would otherwise answer with everything, which
    looks like an answer. One instance per app, which keeps each route's declared names."""

    def __init__(self) -> None:
        self._declared: dict[int, frozenset[str]] = {}  # id(route): the routes live as long as the app

    def declared(self, route: APIRoute) -> frozenset[str]:
        names = self._declared.get(id(route))
        if names is None:
            names = frozenset(_query_names(route.dependant))
            self._declared[id(route)] = names
        return names

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute):
            return
        unknown = sorted(set(request.query_params) - self.declared(route))
        if unknown:
            raise RequestValidationError(
                [
                    {"loc": ("query", name), "msg": "unknown query parameter", "type": "extra_forbidden"}
                    for name in unknown
                ]
            )


_ISO_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_8601_only(value: Any) -> Any:
    """Pydantic reads a number as Unix time (`created_to=0.5` is 1970); the filters are documented as
    ISO 8601 date-times, so anything that does not start like one is refused."""
    if isinstance(value, str) and not _ISO_DATE_PREFIX.match(value):
        raise ValueError("an ISO 8601 date-time, e.g. 2026-11-30T10:00:00Z")
    return value


# A date-time query parameter: ISO 8601 only (no zone: UTC), read as its UTC instant.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601_only), AfterValidator(as_utc)]


@dataclass(frozen=True)
class ListQuery:
    """A list's filters and page, as its query parameters give them."""

    filters: Filters
    page: PageRequest


def list_query(timestamp: str) -> Callable[..., Awaitable[ListQuery]]:
    """The query parameters shared by the lists, for one whose rows are dated by `timestamp`
    (`<timestamp>_from`, `<timestamp>_to`). A provider's list holds its own rows only: `provider` is
    set to it, and naming another provider is a 403."""

    async def parameters(
        caller: StaffDep,
        provider: Annotated[uuid.UUID | None, Query(description="only this provider's")] = None,
        model: Annotated[str | None, Query(max_length=200, description="only this model's")] = None,
        request_id: Annotated[
            str | None, Query(max_length=256, description="only this billed request id's")
        ] = None,
        since: Annotated[
            IsoDateTime | None,
            Query(alias=f"{timestamp}_from", description=f"{timestamp} at or after (no zone: UTC)"),
        ] = None,
        until: Annotated[
            IsoDateTime | None,
            Query(alias=f"{timestamp}_to", description=f"{timestamp} before (exclusive; no zone: UTC)"),
        ] = None,
        cursor: Annotated[
            str | None, Query(max_length=200, description="`next_cursor` of the previous page")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")] = DEFAULT_PAGE,
    ) -> ListQuery:
        if caller.role == Role.PROVIDER:
            if provider is not None and provider != caller.provider_id:
                raise forbidden("a provider can only list its own resources")
            provider = caller.provider_id
        try:
            after = Cursor.decode(cursor) if cursor is not None else None
        except ValueError as exc:
            raise RequestValidationError(
                [{"loc": ("query", "cursor"), "msg": str(exc), "type": "value_error"}]
            ) from None
        filters = Filters(provider_id=provider, model=model, request_id=request_id, since=since, until=until)
        return ListQuery(filters, PageRequest(after, limit))

    return parameters
