"""One error model for every operation: RFC 9457 problem details (`application/problem+json`).

Every refusal — a service error carrying its status (`service.errors`), a protocol violation, a schema
error, missing credentials, an overloaded store — is answered as a `Problem`, and every operation's
OpenAPI entry lists the problems it can answer with (`problem_responses`).
"""

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api.deps import key_refusal
from auditor.protocol.errors import ProtocolError
from service.errors import ServiceError

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# What an overloaded or unreachable store asks clients to wait before they retry, in seconds.
RETRY_AFTER_SECONDS = 1


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="where in the request: path, query or body, then the field")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 §3.1; `type` is always about:blank, so `title` is the status phrase (§4.2.1)."""

    type: str = "about:blank"
    title: str = Field(examples=["Conflict"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["this challenge was already answered; a response cannot be replaced"])
    errors: list[FieldProblem] | None = Field(None, description="one entry per invalid field (422 only)")


def problem(
    status_code: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status_code, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


_DESCRIPTIONS = {
    400: "protocol violation (the detail names the field), or a body that is not JSON text",
    401: "missing or invalid credentials",
    403: "these credentials may not do this",
    404: "no such resource (also another provider's)",
    409: "conflicts with the stored state",
    408: "the request body did not arrive in time",
    410: "too late: the deadline has passed",
    413: "request body too large",
    422: "the request does not fit the schema (`errors` lists each field)",
    429: "too many requests (per credential, per client address, failed authentications, requests in "
    "flight) or a quota used up; retry after `Retry-After` seconds",
    503: "the store is unavailable or overloaded; retry after `Retry-After` seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problems an operation can answer with."""
    return {
        code: {
            "description": _DESCRIPTIONS.get(code, HTTPStatus(code).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in statuses
    }


# Every operation may meet these: a body that cannot be parsed, too slow or too large, a rate limit, a
# store that is down, an internal error.
COMMON_PROBLEMS = problem_responses(400, 408, 413, 422, 429, 500, 503)


def unavailable(detail: str) -> JSONResponse:
    return problem(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = await key_refusal(request)
        if refusal is not None:
            return problem(refusal.status_code, str(refusal.detail), headers=dict(refusal.headers or {}))
        # Field-level messages without echoing the input back.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        count = len(errors)
        return problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{count} field{'s' if count != 1 else ''} of the request do not fit the schema",
            errors=errors,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            # Starlette names the methods of the first route whose path matched; a path served by
            # several routes (GET and POST /v1/audits) allows all of theirs (RFC 9110 §15.5.6).
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return problem(exc.status_code, exc.message)

    @app.exception_handler(ProtocolError)
    async def protocol_error(_: Request, exc: ProtocolError) -> JSONResponse:
        return problem(status.HTTP_400_BAD_REQUEST, f"protocol violation: {exc}")

    @app.exception_handler(IntegrityError)
    async def integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("db.integrity_conflict", error=str(exc.orig))
        return problem(status.HTTP_409_CONFLICT, "a concurrent request changed the same resource; retry")

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        # A value the store cannot hold (e.g. beyond a BIGINT) that the schema let through.
        log.warning("db.data_error", error=str(exc.orig))
        return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "a value is outside what the store can hold")

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("db.unavailable", error=str(exc.orig))
        return unavailable("the audit store is unavailable; retry later")

    @app.exception_handler(PoolTimeout)
    async def overloaded(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection stayed busy for the whole pool timeout: more requests are in flight
        # than the store can serve. Shedding them is the answer, not an internal error.
        log.warning("db.pool_exhausted", error=str(exc))
        return unavailable("the service is overloaded; retry later")

    @app.exception_handler(Exception)
    async def last_resort(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled_error", method=request.method, path=request.url.path)
        return problem(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """The methods some route serves at the request's path (asked of the router, so that path
    convertors count: GET /v1/reports/batch is no report id)."""
    return {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    }


def add_problem_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put `Problem` (and `FieldProblem`) into the document's components, where every operation's
    problem responses refer to it."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["Problem"] = schema
    return openapi
