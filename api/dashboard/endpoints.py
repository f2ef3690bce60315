"""The staff dashboard: server-rendered pages over the same service functions as the JSON API.

Overview, providers (with key management), reports, audits and one audit's evidence; htmx refreshes
the live parts (open challenges, an audit in progress). Pages are not in the OpenAPI document: the JSON
API (`/v1/...`) is what scripts use. Every page needs a signed-in staff member (`session.py`), every
form its CSRF token; admin actions go through the REST endpoints' service functions and authorisation.
"""

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from api.dashboard.session import (
    CsrfRefused,
    CsrfStaffDep,
    SignInRequired,
    Staff,
    StaffSessionDep,
    clear_cookie,
    local_path,
    login_csrf_checked,
    login_csrf_cookie,
    new_login_token,
    session_cookie,
    set_cookie,
    sign_in_url,
)
from api.dashboard.views import (
    block_map,
    block_map_chart,
    outcomes_chart,
    render,
    volume_chart,
)
from api.deps import ContextDep, SessionDep
from service.audits.repository import list_audits, list_challenges, load_audit
from service.audits.service import request_audit
from service.context import ServiceContext
from service.errors import NotFound, ServiceError
from service.listing import Cursor, Filters, Page, PageRequest
from service.models import Audit, AuditStatus, AuditTrigger, ChallengeStatus, Outcome, Report
from service.monitoring.calibration import copy_rule_for
from service.monitoring.service import standing
from service.providers.service import (
    get_provider,
    issue_api_key,
    list_api_keys,
    list_providers,
    revoke_api_key,
)
from service.reports.repository import list_reports
from service.settings import Settings
from service.staff.service import SignInOutcome, sign_in, sign_out
from service.stats.repository import activity, overview, provider_summaries

log = structlog.get_logger(__name__)

PAGE_SIZE = 50
Value = TypeVar("Value")
STATIC = Path(__file__).parent / "static"
# What the pages may load: only this origin's scripts (no inline script: data goes in JSON blocks);
# plotly.js sets inline styles, hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class DashboardRoute(APIRoute):
    """Answers a page's refusals as pages (the JSON API answers them as problem details): sign-in
    needed, a refused CSRF token, a missing resource, a bad query parameter; and sends the security
    headers. Pages hold audit data, so none is cached."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                response = _to_sign_in(request, exc.next_path)
            except CsrfRefused:
                log.warning("dashboard.csrf_refused", path=request.url.path)
                response = _error(request, 403, "This form expired or did not come from this dashboard: "
                                  "reload the page and try again.")  # fmt: skip
            except ServiceError as exc:
                response = _error(request, exc.status_code, exc.message)
            except HTTPException as exc:
                response = _error(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                response = _error(request, 422, f"This request does not fit the page ({problems}).")
            response.headers.update(SECURITY_HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handle


def _storable_text(text: str) -> str:
    """`text`, unless the store could not compare it (PostgreSQL text holds no NUL)."""
    if "\x00" in text:
        raise ValueError("a NUL character")
    return text


def _to_sign_in(request: Request, next_path: str) -> Response:
    if request.headers.get("HX-Request"):  # htmx follows this header with a full page load
        return Response(status_code=204, headers={"HX-Redirect": sign_in_url(next_path)})
    return RedirectResponse(sign_in_url(next_path), status_code=status.HTTP_303_SEE_OTHER)


def _error(request: Request, status_code: int, message: str) -> Response:
    return render(
        request, "error.html", {"status_code": status_code, "message": message}, status_code=status_code
    )


router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=DashboardRoute)


# --- sign-in -----------------------------------------------------------------------------------------


def _login_page(
    request: Request,
    context: ServiceContext,
    next_path: str,
    *,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    token = new_login_token()
    response = render(
        request, "login.html", {"next": local_path(next_path), "login_csrf": token, "message": message},
        status_code=status_code,
    )  # fmt: skip
    set_cookie(response, context.settings, login_csrf_cookie(context.settings), token, max_age=3600,
               same_site="strict")  # fmt: skip
    return response


@router.get("/login")
def login_form(
    request: Request, context: ContextDep, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    return _login_page(request, context, next_path or "/dashboard")


@router.post("/login", dependencies=[Depends(login_csrf_checked)])
def login(
    request: Request,
    context: ContextDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next_path: Annotated[str, Form(alias="next")] = "/dashboard",
) -> Response:
    address = request.client.host if request.client else "unknown"
    result = sign_in(session, context.settings, email, password, address)
    if result.outcome == SignInOutcome.THROTTLED:
        minutes = -(-(result.retry_after_seconds or 0) // 60)
        message = f"Too many failed sign-ins for this account or from this address: wait {minutes} minutes."
        page = _login_page(request, context, next_path, message=message, status_code=429)
        page.headers["Retry-After"] = str(result.retry_after_seconds)
        return page
    if result.outcome == SignInOutcome.REFUSED or result.token is None:
        return _login_page(request, context, next_path, message="Wrong email or password.", status_code=401)
    response = RedirectResponse(local_path(next_path), status_code=status.HTTP_303_SEE_OTHER)
    set_cookie(response, context.settings, session_cookie(context.settings), result.token,
               max_age=int(context.settings.staff_session_seconds), same_site="lax")  # fmt: skip
    clear_cookie(response, context.settings, login_csrf_cookie(context.settings))
    return response


@router.post("/logout")
def logout(staff: CsrfStaffDep, context: ContextDep, session: SessionDep) -> Response:
    sign_out(session, staff.session_token)
    log.info("staff.signed_out", staff_id=str(staff.staff_id))
    response = RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)
    clear_cookie(response, context.settings, session_cookie(context.settings))
    return response


# --- filters -----------------------------------------------------------------------------------------


@dataclass
class FilterForm:
    """A list page's filter form as typed (blank = any), and what it means; `errors` says what could
    not be read (the list is then empty rather than wrongly filtered)."""

    provider: str = ""
    model: str = ""
    request_id: str = ""
    date_from: str = ""
    date_to: str = ""
    status: str = ""
    outcome: str = ""
    errors: list[str] = field(default_factory=list)

    def filters(self) -> Filters:
        return Filters(
            provider_id=self.parse(self.provider, uuid.UUID, "provider"),
            model=self.parse(self.model, _storable_text, "model"),
            request_id=self.parse(self.request_id, _storable_text, "request id"),
            since=self._day(self.date_from, "from", 0),
            until=self._day(self.date_to, "to", 1),  # "to" is a whole day, included
        )

    def _day(self, text: str, name: str, shift: int) -> datetime | None:
        day = self.parse(text, date.fromisoformat, f"{name} date")
        if day is None:
            return None
        try:
            return datetime.combine(day + timedelta(days=shift), time(), tzinfo=UTC)
        except OverflowError:  # "to" 9999-12-31: the day after is past the calendar, so no upper bound
            return None

    def parse(self, text: str, kind: Callable[[str], Value], name: str) -> Value | None:
        """`text` read as `kind`; None when blank, or when unreadable (which `errors` then says)."""
        text = text.strip()
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            self.errors.append(f"{name}: {text!r} is not valid")
            return None

    def query(self, **extra: str) -> str:
        """This form's values as a query string (for the next page's link)."""
        values = {
            "provider": self.provider, "model": self.model, "request_id": self.request_id,
            "from": self.date_from, "to": self.date_to, "status": self.status, "outcome": self.outcome, **extra,
        }  # fmt: skip
        return urlencode({k: v for k, v in values.items() if v})


def filter_form(
    provider: Annotated[str, Query(max_length=36)] = "",
    model: Annotated[str, Query(max_length=200)] = "",
    request_id: Annotated[str, Query(max_length=256)] = "",
    date_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    outcome: Annotated[str, Query(max_length=16)] = "",
) -> FilterForm:
    return FilterForm(provider, model, request_id, date_from, date_to, outcome=outcome)


FilterDep = Annotated[FilterForm, Depends(filter_form)]


def _page_request(form: FilterForm, cursor: str | None) -> PageRequest:
    after = form.parse(cursor, Cursor.decode, "cursor") if cursor else None
    return PageRequest(after, PAGE_SIZE)


def _listing(
    request: Request, staff: Staff, form: FilterForm, page: Page[Any], session: Session, template: str
) -> Response:
    if form.errors:
        page = Page([], 0, None)
    next_link = form.query(cursor=page.next_cursor.encode()) if page.next_cursor else None
    return render(
        request, template,
        {"form": form, "page": page, "next_link": next_link, "providers": list_providers(session)},
        staff=staff,
    )  # fmt: skip


# --- pages -------------------------------------------------------------------------------------------


@router.get("")
def overview_page(request: Request, staff: StaffSessionDep, session: SessionDep) -> Response:
    figures = overview(session)
    charts = {"volume": volume_chart(figures.activity), "outcomes": outcomes_chart(figures.activity)}
    return render(request, "overview.html", {"o": figures, "charts": charts}, staff=staff)


@router.get("/partials/open-challenges")
def open_challenges(request: Request, staff: StaffSessionDep, session: SessionDep) -> Response:
    """The overview's open-challenges panel, refreshed by htmx."""
    page = list_challenges(session, Filters(), PageRequest(limit=20), status=ChallengeStatus.OPEN)
    return render(request, "_open_challenges.html", {"challenges": page}, staff=staff)


@router.get("/providers")
def providers_page(request: Request, staff: StaffSessionDep, session: SessionDep) -> Response:
    return render(request, "providers.html", {"providers": provider_summaries(session)}, staff=staff)


def _provider_page(request: Request, staff: Staff, session: Session, settings: Settings,
                   provider_id: uuid.UUID, new_key: str | None = None) -> Response:  # fmt: skip
    provider = get_provider(session, provider_id)
    [summary] = provider_summaries(session, provider.id)
    recent = list_audits(session, Filters(provider_id=provider.id), PageRequest(limit=10))
    figures = activity(session, provider_id=provider.id)
    context = {
        "p": summary,
        "policy": summary.policy,
        "standing": standing(session, provider.id),
        "copy_rule": copy_rule_for(session, provider.id),
        "retention_days": settings.retention_days,
        "provider": provider,
        "keys": list_api_keys(session, provider),
        "new_key": new_key,
        "audits": recent,
        "charts": {"volume": volume_chart(figures, tokens=True), "outcomes": outcomes_chart(figures)},
    }
    return render(request, "provider.html", context, staff=staff)


@router.get("/providers/{provider_id}")
def provider_page(
    provider_id: uuid.UUID, request: Request, staff: StaffSessionDep, session: SessionDep, context: ContextDep
) -> Response:
    return _provider_page(request, staff, session, context.settings, provider_id)


@router.post("/providers/{provider_id}/keys")
def issue_key(provider_id: uuid.UUID, request: Request, staff: CsrfStaffDep, session: SessionDep,
              context: ContextDep) -> Response:  # fmt: skip
    """Issue a new key and show it, once, on the provider's page (the old keys stay valid until revoked)."""
    _, key = issue_api_key(session, get_provider(session, provider_id), actor=staff.caller.actor)
    return _provider_page(request, staff, session, context.settings, provider_id, new_key=key.key)


@router.post("/providers/{provider_id}/keys/{prefix}/revoke")
def revoke_key(provider_id: uuid.UUID, prefix: str, request: Request, staff: CsrfStaffDep,
               session: SessionDep) -> Response:  # fmt: skip
    provider = get_provider(session, provider_id)
    revoke_api_key(session, provider, prefix, actor=staff.caller.actor)
    if request.headers.get("HX-Request"):  # htmx swaps the keys table in place
        keys = list_api_keys(session, provider)
        return render(request, "_keys.html", {"provider": provider, "keys": keys}, staff=staff)
    return RedirectResponse(f"/dashboard/providers/{provider_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/reports")
def reports_page(
    request: Request,
    staff: StaffSessionDep,
    session: SessionDep,
    form: FilterDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    filters, outcome = form.filters(), form.parse(form.outcome, Outcome, "outcome")
    page = list_reports(session, filters, _page_request(form, cursor), outcome=outcome)
    return _listing(request, staff, form, page, session, "reports.html")


@router.get("/reports/{report_id}")
def report_page(
    report_id: uuid.UUID, request: Request, staff: StaffSessionDep, session: SessionDep
) -> Response:
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound("report not found")
    return render(request, "report.html", {"report": report}, staff=staff)


@router.post("/reports/{report_id}/audits")
def start_audit(
    report_id: uuid.UUID, staff: CsrfStaffDep, context: ContextDep, session: SessionDep
) -> Response:
    """Open an audit (or go to the one running), as `POST /v1/audits` does for the admin."""
    report = session.get(Report, report_id)
    if report is None:
        raise NotFound("report not found")
    audit, _ = request_audit(session, context, report, AuditTrigger.ADMIN)
    log.info("dashboard.audit_requested", audit_id=str(audit.id), staff_id=str(staff.staff_id))
    return RedirectResponse(f"/dashboard/audits/{audit.id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/audits")
def audits_page(
    request: Request,
    staff: StaffSessionDep,
    session: SessionDep,
    form: FilterDep,
    audit_status: Annotated[str, Query(alias="status", max_length=16)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    form.status = audit_status
    filters = form.filters()
    status_, outcome = (
        form.parse(form.status, AuditStatus, "status"),
        form.parse(form.outcome, Outcome, "outcome"),
    )
    page = list_audits(session, filters, _page_request(form, cursor), status=status_, outcome=outcome)
    return _listing(request, staff, form, page, session, "audits.html")


def _audit(session: Session, audit_id: uuid.UUID) -> Audit:
    audit = load_audit(session, audit_id)
    if audit is None:
        raise NotFound("audit not found")
    return audit


@router.get("/audits/{audit_id}")
def audit_page(
    audit_id: uuid.UUID, request: Request, staff: StaffSessionDep, context: ContextDep, session: SessionDep
) -> Response:
    audit = _audit(session, audit_id)
    blocks = block_map(audit)
    return render(
        request, "audit.html",
        {"audit": audit, "blocks": blocks, "chart": block_map_chart(blocks) if blocks else None,
         "auditor_key": context.signer.public_key_hex},
        staff=staff,
    )  # fmt: skip


@router.get("/audits/{audit_id}/progress")
def audit_progress(
    audit_id: uuid.UUID, request: Request, staff: StaffSessionDep, session: SessionDep
) -> Response:
    """An audit in progress, polled by htmx; once it is done, the whole page reloads with the verdict."""
    audit = _audit(session, audit_id)
    if audit.status == AuditStatus.DONE:
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, "_audit_progress.html", {"audit": audit}, staff=staff)


@router.get("/audits/{audit_id}/verdict.json")
def verdict_file(audit_id: uuid.UUID, staff: StaffSessionDep, session: SessionDep) -> Response:
    """The signed verdict as `coin verify-verdict` reads it."""
    verdict = _audit(session, audit_id).verdict
    if verdict is None:
        raise NotFound("this audit has no verdict yet")
    body = {
        "statement": verdict.statement,
        "signature": verdict.signature,
        "signing_key": verdict.signing_key,
    }
    headers = {"Content-Disposition": f'attachment; filename="verdict-{audit_id}.json"'}
    return JSONResponse(body, headers=headers)


@router.get("/vendor/plotly.min.js")
def plotly_js() -> Response:
    """plotly.js from the `plotly` package on this machine: the dashboard loads nothing from a CDN."""
    bundle = files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(bundle), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
