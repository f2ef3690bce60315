"""Abuse limits of the API: request rates per credential and per client address, failed authentications
per address, and requests in flight per address. A refusal is a 429 problem with `Retry-After`.

Rates are GCRA buckets (a token bucket kept as one timestamp per key): a client may send `rate` requests
per second on average and `rate × burst_seconds` at once. With a broker configured the buckets live in
Redis, so that the limits hold across API processes and machines; on the embedded default they live in
the process. A Redis that does not answer lets requests through (logged): the limits protect the
service, they must not take it down. The in-flight cap is per process.

Failed authentication is counted from the responses: each 401 takes a token from its address's bucket,
and an address whose bucket is empty is refused before its credentials are even looked at.
"""

import asyncio
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis
import structlog
from fastapi import status
from redis.commands.core import AsyncScript
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from service.metrics import RATE_LIMITED
from service.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Bucket:
    key: str
    interval: float  # seconds per request: 1 / rate (0: only look, take nothing)
    tolerance: float  # how far ahead of now the bucket's timestamp may run: the burst, in seconds

    def advance(self, tat: float, now: float) -> tuple[float, float]:
        """(new timestamp, seconds to wait) for one request at `now` given the stored timestamp."""
        tat = max(tat, now)
        if tat - now > self.tolerance:
            return tat, tat - now - self.tolerance
        return tat + self.interval, 0.0


class Limiter(Protocol):
    async def take(self, buckets: Sequence[Bucket]) -> tuple[float, int]:
        """Take one request from every bucket, or from none: (0, -1) when allowed, else (seconds to
        wait, index of the bucket that refused)."""
        ...

    async def close(self) -> None: ...


class LocalLimiter:
    """Buckets in this process (the embedded default). The event loop serialises `take`."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def take(self, buckets: Sequence[Bucket]) -> tuple[float, int]:
        now = time.monotonic()
        advanced = [bucket.advance(self._tats.get(bucket.key, now), now) for bucket in buckets]
        waits = [retry for _, retry in advanced]
        if any(waits):
            refused = max(range(len(waits)), key=waits.__getitem__)
            return waits[refused], refused
        if len(self._tats) > self._max_keys:
            # Buckets whose timestamp is past hold nothing: forget them rather than grow without end.
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        for bucket, (tat, _) in zip(buckets, advanced, strict=True):
            self._tats[bucket.key] = tat
        return 0.0, -1

    async def close(self) -> None:
        pass


# The same arithmetic as `Bucket.advance`, atomic in Redis, on Redis's clock (one clock for every API
# process). KEYS: the buckets; ARGV: interval and tolerance of each. Returns "wait index" (0-based index
# of the bucket that refused, -1 when allowed), as a string: Lua numbers would be truncated to integers.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tats, wait, refused = {}, 0, -1
for i = 1, #KEYS do
    local tolerance = tonumber(ARGV[2 * i])
    local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or now), now)
    tats[i] = tat
    if tat - now - tolerance > wait then wait, refused = tat - now - tolerance, i - 1 end
end
if wait > 0 then return tostring(wait) .. ' ' .. refused end
for i = 1, #KEYS do
    local interval, tolerance = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    if interval > 0 then
        local tat = tats[i] + interval
        redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil((tat - now + tolerance) * 1000) + 1000)
    end
end
return '0 -1'
"""


class RedisLimiter:
    """Buckets in Redis, under `prefix` (the broker's key prefix, then `ratelimit:`)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._prefix = f"{prefix}ratelimit:"
        self._failing_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: redis.Redis | None = None
        self._gcra: AsyncScript | None = None

    def _script(self) -> AsyncScript:
        # An asyncio client belongs to the event loop it connected in: one per loop (uvicorn runs one
        # loop per process; a test client may start one per request).
        loop = asyncio.get_running_loop()
        if self._client is None or self._gcra is None or self._loop is not loop:
            self._client = redis.Redis.from_url(self._url, socket_connect_timeout=0.5, socket_timeout=0.5)
            self._gcra = self._client.register_script(_GCRA)
            self._loop = loop
        return self._gcra

    async def take(self, buckets: Sequence[Bucket]) -> tuple[float, int]:
        args: list[float] = []
        for bucket in buckets:
            args += [bucket.interval, bucket.tolerance]
        try:
            answer = await self._script()(keys=[self._prefix + b.key for b in buckets], args=args)
        except (redis.RedisError, OSError, RuntimeError):
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("ratelimit.redis_unavailable", exc_info=True)
            return 0.0, -1
        if self._failing_since is not None:
            log.info("ratelimit.redis_back", after_s=round(time.monotonic() - self._failing_since, 1))
            self._failing_since = None
        wait, refused = answer.split()
        return float(wait), int(refused)

    async def close(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()


def limiter_for(settings: Settings) -> Limiter:
    if settings.broker_url:
        return RedisLimiter(settings.broker_url, settings.broker_key_prefix)
    return LocalLimiter()


def _credential(scope: Scope) -> str | None:
    """A name for the request's bearer token (its hash: the token never reaches Redis), or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return hashlib.sha256(value).hexdigest()[:32]
    return None


class RequestLimits:
    """ASGI middleware: the rate limits, the failed-authentication limit and the in-flight cap."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter
        self.max_in_flight = settings.max_requests_in_flight_per_address
        burst = settings.rate_limit_burst_seconds
        self.key_rate = (1 / settings.rate_limit_key_per_second, burst)
        self.address_rate = (1 / settings.rate_limit_address_per_second, burst)
        # A whole minute's failures may come at once; then one per 60/N seconds.
        self.failure_rate = (60 / settings.auth_failures_per_minute, 60.0)
        self.in_flight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else "unknown"
        credential = _credential(scope)
        buckets = [
            Bucket(f"address:{address}", *self.address_rate),
            Bucket(f"auth_failures:{address}", 0.0, self.failure_rate[1]),  # look only
        ]
        if credential is not None:
            buckets.append(Bucket(f"key:{credential}", *self.key_rate))
        wait, refused = await self.limiter.take(buckets)
        if wait > 0:
            await self._refuse(scope, receive, send, wait, buckets[refused].key.split(":", 1)[0])
            return
        if self.in_flight.get(address, 0) >= self.max_in_flight:
            await self._refuse(scope, receive, send, 1.0, "in_flight")
            return
        self.in_flight[address] = self.in_flight.get(address, 0) + 1
        status_code = 0

        async def watch(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            remaining = self.in_flight[address] - 1
            if remaining:
                self.in_flight[address] = remaining
            else:
                del self.in_flight[address]
            if status_code == status.HTTP_401_UNAUTHORIZED:
                await self.limiter.take([Bucket(f"auth_failures:{address}", *self.failure_rate)])

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, wait: float, limit: str) -> None:
        RATE_LIMITED.labels(limit).inc()
        seconds = max(1, math.ceil(wait))
        response = problem(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests from this client or credential; retry after {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        await response(scope, receive, send)
