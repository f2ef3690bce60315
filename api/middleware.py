"""ASGI middleware of the API: body-size limit, request metrics, request ids."""

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from fastapi import HTTPException, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem, unavailable
from service.metrics import HTTP_LATENCY, HTTP_REQUESTS

# A challenge's response: the whole repetition profile goes with it, so it may be larger than any report.
_CHALLENGE_RESPONSE = re.compile(r"/v1/challenges/[^/]+/response")


def _route_path(scope: Scope) -> str:
    """The path the app routes on: behind `--root-path` the server puts the prefix in `path` too."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodySizeLimit:
    """Answer 413 for a body above `max_bytes`, declared or streamed, before any endpoint sees it, and 408
    for a body that has not arrived in full within `read_timeout` seconds: a client that declares a body
    and never sends it must not hold a connection and a request slot for long.

    A challenge's response (POST) may reach `max_response_bytes`, but only from a valid provider key: FastAPI
    reads and parses a body before the endpoint's own key check, so anyone could otherwise make the API
    hold and parse the larger size. The key is checked before the body is read (`provider_refusal`), and
    a refusal is answered then, as the endpoint would answer it (so that the failed-authentication limit
    counts it, and the limit's size tells nothing about a key); a store that cannot check it is a 503,
    never a 413 a provider would not retry. The read timeout grows with the limit, so that a provider's
    upload is given the same rate as any body."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_response_bytes: int,
        read_timeout: float,
        provider_refusal: Callable[[Scope], Awaitable[HTTPException | None]],
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_response_bytes = max_response_bytes
        self.read_timeout = read_timeout
        self.provider_refusal = provider_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, timeout = self.max_bytes, self.read_timeout
        if scope["method"] == "POST" and _CHALLENGE_RESPONSE.fullmatch(_route_path(scope)):
            try:
                refusal = await self.provider_refusal(scope)
            except SQLAlchemyError:
                await unavailable("the audit store cannot check the key now; retry later")(
                    scope, receive, send
                )
                return
            if refusal is not None:
                headers = dict(refusal.headers) if refusal.headers else None
                await problem(refusal.status_code, str(refusal.detail), headers=headers)(scope, receive, send)
                return
            limit = self.max_response_bytes
            timeout = self.read_timeout * self.max_response_bytes / self.max_bytes  # settings: >= 1
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    body += message.get("body", b"")
                    if len(body) > limit:
                        await self._too_large(scope, receive, send, limit)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            response = problem(
                status.HTTP_408_REQUEST_TIMEOUT,
                f"the request body did not arrive within {timeout:g} s",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(status.HTTP_413_CONTENT_TOO_LARGE, f"request body larger than {limit} bytes")
        await response(scope, receive, send)


class RequestMetrics:
    """Count and time every request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def capture(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], route, str(status_code)).inc()
            HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


class RequestContext:
    """Give every request an id (the client's `X-Request-ID` if it is short and printable, else a new
    one), bind it to every log line of the request, and return it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given.decode("ascii") if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        header = (b"x-request-id", request_id.encode("ascii"))

        async def tag(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, tag)


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
