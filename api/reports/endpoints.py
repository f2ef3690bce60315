"""Reports: providers submit one per billed request and get a signed receipt (DESIGN §2 step 2, §3)."""

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import (
    CallerDep,
    ContextDep,
    ListQuery,
    ProviderKey,
    ProviderKeyDep,
    Role,
    SessionDep,
    StaffDep,
    list_query,
    unauthorized,
)
from api.problems import COMMON_PROBLEMS, problem_responses
from api.reports.schemas import (
    BatchIn,
    BatchOut,
    ReceiptOut,
    ReportIn,
    ReportListed,
    ReportOut,
    ReportPage,
    ReportStatus,
)
from api.responses import FastJSONResponse
from service.context import ServiceContext
from service.errors import NotFound, ServiceError
from service.models import Outcome, Provider, Report
from service.reports.repository import list_reports
from service.reports.service import Submission, holds_receipt, receipt_of, submit_report, submit_reports

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=COMMON_PROBLEMS)

Result = TypeVar("Result")


async def _in_one_thread(
    context: ServiceContext, key: ProviderKey, work: Callable[[Session, Provider], Result]
) -> Result:
    """Authenticate and run `work` in one unit of work, in one worker thread.

    Intake is the hot path. With the usual dependencies, a request holds its connection across several
    thread hops: under load, requests holding connections then wait for threads held by requests waiting
    for connections, and the chain lock's holder waits for a thread to commit. Here a connection is
    taken and given back within one thread, so connections in use never exceed threads."""

    def run() -> Result:
        with context.db.unit_of_work() as session:
            return work(session, key.provider(session))

    return await to_thread.run_sync(run)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ReceiptOut,
    # A receipt is signed as stored: a field its version lacks must stay absent, not become null.
    response_model_exclude_unset=True,
    responses={
        200: {
            "description": "the same report was already stored: the same receipt again",
            "model": ReceiptOut,
        },
        **problem_responses(400, 401, 403, 409),
    },
)
async def submit(
    payload: ReportIn, response: Response, context: ContextDep, key: ProviderKeyDep
) -> dict[str, Any]:
    """Submit one report; idempotent on `request_id`."""
    body = payload.model_dump(mode="json", exclude_unset=True)
    submission = await _in_one_thread(
        context, key, lambda session, provider: submit_report(session, context, provider, body)
    )
    if not submission.created:
        response.status_code = status.HTTP_200_OK
    return receipt_of(context, submission)


def _schema_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _submit_items(
    session: Session, context: ServiceContext, provider: Provider, items: list[Any]
) -> list[dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    bodies: dict[int, dict[str, Any]] = {}  # index -> schema-valid report
    for index, item in enumerate(items):
        try:
            ReportIn.model_validate(item)
            bodies[index] = item  # strict: a valid report validates to itself, so no dump is needed
        except ValidationError as exc:
            results[index] = {"index": index, "status": 422, "error": _schema_errors(exc)}
    outcomes = submit_reports(session, context, provider, list(bodies.values()))
    for index, outcome in zip(bodies, outcomes, strict=True):
        if isinstance(outcome, Submission):
            results[index] = {
                "index": index,
                "status": 201 if outcome.created else 200,
                "report_id": str(outcome.report_id),
                "receipt": receipt_of(context, outcome),
            }
        else:
            code = outcome.status_code if isinstance(outcome, ServiceError) else status.HTTP_400_BAD_REQUEST
            results[index] = {"index": index, "status": code, "error": str(outcome)}
    return [results[index] for index in range(len(items))]


@router.post("/batch", response_model=BatchOut, responses=problem_responses(401, 403))
async def submit_batch(payload: BatchIn, context: ContextDep, key: ProviderKeyDep) -> FastJSONResponse:
    """Submit up to 1,000 reports; each gets its own outcome, and each stored report is atomic."""
    results = await _in_one_thread(
        context, key, lambda session, provider: _submit_items(session, context, provider, payload.reports)
    )
    # The results are built here, not taken from the caller: re-validating up to 1,000 receipts
    # against BatchOut cost as much as storing them. `response_model` still documents the shape.
    return FastJSONResponse({"results": results})


@router.get("", response_model=ReportPage, responses=problem_responses(401, 403))
def get_reports(
    session: SessionDep,
    listed: Annotated[ListQuery, Depends(list_query("received"))],
    outcome: Annotated[
        Outcome | None,
        Query(
            description="only reports with an audit whose verdict says this (fail = proof, suspect = statistical)"
        ),
    ] = None,
) -> ReportPage:
    """Reports, newest first, with their audits' outcomes; filtered, a page at a time (`next_cursor`).
    A provider sees only its own."""
    return ReportPage.of(list_reports(session, listed.filters, listed.page, outcome=outcome), ReportListed.of)


def _readable_report(session: SessionDep, report_id: uuid.UUID, caller: CallerDep) -> Report:
    report = session.get(Report, report_id)
    if caller.role == Role.RECEIPT:
        if report is None or caller.token is None or not holds_receipt(report, caller.token):
            raise unauthorized("this receipt token does not belong to that report")
        return report
    if report is None or (caller.role == Role.PROVIDER and report.provider_id != caller.provider_id):
        raise NotFound("report not found")
    return report


# `:uuid`: a path that is no report id (`/v1/reports/batch`) matches no GET route, so GET on it is a 405
# (POST is the method there), not a 422 about a malformed id.
@router.get("/{report_id:uuid}/status", response_model=ReportStatus, responses=problem_responses(401, 404))
def report_status(report_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> ReportStatus:
    """What a customer may see about its request: the billed counts and the outcome of its audits.

    Authorised by the report's receipt token (or by the provider that owns it, or the admin)."""
    return ReportStatus.of(_readable_report(session, report_id, caller))


@router.get("/{report_id:uuid}", response_model=ReportOut, responses=problem_responses(401, 403, 404))
def get_report(report_id: uuid.UUID, session: SessionDep, caller: StaffDep) -> ReportOut:
    """The full stored report and its receipt (the provider that owns it, or the admin)."""
    return ReportOut.of(_readable_report(session, report_id, caller))
