"""Reloadly Airtime as a TopUpProvider, over httpx.

Written from Reloadly's API documentation (the reloadly-api-documentation OpenAPI files and
the official Java SDK):

* token: POST {auth}/oauth/token (client credentials; the ``audience`` is the top-ups host of
  the chosen environment, sandbox or live, even when the URLs are overridden), cached until
  shortly before ``expires_in`` runs out and fetched again once on a 401;
* every top-ups call sends ``Accept: application/com.reloadly.topups-v1+json``;
* the catalog is the KH operators (GET /operators/countries/KH, bundles and data included),
  cached for ``catalog_ttl``; FIXED operators become one product per amount, RANGE
  operators take any amount between their bounds;
* a top-up is POST /topups with our reference as ``customIdentifier``; it is looked up by
  GET /topups/reports/transactions?customIdentifier=..., and a PROCESSING one by
  GET /topups/{id}/status;
* the account balance is GET /accounts/balance.

What an answer means for the charge (see bot/gateways/topup.py): a decline (an invalid
number, the operator down, our balance at Reloadly too low, an amount it does not sell) is
a FAILED result with a DeclineReason; CUSTOM_IDENTIFIER_ALREADY_USED is DuplicateReference
("look it up"); PHONE_RECENTLY_RECHARGED is TryLater (the same number again within about
two minutes); a timeout, a reset after the request was written or a 5xx is an unknown
outcome for the charging service to look up. Reloadly's transactionDate carries no zone;
it is read as UTC.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from bot.clock import Clock
from bot.domain.charges import DeclineReason
from bot.domain.money import CURRENCIES, Money, MoneyError
from bot.domain.operators import Operator, validity_days_for_airtime
from bot.domain.products import Product, ProductKind
from bot.gateways.http import (
    BearerToken,
    CachedToken,
    ProviderRefused,
    Sleep,
    decimal_of,
    json_bytes,
    parse_json,
    provider_client,
    retrying_read,
    transport_error,
)
from bot.gateways.provider_text import data_mb_in, days_in, our_operator
from bot.gateways.topup import (
    DuplicateReference,
    GatewayError,
    TopUpRequest,
    TopUpResult,
    TopUpStatus,
    TryLater,
    declined,
)

log = logging.getLogger(__name__)

ACCEPT = "application/com.reloadly.topups-v1+json"
AUTH_URL = "https://auth.reloadly.com"
LIVE_URL = "https://topups.reloadly.com"
SANDBOX_URL = "https://topups-sandbox.reloadly.com"
COUNTRY = "KH"
TOKEN_MARGIN = timedelta(minutes=1)  # fetch a new token this long before the old one ends
# Reloadly refuses the same number again within about 2 minutes; wait a little longer.
RECENTLY_RECHARGED_WAIT = timedelta(minutes=2, seconds=15)
REPORT_PAGE_SIZE = 200
PRODUCT_PREFIX = "rl"
# What a RANGE operator is offered as when Reloadly suggests nothing (in dollars).
USUAL_AMOUNTS = tuple(Decimal(a) for a in (1, 2, 5, 10, 20))

_STATUS = {"SUCCESSFUL": TopUpStatus.SUCCEEDED, "PROCESSING": TopUpStatus.PENDING,
           "FAILED": TopUpStatus.FAILED, "REFUNDED": TopUpStatus.FAILED}

# errorCode of a refused POST /topups -> what it means. Refusals change nothing there.
_DECLINES = {
    "INVALID_RECIPIENT_PHONE": DeclineReason.INVALID_NUMBER,
    "INVALID_PHONE_NUMBER": DeclineReason.INVALID_NUMBER,
    "OPERATOR_AND_RECIPIENT_PHONE_MISMATCH": DeclineReason.INVALID_NUMBER,
    "OPERATOR_UNAVAILABLE_OR_CURRENTLY_INACTIVE": DeclineReason.OPERATOR_UNAVAILABLE,
    "OPERATOR_NOT_IN_SERVICE": DeclineReason.OPERATOR_UNAVAILABLE,
    "INSUFFICIENT_BALANCE": DeclineReason.PROVIDER_BALANCE,
    "INVALID_AMOUNT_FOR_OPERATOR": DeclineReason.AMOUNT_NOT_OFFERED,
    "INVALID_LOCAL_AMOUNT_FOR_OPERATOR": DeclineReason.AMOUNT_NOT_OFFERED,
    "LOCAL_AMOUNTS_NOT_SUPPORTED_BY_OPERATOR": DeclineReason.AMOUNT_NOT_OFFERED,
    "INVALID_AMOUNT": DeclineReason.AMOUNT_NOT_OFFERED,
    "OPERATOR_NOT_FOUND": DeclineReason.PRODUCT_UNAVAILABLE,
    "TOPUP_TRANSACTION_FAILED": DeclineReason.DECLINED,
    "TRANSACTION_FAILED_ON_OPERATOR": DeclineReason.DECLINED,
}
_TRY_LATER = {"PHONE_RECENTLY_RECHARGED", "RECIPIENT_HAS_PENDING_TRANSACTION"}
_TOKEN_REFUSED = {"TOKEN_EXPIRED", "INVALID_TOKEN", "MISSING_TOKEN"}



@dataclass(frozen=True)
class ReloadlyConfig:
    client_id: str
    client_secret: str
    sandbox: bool = True
    auth_url: str | None = None  # None: Reloadly's own host
    api_url: str | None = None  # None: the sandbox or live host
    timeout_seconds: float = 60.0
    catalog_ttl: timedelta = timedelta(hours=1)

    @property
    def audience(self) -> str:
        """The token's audience: the environment's host, whatever URL is used to reach it."""
        return SANDBOX_URL if self.sandbox else LIVE_URL

    @property
    def api_base(self) -> str:
        return (self.api_url or self.audience).rstrip("/")

    @property
    def auth_base(self) -> str:
        return (self.auth_url or AUTH_URL).rstrip("/")


@dataclass(frozen=True)
class ReloadlyOperator:
    """What the adapter keeps of one operator object."""

    id: int
    name: str
    operator: Operator
    bundle: bool  # data or bundle products, not airtime
    fixed: tuple[Decimal, ...]  # FIXED denominations in the sender currency
    descriptions: dict[Decimal, str]
    minimum: Decimal | None  # RANGE bounds in the sender currency
    maximum: Decimal | None
    suggested: tuple[Decimal, ...]  # RANGE amounts Reloadly suggests offering
    sender_currency: str
    destination_currency: str
    fx_rate: Decimal

    def sells(self, amount: Decimal) -> bool:
        if self.fixed:
            return amount in self.fixed
        return (self.minimum is not None and self.maximum is not None
                and self.minimum <= amount <= self.maximum)

    @property
    def offered(self) -> tuple[Decimal, ...]:
        """The amounts shown as products: FIXED ones, or a RANGE's suggested (else usual)."""
        if self.fixed:
            return self.fixed
        return tuple(a for a in (self.suggested or USUAL_AMOUNTS) if self.sells(a))


class ReloadlyGateway:
    """TopUpProvider, ProviderAccount and ProviderReports over Reloadly's API."""

    def __init__(self, config: ReloadlyConfig, clock: Clock, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._client = provider_client(config.timeout_seconds, transport=transport)
        self._token = CachedToken(clock, self._fetch_token)
        self._operators: tuple[list[ReloadlyOperator], datetime] | None = None
        self._operators_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the token --------------------------------------------------------------------

    async def _fetch_token(self) -> BearerToken:
        config = self._config
        try:
            response = await self._client.post(f"{config.auth_base}/oauth/token", json={
                "client_id": config.client_id, "client_secret": config.client_secret,
                "grant_type": "client_credentials", "audience": config.audience})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        body = parse_json(response)
        if response.status_code in (400, 401, 403):
            raise ProviderRefused("Reloadly refused RELOADLY_CLIENT_ID / RELOADLY_CLIENT_SECRET"
                                  f" ({_error_code(body) or response.status_code})")
        if response.status_code != 200 or not isinstance(body, dict) \
                or not body.get("access_token"):
            raise GatewayError(f"token: HTTP {response.status_code}")
        lifetime = timedelta(seconds=int(body.get("expires_in") or 0))
        margin = min(TOKEN_MARGIN, lifetime / 10)
        return BearerToken(str(body["access_token"]), self._clock.now() + lifetime - margin)

    # --- calls ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    json: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One API call; a refused token is renewed and the call made once more (a 401 did
        nothing, so sending again is not blind)."""
        for renew in (False, True):
            headers = {"Accept": ACCEPT,
                       "Authorization": f"Bearer {await self._token.value(renew=renew)}"}
            if json is not None:
                headers["Content-Type"] = "application/json"
            try:
                response = await self._client.request(
                    method, f"{self._config.api_base}{path}", params=params,
                    content=json_bytes(json) if json is not None else None, headers=headers)
            except httpx.HTTPError as exc:
                raise transport_error(exc) from exc
            body = parse_json(response)
            if response.status_code == 401 and _error_code(body) in _TOKEN_REFUSED \
                    and not renew:
                continue
            if response.status_code in (401, 403, 406, 415):
                raise ProviderRefused(f"{path}: HTTP {response.status_code} "
                                      f"{_error_code(body) or ''}".rstrip())
            # A 5xx that names a decline (an operator down answers 503) is read by the caller;
            # any other says nothing of the outcome: look it up.
            if response.status_code == 429 or (response.status_code >= 500
                                               and _error_code(body) not in _DECLINES):
                raise GatewayError(f"{path}: HTTP {response.status_code}")
            return response.status_code, body
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        return await retrying_read(lambda: self._call("GET", path, params=params), self._sleep)

    # --- the catalog ------------------------------------------------------------------

    async def operators(self) -> list[ReloadlyOperator]:
        """The KH operators Reloadly serves, cached for ``catalog_ttl``."""
        async with self._operators_lock:
            cached = self._operators
            if cached is not None and self._clock.now() < cached[1]:
                return cached[0]
            status, body = await self._read(
                f"/operators/countries/{COUNTRY}",
                {"includeBundles": "true", "includeData": "true", "suggestedAmounts": "true",
                 "suggestedAmountsMap": "false", "includePin": "false"})
            if status != 200 or not isinstance(body, list):
                raise GatewayError(f"operators of {COUNTRY}: HTTP {status}")
            found = [parsed for item in body if (parsed := _operator(item)) is not None]
            self._operators = (found, self._clock.now() + self._config.catalog_ttl)
            return found

    async def catalog(self, operator: Operator) -> list[Product]:
        products: list[Product] = []
        for entry in await self.operators():
            if entry.operator is operator and entry.sender_currency in CURRENCIES:
                products.extend(_products_of(entry))
        return products

    async def detect_operator(self, phone_e164: str) -> Operator | None:
        """Reloadly's own idea of the number's operator (None when it cannot tell)."""
        status, body = await self._read(
            f"/operators/auto-detect/phone/{phone_e164.lstrip('+')}/countries/{COUNTRY}",
            {"suggestedAmounts": "false", "suggestedAmountsMap": "false"})
        if status != 200 or not isinstance(body, dict):
            return None
        parsed = _operator(body)
        return parsed.operator if parsed is not None else None

    async def _airtime_operator(self, operator: Operator) -> ReloadlyOperator | None:
        for entry in await self.operators():
            if entry.operator is operator and not entry.bundle:
                return entry
        return None

    async def _operator_by_id(self, operator_id: int) -> ReloadlyOperator | None:
        for entry in await self.operators():
            if entry.id == operator_id:
                return entry
        return None

    # --- top-ups ----------------------------------------------------------------------

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        chosen = await self._what_to_send(request)
        if isinstance(chosen, TopUpResult):
            return chosen
        entry, amount = chosen
        status, body = await self._call("POST", "/topups", json={
            "operatorId": entry.id, "amount": amount, "useLocalAmount": False,
            "customIdentifier": request.reference,
            "recipientPhone": {"countryCode": COUNTRY,
                               "number": request.phone_e164.lstrip("+")}})
        if status == 200 and isinstance(body, dict):
            return _result(body, request.reference, self._clock.now())
        code = _error_code(body)
        if code == "CUSTOM_IDENTIFIER_ALREADY_USED":
            raise DuplicateReference(f"Reloadly has seen reference {request.reference}")
        if code in _TRY_LATER:
            raise TryLater(code.lower(), RECENTLY_RECHARGED_WAIT)
        reason = _DECLINES.get(code or "")
        if status == 404 and reason is None:
            reason = DeclineReason.PRODUCT_UNAVAILABLE
        if reason is None:
            if status == 400 and code != "TRANSACTION_CANNOT_BE_PROCESSED_AT_THE_MOMENT":
                log.error("Reloadly refused top-up %s: %s %s", request.reference, code,
                          _message(body))
                reason = DeclineReason.DECLINED
            else:  # said to come back as 400 or 500: we do not know; look it up
                raise GatewayError(f"top-up {request.reference}: HTTP {status} {code}")
        if reason is DeclineReason.PRODUCT_UNAVAILABLE:
            self._operators = None  # the catalog moved: read it again
        return self._declined(request, reason, amount=Money.from_decimal(
            amount, entry.sender_currency))

    async def _what_to_send(self, request: TopUpRequest,
                            ) -> tuple[ReloadlyOperator, Decimal] | TopUpResult:
        """The operator and amount to send, or the decline when Reloadly does not sell
        it (nothing is sent then)."""
        if request.product_id is not None:
            parsed = _parse_product_id(request.product_id)
            entry = await self._operator_by_id(parsed[0]) if parsed else None
            if parsed is None or entry is None or entry.operator is not request.operator \
                    or not entry.sells(parsed[1]):
                return self._declined(request, DeclineReason.PRODUCT_UNAVAILABLE)
            return entry, parsed[1]
        if request.amount is None:
            return self._declined(request, DeclineReason.AMOUNT_NOT_OFFERED)
        airtime = await self._airtime_operator(request.operator)
        if airtime is None:
            return self._declined(request, DeclineReason.OPERATOR_UNAVAILABLE)
        amount = request.amount.as_decimal()
        if request.amount.currency != airtime.sender_currency or not airtime.sells(amount):
            return self._declined(request, DeclineReason.AMOUNT_NOT_OFFERED)
        return airtime, amount

    def _declined(self, request: TopUpRequest, reason: DeclineReason, *,
                  amount: Money | None = None) -> TopUpResult:
        return declined(request, reason, self._clock.now(), amount=amount)

    async def lookup(self, reference: str) -> TopUpResult | None:
        status, body = await self._read("/topups/reports/transactions",
                                        {"customIdentifier": reference, "page": 1, "size": 5})
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise GatewayError(f"look-up of {reference}: HTTP {status}")
        matches = [item for item in body.get("content") or []
                   if isinstance(item, dict) and item.get("customIdentifier") == reference]
        if not matches:
            return None
        found = _result(matches[0], reference, self._clock.now())
        if found.status is TopUpStatus.PENDING:
            return await self._status(found) or found
        return found

    async def _status(self, pending: TopUpResult) -> TopUpResult | None:
        """GET /topups/{id}/status: {code, message, status, transaction} as the Java SDK
        reads it, or the flat transaction as the docs' example shows."""
        status, body = await self._read(f"/topups/{pending.provider_tx_id}/status")
        if status != 200 or not isinstance(body, dict):
            return None
        nested = body.get("transaction")
        transaction: dict[str, Any] = nested if isinstance(nested, dict) else body
        if transaction.get("transactionId") is None:
            return None  # still processing: the status answers without the transaction
        merged = {**transaction, "status": body.get("status") or transaction.get("status")}
        return _result(merged, pending.reference, self._clock.now())

    # --- the account ------------------------------------------------------------------

    async def balance(self) -> Money:
        status, body = await self._read("/accounts/balance")
        if status != 200 or not isinstance(body, dict):
            raise GatewayError(f"balance: HTTP {status}")
        try:
            return Money.from_decimal(decimal_of(body.get("balance")),
                                      str(body.get("currencyCode")))
        except MoneyError as exc:
            raise GatewayError(f"balance in {body.get('currencyCode')!r}") from exc

    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]:
        """Every top-up in [start, end) from Reloadly's reports, page by page."""
        found: list[TopUpResult] = []
        page = 1
        while True:
            status, body = await self._read("/topups/reports/transactions", {
                "startDate": _reloadly_time(start), "endDate": _reloadly_time(end),
                "page": page, "size": REPORT_PAGE_SIZE})
            if status != 200 or not isinstance(body, dict):
                raise GatewayError(f"transactions: HTTP {status}")
            for item in body.get("content") or []:
                if isinstance(item, dict):
                    result = _result(item, str(item.get("customIdentifier") or ""),
                                     self._clock.now())
                    if start <= result.at < end:
                        found.append(result)
            if body.get("last", True) or page >= int(body.get("totalPages") or 0):
                return found
            page += 1


# --- reading Reloadly's objects -----------------------------------------------------------


def _error_code(body: Any) -> str | None:
    return str(body["errorCode"]) if isinstance(body, dict) and body.get("errorCode") else None


def _message(body: Any) -> str:
    return str(body.get("message", "")) if isinstance(body, dict) else ""



def _amounts(values: Any) -> tuple[Decimal, ...]:
    return tuple(sorted({decimal_of(v).normalize() for v in values or ()}))


def _operator(item: dict[str, Any]) -> ReloadlyOperator | None:
    """The operator object as the adapter keeps it; None for one that is not Cambodian
    or not ours."""
    ours = our_operator(str(item.get("name") or ""))
    if ours is None or (item.get("country") or {}).get("isoName", COUNTRY) != COUNTRY:
        return None
    try:
        fixed = _amounts(item.get("fixedAmounts")) \
            if item.get("denominationType") == "FIXED" else ()
        descriptions = {decimal_of(k).normalize(): str(v) for k, v in
                        (item.get("fixedAmountsDescriptions") or {}).items()}
        fx = item.get("fx") or {}
        return ReloadlyOperator(
            id=int(item.get("operatorId") or item.get("id") or 0), name=str(item["name"]),
            operator=ours, bundle=bool(item.get("bundle") or item.get("data")), fixed=fixed,
            descriptions=descriptions,
            minimum=decimal_of(item["minAmount"]) if item.get("minAmount") is not None
            else None,
            maximum=decimal_of(item["maxAmount"]) if item.get("maxAmount") is not None
            else None,
            suggested=_amounts(item.get("suggestedAmounts")),
            sender_currency=str(item.get("senderCurrencyCode") or ""),
            destination_currency=str(item.get("destinationCurrencyCode") or ""),
            fx_rate=decimal_of(fx.get("rate", 1)))
    except (GatewayError, KeyError, TypeError, ValueError):
        log.warning("Reloadly operator %r not understood; left out", item.get("name"))
        return None


def _product_id(operator_id: int, amount: Decimal) -> str:
    return f"{PRODUCT_PREFIX}-{operator_id}-{amount.normalize():f}"


def _parse_product_id(product_id: str) -> tuple[int, Decimal] | None:
    prefix, _, rest = product_id.partition("-")
    operator_id, _, amount = rest.partition("-")
    if prefix != PRODUCT_PREFIX or not operator_id.isdigit():
        return None
    try:
        return int(operator_id), decimal_of(amount).normalize()
    except GatewayError:
        return None


def _products_of(entry: ReloadlyOperator) -> list[Product]:
    products = []
    for amount in entry.offered:
        price = Money.from_decimal(amount, entry.sender_currency)
        description = entry.descriptions.get(amount, "")
        if entry.bundle:
            products.append(Product(
                id=_product_id(entry.id, amount), operator=entry.operator,
                kind=ProductKind.DATA, name=description or f"{entry.name} {price.plain()}",
                price=price, validity_days=days_in(description) or 0,
                data_mb=data_mb_in(description)))
            continue
        delivered = (Money.from_decimal(amount * entry.fx_rate, entry.destination_currency)
                     if entry.destination_currency in CURRENCIES else None)
        products.append(Product(
            id=_product_id(entry.id, amount), operator=entry.operator,
            kind=ProductKind.AIRTIME, name=f"{entry.operator.display_name} "
            f"{price.plain()} airtime", price=price, airtime=delivered,
            validity_days=(validity_days_for_airtime(entry.operator, price.minor)
                           if price.currency == "USD" else 0)))
    return products


def _money(item: dict[str, Any], amount_key: str, currency_key: str) -> Money | None:
    if item.get(amount_key) is None or item.get(currency_key) not in CURRENCIES:
        return None
    try:
        return Money.from_decimal(decimal_of(item[amount_key]), str(item[currency_key]))
    except (GatewayError, MoneyError):
        return None


def _when(text: Any, fallback: datetime) -> datetime:
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return fallback


def _reloadly_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _result(item: dict[str, Any], reference: str, now: datetime) -> TopUpResult:
    status_text = str(item.get("status") or "")
    status = _STATUS.get(status_text)
    if status is None or item.get("transactionId") is None:
        raise GatewayError(f"transaction of {reference}: status {status_text!r} not understood")
    requested = _money(item, "requestedAmount", "requestedAmountCurrencyCode")
    discount = _money(item, "discount", "discountCurrencyCode")
    cost = None
    info = item.get("balanceInfo")
    if isinstance(info, dict) and info.get("currencyCode") in CURRENCIES:
        old = _money(info, "oldBalance", "currencyCode")
        new = _money(info, "newBalance", "currencyCode")
        cost = old - new if old is not None and new is not None else None
    if cost is None and requested is not None and discount is not None \
            and discount.currency == requested.currency:
        cost = requested - discount
    return TopUpResult(
        reference=reference, status=status, provider_tx_id=str(item["transactionId"]),
        amount=requested or Money(0, "USD"), at=_when(item.get("transactionDate"), now),
        failure_reason=(None if status is not TopUpStatus.FAILED else
                        "refunded_by_operator" if status_text == "REFUNDED"
                        else DeclineReason.DECLINED.value),
        delivered=_money(item, "deliveredAmount", "deliveredAmountCurrencyCode"),
        provider_cost=cost, provider_discount=discount)

