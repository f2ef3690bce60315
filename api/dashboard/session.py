"""Who is signed in to the dashboard, and the CSRF checks of its forms.

- The session cookie holds a random token (the store keeps its SHA-256, `service.staff`): HttpOnly (no
  script reads it), SameSite=Lax (a link from a mail still opens the dashboard signed in, while no other
  site can POST with it) and, outside development, Secure with the `__Host-` prefix (HTTPS only, this
  exact host, path /). A provider's API key or a receipt token opens nothing here: only this cookie does.
- Every POST of a signed-in page must echo the session's synchronizer token, as the form field
  `csrf_token` or, from htmx, the header `X-CSRF-Token`; the token lives in the session row.
- The sign-in form has no session yet: it is protected by a double-submit token, a random value both in
  a SameSite=Strict cookie and in the form, which another site can neither read nor set.
"""

import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response

from api.deps import Caller, ContextDep, Role, SessionDep, ensure_admin
from service.security import constant_time_equal
from service.settings import Settings
from service.staff.service import resume_session

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Sent by the page parts that refresh themselves (hx-headers in their templates).
POLL_HEADER = "X-Coin-Poll"
LOGIN_PATH = "/dashboard/login"


class SignInRequired(Exception):
    """No live session: the dashboard answers with the sign-in page (and comes back to `next_path`)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A POST without the expected CSRF token."""


def _cookie_name(settings: Settings, name: str) -> str:
    return f"__Host-{name}" if settings.secure_cookies else name


def session_cookie(settings: Settings) -> str:
    return _cookie_name(settings, "coin_session")


def login_csrf_cookie(settings: Settings) -> str:
    return _cookie_name(settings, "coin_login_csrf")


def set_cookie(
    response: Response,
    settings: Settings,
    name: str,
    value: str,
    *,
    max_age: int,
    same_site: Literal["lax", "strict"],
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=settings.secure_cookies,
        samesite=same_site,
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    # Secure as when it was set: a browser ignores a `__Host-` cookie's deletion without it.
    response.delete_cookie(name, path="/", secure=settings.secure_cookies, httponly=True)


def local_path(path: str | None) -> str:
    """`path` if it is a page of this dashboard, else the overview: never a redirect to another site."""
    if path and path.startswith("/dashboard") and not path.startswith("//") and "\\" not in path:
        return path
    return "/dashboard"


def sign_in_url(next_path: str) -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"


@dataclass(frozen=True)
class Staff:
    """A signed-in staff member: the caller that the REST endpoints' authorisation sees (the auditor
    admin), and what the pages need of the session."""

    caller: Caller
    email: str
    csrf_token: str
    session_token: str

    @property
    def staff_id(self) -> uuid.UUID:
        assert self.caller.staff_id is not None
        return self.caller.staff_id


def _back_to(request: Request) -> str:
    """The page to come back to after signing in: the one asked for, or for an htmx request (a page's
    fragment) the page it was made from; the overview for anything but a GET."""
    if request.method != "GET":
        return "/dashboard"
    if request.headers.get("HX-Request"):
        page = urlsplit(request.headers.get("HX-Current-URL", ""))
        return local_path(page.path + (f"?{page.query}" if page.query else ""))
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def signed_in(request: Request, context: ContextDep, session: SessionDep) -> Staff:
    settings = context.settings
    token = request.cookies.get(session_cookie(settings))
    # A tab left open polls every few seconds: that is not someone at the screen (the idle limit).
    active = POLL_HEADER not in request.headers
    row = resume_session(session, settings, token, active=active) if token else None
    if token is None or row is None:
        raise SignInRequired(_back_to(request))
    # The same check as the REST endpoints reserved to the auditor (`AdminDep`).
    caller = ensure_admin(Caller(Role.ADMIN, staff_id=row.staff_id))
    return Staff(caller, row.staff.email, row.csrf_token, token)


StaffSessionDep = Annotated[Staff, Depends(signed_in)]


async def csrf_checked(request: Request, staff: StaffSessionDep) -> Staff:
    """The signed-in staff member, once the request carries the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER) or (await request.form()).get(CSRF_FIELD)
    if not isinstance(sent, str) or not constant_time_equal(sent, staff.csrf_token):
        raise CsrfRefused()
    return staff


CsrfStaffDep = Annotated[Staff, Depends(csrf_checked)]


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


async def login_csrf_checked(request: Request, context: ContextDep) -> None:
    """The sign-in form's double-submit check: the form's token equals the cookie's."""
    cookie = request.cookies.get(login_csrf_cookie(context.settings))
    sent = (await request.form()).get(CSRF_FIELD)
    if not cookie or not isinstance(sent, str) or not constant_time_equal(sent, cookie):
        raise CsrfRefused()
