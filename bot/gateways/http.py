"""What the provider adapters share over HTTP: one way to read JSON money, one mapping of
transport failures onto the port's errors, and the retry policy for reads.

Transport failures and what they mean for a top-up:

* the connection could not be made: nothing was sent (GatewayError: look it up anyway);
* a timeout or a connection reset after the request was written: it may have been done
  (GatewayTimeout: look it up by our reference, never re-send blind).

Only reads (catalog, look-ups, balance) are retried here, a few times with back-off
(tenacity); a top-up POST is never retried by the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from bot.gateways.topup import GatewayError, GatewayTimeout

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

READ_ATTEMPTS = 3


class ProviderRefused(GatewayError):
    """An answer the adapter cannot act on (bad credentials, a malformed body): not
    worth retrying."""

    transient = False


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
