"""What the provider adapters share over HTTP: one way to read JSON money, one mapping of
transport failures onto the port's errors, and the retry policy for reads.

Transport failures and what they mean for a top-up:

* the connection could not be made: nothing was sent (GatewayError: look it up anyway);
* a timeout or a connection reset after the request was written: it may have been done
  (GatewayTimeout: look it up by our reference, never re-send blind).

Only reads (catalog, look-ups, balance) are retried here, a few times with back-off
(tenacity); a top-up POST is never retried by the adapter.

Connections (``provider_transport``): each adapter's client keeps up to PROVIDER_LIMITS'
100 connections to its provider, all of them kept alive when idle, and its pool hands a
connection to one request at a time. httpcore 1.0.9's own pool does neither under load
(bench/providers.py, 50 top-ups in flight at 300 ms): it counts busy connections against
``max_keepalive_connections`` (so past 20 connections every one that goes idle is closed:
~870 new connections for 1,000 top-ups), and it gives an idle connection to every request
that arrives before the first has started on it, the others failing and going round the pool
again (``ConnectionNotAvailable``: 1.1–1.6 retries per request with the default limits,
about 6 with 100 kept alive). Either way a top-up took 0.55–0.75 s for the provider's 0.3 s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpcore
import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from bot.clock import Clock
from bot.gateways.topup import GatewayError, GatewayTimeout

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

READ_ATTEMPTS = 3

# Connections to one provider: up to 100 at once (charges submitted together, the sweep's
# reads, recovery's look-ups), every idle one kept for httpx's usual 5 s (below the idle
# timeout of common servers, so a kept connection is rarely one the provider has closed).
PROVIDER_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100,
                               keepalive_expiry=5.0)


class ProviderRefused(GatewayError):
    """An answer the adapter cannot act on (bad credentials, a malformed body): not
    worth retrying."""

    transient = False


class RateLimited(GatewayError):
    """The provider said too many requests (and did nothing); come back after ``retry_after``.
    Not retried at once: the adapter has already waited out the short limits."""

    transient = False

    def __init__(self, what: str, retry_after: timedelta) -> None:
        super().__init__(f"{what}: rate limited for {retry_after}")
        self.retry_after = retry_after


def retry_after_of(response: httpx.Response, default_seconds: int = 60) -> timedelta:
    """A 429's Retry-After (in seconds), at least a second; ``default_seconds`` without
    one."""
    try:
        seconds = int(response.headers.get("Retry-After", str(default_seconds)))
    except ValueError:
        seconds = default_seconds
    return timedelta(seconds=max(seconds, 1))


def parse_json(response: httpx.Response) -> Any:
    """The body with every JSON number that has a fraction as a Decimal, never a float."""
    try:
        return json.loads(response.content or b"null", parse_float=Decimal)
    except ValueError as exc:
        raise GatewayError(f"{response.request.url.path}: answer is not JSON "
                           f"(HTTP {response.status_code})") from exc


def transport_error(exc: httpx.HTTPError) -> GatewayError:
    """The port's error for an httpx failure (see the module docstring)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return GatewayError(f"could not connect: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return GatewayTimeout(f"no answer in time: {type(exc).__name__}")
    return GatewayTimeout(f"the connection broke: {type(exc).__name__}")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.transient


async def retrying_read(call: Callable[[], Awaitable[T]], sleep: Sleep) -> T:
    """``call`` again after a transient failure, up to READ_ATTEMPTS times in all."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(READ_ATTEMPTS), wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception(_transient), reraise=True, sleep=sleep)
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last failure")  # pragma: no cover


class _OneRequestPerConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool (HTTP/1.1) with its assignment pass corrected: a connection handed to
    a request that has not finished is neither given to another request nor closed, and
    only idle connections count against ``max_keepalive_connections``. The rest (queueing,
    creating, expiring, the retry on ConnectionNotAvailable) is httpcore's."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        taken = {id(r.connection) for r in self._requests if r.connection is not None}
        idle = sum(1 for c in self._connections if c.is_idle() and id(c) not in taken)
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired():  # idle: a request given it has not started
                if id(connection) not in taken:
                    idle -= 1
                self._connections.remove(connection)
                closing.append(connection)
            elif (connection.is_idle() and id(connection) not in taken
                  and idle > self._max_keepalive_connections):
                self._connections.remove(connection)
                closing.append(connection)
                idle -= 1
        for pool_request in [r for r in self._requests if r.is_queued()]:
            origin = pool_request.request.url.origin
            free = [c for c in self._connections if id(c) not in taken]
            reusable = next((c for c in free if c.can_handle_request(origin)
                             and c.is_available()), None)
            if reusable is None and len(self._connections) >= self._max_connections:
                # Full: make room by closing an idle connection (to another origin).
                spare = next((c for c in free if c.is_idle()), None)
                if spare is None:
                    continue  # it waits for a connection to be released
                self._connections.remove(spare)
                closing.append(spare)
            if reusable is None:
                reusable = self.create_connection(origin)
                self._connections.append(reusable)
            pool_request.assign_to_connection(reusable)
            taken.add(id(reusable))
        return closing


def provider_transport(limits: httpx.Limits = PROVIDER_LIMITS) -> httpx.AsyncHTTPTransport:
    """httpx's default transport (TLS verified, HTTP/1.1) with ``limits``, over the pool
    above. Should a later httpx or httpcore build its pool otherwise, the stock pool stays
    (correct, only slower under load)."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    if (type(pool) is httpcore.AsyncConnectionPool and httpcore.__version__.startswith("1.")
            and hasattr(pool, "_requests") and hasattr(pool, "_connections")):
        pool.__class__ = _OneRequestPerConnectionPool  # the same state, the pass corrected
    return transport


def provider_client(timeout_seconds: float, *, transport: httpx.AsyncBaseTransport | None = None,
                    headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """The HTTP client of one provider adapter: the pool above, its read timeout, 10 s to
    connect."""
    return httpx.AsyncClient(
        transport=transport or provider_transport(), limits=PROVIDER_LIMITS,
        timeout=httpx.Timeout(timeout_seconds, connect=10.0), headers=headers)


@dataclass(frozen=True)
class BearerToken:
    value: str
    expires_at: datetime  # already shortened by a margin: fetch a new one from here


class CachedToken:
    """An OAuth client-credentials token, fetched once and shared by every call until it
    ends (or a 401 says it ended early): concurrent callers wait for the one fetch."""

    def __init__(self, clock: Clock, fetch: Callable[[], Awaitable[BearerToken]]) -> None:
        self._clock = clock
        self._fetch = fetch
        self._token: BearerToken | None = None
        self._lock = asyncio.Lock()

    async def value(self, *, renew: bool = False) -> str:
        async with self._lock:
            token = self._token
            if renew or token is None or self._clock.now() >= token.expires_at:
                token = self._token = await self._fetch()
            return token.value


def decimal_of(value: Any) -> Decimal:
    """A JSON amount (Decimal, int or numeric string) as a Decimal; GatewayError otherwise."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise GatewayError(f"not an amount: {value!r}")
    try:
        return Decimal(value)
    except ArithmeticError as exc:
        raise GatewayError(f"not an amount: {value!r}") from exc


def json_bytes(value: Any) -> bytes:
    """JSON with every Decimal written as the exact number it is ("4.99", never a float's
    rounding); the rest as json.dumps writes it."""
    return _dumps(value).encode()


def _dumps(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a JSON number: {value}")
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)
