"""The Bakong Open API (National Bank of Cambodia): was a KHQR paid?

Bakong has no webhook for a KHQR: whoever issued one asks, by the MD5 of the QR string,
whether a transaction paid it. Two endpoints (base ``BAKONG_API_URL``, default
https://api-bakong.nbc.gov.kh), both POST with ``Authorization: Bearer <developer token>``:

* ``/v1/check_transaction_by_md5_list``, a JSON array of up to 50 MD5s: one item per MD5,
  ``{md5, status, message, data}``; ``status`` "SUCCESS" is a paid one (what the unofficial
  bakong-khqr package reads). Used by the poller: 1,000 open QRs cost 20 calls a round.
* ``/v1/check_transaction_by_md5``, ``{"md5": ...}``: the envelope ``{responseCode,
  responseMessage, errorCode, data}``; responseCode 0 with the transaction in ``data``
  (hash, fromAccountId, toAccountId, currency, amount, createdDateMs, acknowledgedDateMs,
  ...), errorCode 1 not found, 3 failed. Used for the details of a paid one, and when the
  user taps "I have paid".

HTTP 401 means the token is wrong or has expired (a developer token lasts 90 days), 403 that
the request came from outside Cambodia (the production API answers only Cambodian IPs; point
BAKONG_API_URL at a relay there), 429 too many requests (Retry-After, when sent, is honoured;
it is not documented), 5xx/504 busy. Only reads: every call is safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import httpx

from bot.domain.money import CURRENCIES, Money, MoneyError
from bot.gateways.http import (
    ProviderRefused,
    RateLimited,
    Sleep,
    decimal_of,
    json_bytes,
    parse_json,
    provider_client,
    retry_after_of,
    retrying_read,
    transport_error,
)
from bot.gateways.topup import GatewayError

log = logging.getLogger(__name__)

LIVE_URL = "https://api-bakong.nbc.gov.kh"
BULK_LIMIT = 50  # MD5s per check_transaction_by_md5_list call
_MD5 = re.compile(r"[0-9a-f]{32}")
NOT_FOUND = 1  # errorCode: no transaction paid this QR (yet)
FAILED = 3  # errorCode: a transaction was tried and failed: not paid


@dataclass(frozen=True)
class BakongTransaction:
    """A transaction that paid a KHQR, as Bakong tells it."""

    md5: str
    hash: str
    amount: Money  # what arrived, in the currency it arrived in
    from_account: str  # the payer's Bakong account id, "name@bank"
    to_account: str
    created_at: datetime | None
    acknowledged_at: datetime | None

    @property
    def payer_bank(self) -> str:
        """The payer's bank as Bakong names it (the part of the account id after @)."""
        return self.from_account.rpartition("@")[2][:32]


class KhqrChecks(Protocol):
    """The port: which of these KHQRs are paid, and by what."""

    async def paid_among(self, md5s: Sequence[str]) -> dict[str, BakongTransaction | None]:
        """The paid ones among up to BULK_LIMIT MD5s; a value is None when the answer did
        not carry the transaction (ask ``transaction``)."""
        ...

    async def transaction(self, md5: str) -> BakongTransaction | None:
        """The transaction that paid this KHQR; None while none has."""
        ...

    async def aclose(self) -> None: ...


class BakongGateway:
    """The Bakong Open API over HTTP (see the module docstring)."""

    def __init__(self, api_url: str, token: str, *, timeout_seconds: float = 10.0,
                 client: httpx.AsyncClient | None = None, sleep: Sleep | None = None) -> None:
        self._base = api_url.rstrip("/")
        self._client = client or provider_client(timeout_seconds, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        self._sleep: Sleep = sleep or asyncio.sleep

    async def aclose(self) -> None:
        await self._client.aclose()

    async def paid_among(self, md5s: Sequence[str]) -> dict[str, BakongTransaction | None]:
        asked = list(dict.fromkeys(md5s))
        if not asked:
            return {}
        if len(asked) > BULK_LIMIT or not all(_MD5.fullmatch(md5) for md5 in asked):
            raise ValueError(f"up to {BULK_LIMIT} lowercase MD5s, not {asked[:3]}...")
        body = await self._post("/v1/check_transaction_by_md5_list", asked)
        items = body.get("data") if isinstance(body, dict) else None
        if body.get("responseCode") not in (0, None) or not isinstance(items, list):
            raise GatewayError(f"check_transaction_by_md5_list: {_said(body)}")
        paid: dict[str, BakongTransaction | None] = {}
        for item in items:
            if not isinstance(item, dict) or str(item.get("status", "")).upper() != "SUCCESS":
                continue
            md5 = str(item.get("md5", "")).lower()
            if md5 not in asked:
                continue  # not one we asked about: never credit what we did not ask
            details = item.get("data")
            paid[md5] = _transaction(md5, details) if isinstance(details, dict) \
                and details.get("hash") else None
        return paid

    async def transaction(self, md5: str) -> BakongTransaction | None:
        if not _MD5.fullmatch(md5):
            raise ValueError(f"not a lowercase MD5: {md5!r}")
        body = await self._post("/v1/check_transaction_by_md5", {"md5": md5})
        code = body.get("responseCode")
        if code == 0 and isinstance(body.get("data"), dict):
            return _transaction(md5, body["data"])
        if code == 1 and body.get("errorCode") in (NOT_FOUND, FAILED):
            return None
        raise GatewayError(f"check_transaction_by_md5: {_said(body)}")

    async def _post(self, path: str, payload: Any) -> dict[str, Any]:
        return await retrying_read(lambda: self._post_once(path, payload), self._sleep)

    async def _post_once(self, path: str, payload: Any) -> dict[str, Any]:
        try:
            response = await self._client.post(f"{self._base}{path}", content=json_bytes(payload))
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        status = response.status_code
        if status == 401:
            raise ProviderRefused(f"{path}: HTTP 401: BAKONG_TOKEN is wrong or has expired "
                                  "(a developer token lasts 90 days: renew it)")
        if status == 403:
            raise ProviderRefused(f"{path}: HTTP 403: Bakong answers only requests from "
                                  "Cambodia; point BAKONG_API_URL at a relay there")
        if status == 429:
            raise RateLimited(path, retry_after_of(response, default_seconds=30))
        if status >= 500:
            raise GatewayError(f"{path}: HTTP {status}")
        body = parse_json(response)
        if not isinstance(body, dict):
            raise GatewayError(f"{path}: HTTP {status}, not a JSON object")
        if status != 200 and body.get("errorCode") != NOT_FOUND:
            raise ProviderRefused(f"{path}: HTTP {status}: {_said(body)}")
        return body


def _said(body: Any) -> str:
    if not isinstance(body, dict):
        return repr(body)[:120]
    return (f"responseCode {body.get('responseCode')}, errorCode {body.get('errorCode')}: "
            f"{str(body.get('responseMessage') or '')[:120]}")


def _transaction(md5: str, data: dict[str, Any]) -> BakongTransaction:
    """A transaction from Bakong's ``data``; GatewayError when it is not one we can credit
    (money is never guessed)."""
    currency = str(data.get("currency") or "").upper()
    if currency not in ("USD", "KHR"):
        raise GatewayError(f"transaction of {md5}: currency {currency!r}")
    amount = decimal_of(data.get("amount"))
    exponent = CURRENCIES[currency].exponent
    minor = amount * 10**exponent
    if minor != minor.to_integral_value() or minor <= 0:
        raise GatewayError(f"transaction of {md5}: amount {amount} {currency}")
    try:
        money = Money(int(minor), currency)
    except MoneyError as exc:
        raise GatewayError(f"transaction of {md5}: {exc}") from exc
    tx_hash = str(data.get("hash") or "")
    if not re.fullmatch(r"[0-9A-Za-z]{8,128}", tx_hash):
        raise GatewayError(f"transaction of {md5}: hash {tx_hash!r}")
    return BakongTransaction(
        md5=md5, hash=tx_hash, amount=money, from_account=str(data.get("fromAccountId") or ""),
        to_account=str(data.get("toAccountId") or ""),
        created_at=_from_ms(data.get("createdDateMs")),
        acknowledged_at=_from_ms(data.get("acknowledgedDateMs")))


def _from_ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        return datetime.fromtimestamp(int(Decimal(value)) / 1000, UTC)
    except (ArithmeticError, ValueError, OverflowError, OSError):
        return None
