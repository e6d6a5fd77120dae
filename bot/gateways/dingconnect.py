"""DingConnect as a TopUpProvider, over httpx.

Written from Ding's published API (swagger 2.0, "Ding API V1"):

* every call sends the ``api_key`` header; paths are /api/V1/<Method>;
* the catalog is GetProviders + GetProducts for KH, cached for ``catalog_ttl``. A product
  whose Minimum and Maximum send values are equal is one of our products ("dc-<SkuCode>");
  a range product takes an airtime amount between its bounds;
* a top-up is SendTransfer with our reference as ``DistributorRef`` (``ValidateOnly`` for a
  dry run); it is looked up with ListTransferRecords by DistributorRef;
* the account balance is GetBalance.

Ding answers ProcessingState Submitted for batch products (the charge stays pending and is
looked up) and ProviderTimedOut after 90 s, which Ding treats as failed and does not charge:
a FAILED result here. Ding does not publish its error code list (GetErrorCodeDescriptions
gives it at run time), so codes are matched by the names below; an unknown code on a 400 is
a decline, on a 5xx an unknown outcome that is looked up. Whether Ding refuses a repeated
DistributorRef is not documented either: the adapter never re-sends without a look-up.
"""

from __future__ import annotations

import asyncio
import logging
import re
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
    declined,
)

log = logging.getLogger(__name__)

API_URL = "https://api.dingconnect.com"
COUNTRY = "KH"
PRODUCT_PREFIX = "dc-"
SUCCESS = 1  # ResultCode of a successful call (the SDK examples' value; not specified)
# Ding gives up on the operator after 90 s: wait a little longer than that for its answer.
TRANSFER_TIMEOUT_SECONDS = 100.0
LIST_PAGE = 100

_STATE = {"complete": TopUpStatus.SUCCEEDED, "completed": TopUpStatus.SUCCEEDED,
          "submitted": TopUpStatus.PENDING, "processing": TopUpStatus.PENDING,
          "cancelling": TopUpStatus.PENDING, "failed": TopUpStatus.FAILED,
          "cancelled": TopUpStatus.FAILED}

# ErrorCodes[].Code -> what a refused transfer means (nothing was charged).
_DECLINES = {
    "insufficientbalance": DeclineReason.PROVIDER_BALANCE,
    "accountnumberinvalid": DeclineReason.INVALID_NUMBER,
    "accountnumbernotvalid": DeclineReason.INVALID_NUMBER,
    "providerunavailable": DeclineReason.OPERATOR_UNAVAILABLE,
    "providererror": DeclineReason.OPERATOR_UNAVAILABLE,
    "providertimedout": DeclineReason.OPERATOR_TIMED_OUT,
    "productnotfound": DeclineReason.PRODUCT_UNAVAILABLE,
    "skucodenotfound": DeclineReason.PRODUCT_UNAVAILABLE,
    "productunavailable": DeclineReason.PRODUCT_UNAVAILABLE,
    "invalidsendvalue": DeclineReason.AMOUNT_NOT_OFFERED,
    "valueoutofrange": DeclineReason.AMOUNT_NOT_OFFERED,
    "rechargenotallowed": DeclineReason.DECLINED,
    "providerrefusedrequest": DeclineReason.DECLINED,
}
_DUPLICATE = {"duplicatedistributorref", "duplicatetransfer", "distributorrefalreadyused"}
_NOT_DONE = {"ratelimited"}  # refused before anything happened: transient

_PERIOD = re.compile(r"P(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?$")


@dataclass(frozen=True)
class DingConfig:
    api_key: str
    api_url: str | None = None  # None: Ding's own host
    timeout_seconds: float = TRANSFER_TIMEOUT_SECONDS
    catalog_ttl: timedelta = timedelta(hours=1)

    @property
    def api_base(self) -> str:
        return (self.api_url or API_URL).rstrip("/")


@dataclass(frozen=True)
class DingProduct:
    """What the adapter keeps of one GetProducts item."""

    sku: str
    operator: Operator
    data: bool
    minimum: Decimal  # send values, in send_currency
    maximum: Decimal
    send_currency: str
    receive_minimum: Decimal
    receive_currency: str
    validity_days: int | None
    text: str

    @property
    def fixed(self) -> bool:
        return self.minimum == self.maximum


class DingConnectGateway:
    """TopUpProvider, ProviderAccount and ProviderReports over DingConnect's API."""

    def __init__(self, config: DingConfig, clock: Clock, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._client = provider_client(
            config.timeout_seconds, transport=transport,
            headers={"api_key": config.api_key, "Accept": "application/json"})
        self._products: tuple[list[DingProduct], datetime] | None = None
        self._products_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- calls ------------------------------------------------------------------------

    async def _call(self, method: str, name: str, *, params: Any = None,
                    json: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        try:
            response = await self._client.request(
                method, f"{self._config.api_base}/api/V1/{name}", params=params,
                content=json_bytes(json) if json is not None else None,
                headers={"Content-Type": "application/json"} if json is not None else None)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        body = parse_json(response)
        if response.status_code in (401, 403):
            raise ProviderRefused(f"DingConnect refused DINGCONNECT_API_KEY ({name}: HTTP "
                                  f"{response.status_code})")
        if not isinstance(body, dict):
            raise GatewayError(f"{name}: HTTP {response.status_code}, no JSON object")
        if response.status_code == 429 or (response.status_code >= 500 and not (
                _code_names(body) & _DECLINES.keys() or body.get("TransferRecord"))):
            # Nothing we can read the outcome from: the caller looks it up.
            raise GatewayError(f"{name}: HTTP {response.status_code} {_codes(body)}")
        return response.status_code, body

    async def _read(self, name: str, params: Any = None) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            status, body = await self._call("GET", name, params=params)
            if status != 200 or body.get("ResultCode") != SUCCESS:
                raise GatewayError(f"{name}: HTTP {status} {_codes(body)}")
            return body
        return await retrying_read(once, self._sleep)

    async def _list(self, query: dict[str, Any]) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            status, body = await self._call("POST", "ListTransferRecords", json=query)
            if status != 200 or body.get("ResultCode") != SUCCESS:
                raise GatewayError(f"ListTransferRecords: HTTP {status} {_codes(body)}")
            return body
        return await retrying_read(once, self._sleep)

    # --- the catalog ------------------------------------------------------------------

    async def products(self) -> list[DingProduct]:
        """The KH products, each with our operator, cached for ``catalog_ttl``."""
        async with self._products_lock:
            cached = self._products
            if cached is not None and self._clock.now() < cached[1]:
                return cached[0]
            providers = await self._read("GetProviders", {"countryIsos": COUNTRY})
            operators = {str(item.get("ProviderCode")): ours
                         for item in providers.get("Items") or [] if isinstance(item, dict)
                         and (ours := our_operator(str(item.get("Name") or ""))) is not None}
            listed = await self._read("GetProducts", {"countryIsos": COUNTRY})
            found = [parsed for item in listed.get("Items") or [] if isinstance(item, dict)
                     and (parsed := _product(item, operators)) is not None]
            self._products = (found, self._clock.now() + self._config.catalog_ttl)
            return found

    async def catalog(self, operator: Operator) -> list[Product]:
        return [_as_product(p) for p in await self.products()
                if p.operator is operator and p.fixed and p.send_currency in CURRENCIES]

    async def detect_operator(self, phone_e164: str) -> Operator | None:
        body = await self._read("GetProviders", {"countryIsos": COUNTRY,
                                                 "accountNumber": phone_e164.lstrip("+")})
        for item in body.get("Items") or []:
            if isinstance(item, dict):
                ours = our_operator(str(item.get("Name") or ""))
                if ours is not None:
                    return ours
        return None

    # --- top-ups ----------------------------------------------------------------------

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        return await self._transfer(request, validate_only=False)

    async def validate(self, request: TopUpRequest) -> TopUpResult:
        """A dry run (ValidateOnly): Ding checks the request and our balance and charges
        nothing. SUCCEEDED means it would go through; the price is an estimate."""
        return await self._transfer(request, validate_only=True)

    async def _transfer(self, request: TopUpRequest, *, validate_only: bool) -> TopUpResult:
        chosen = await self._what_to_send(request)
        if isinstance(chosen, TopUpResult):
            return chosen
        product, value = chosen
        status, body = await self._call("POST", "SendTransfer", json={
            "SkuCode": product.sku, "SendValue": value,
            "SendCurrencyIso": product.send_currency,
            "AccountNumber": request.phone_e164.lstrip("+"),
            "DistributorRef": request.reference, "Settings": [],
            "ValidateOnly": validate_only})
        record = body.get("TransferRecord")
        codes = _code_names(body)
        if codes & _DUPLICATE:
            raise DuplicateReference(f"DingConnect has seen reference {request.reference}")
        if codes & _NOT_DONE:
            raise GatewayError(f"SendTransfer {request.reference}: {_codes(body)}")
        if body.get("ResultCode") == SUCCESS and isinstance(record, dict):
            if validate_only:
                return _result(record, request.reference, self._clock.now(),
                               status=TopUpStatus.SUCCEEDED)
            return _result(record, request.reference, self._clock.now())
        reason = next((_DECLINES[code] for code in codes if code in _DECLINES), None)
        if reason is None:
            if status >= 500:  # Ding may or may not have sent it: look it up
                raise GatewayError(f"SendTransfer {request.reference}: HTTP {status} "
                                   f"{_codes(body)}")
            log.error("DingConnect refused transfer %s: HTTP %s %s", request.reference,
                      status, _codes(body))
            reason = DeclineReason.DECLINED
        if reason is DeclineReason.PRODUCT_UNAVAILABLE:
            self._products = None  # the catalog moved: read it again
        failed = _result(record, request.reference, self._clock.now()) \
            if isinstance(record, dict) and record.get("TransferId") else None
        return declined(request, reason, self._clock.now(),
                        amount=Money.from_decimal(value, product.send_currency),
                        provider_tx_id=failed.provider_tx_id if failed else "")

    async def _what_to_send(self, request: TopUpRequest,
                            ) -> tuple[DingProduct, Decimal] | TopUpResult:
        products = await self.products()
        if request.product_id is not None:
            sku = request.product_id.removeprefix(PRODUCT_PREFIX)
            product = next((p for p in products if p.sku == sku and p.fixed), None)
            if not request.product_id.startswith(PRODUCT_PREFIX) or product is None \
                    or product.operator is not request.operator:
                return self._declined(request, DeclineReason.PRODUCT_UNAVAILABLE)
            return product, product.minimum
        if request.amount is None:
            return self._declined(request, DeclineReason.AMOUNT_NOT_OFFERED)
        value = request.amount.as_decimal()
        airtime = [p for p in products if p.operator is request.operator and not p.data
                   and p.send_currency == request.amount.currency
                   and p.minimum <= value <= p.maximum]
        if not airtime:
            return self._declined(request, DeclineReason.AMOUNT_NOT_OFFERED)
        # An exact fixed product first, else the range product that takes the amount.
        airtime.sort(key=lambda p: (not p.fixed, p.maximum - p.minimum))
        return airtime[0], value

    def _declined(self, request: TopUpRequest, reason: DeclineReason) -> TopUpResult:
        return declined(request, reason, self._clock.now())

    async def lookup(self, reference: str) -> TopUpResult | None:
        body = await self._list({"DistributorRef": reference, "Take": 1})
        for item in body.get("Items") or []:
            record = item.get("TransferRecord") if isinstance(item, dict) else None
            if isinstance(record, dict) and \
                    (record.get("TransferId") or {}).get("DistributorRef") == reference:
                return _result(record, reference, self._clock.now())
        return None

    # --- the account ------------------------------------------------------------------

    async def balance(self) -> Money:
        body = await self._read("GetBalance")
        try:
            return Money.from_decimal(decimal_of(body.get("Balance")),
                                      str(body.get("CurrencyIso")))
        except MoneyError as exc:
            raise GatewayError(f"balance in {body.get('CurrencyIso')!r}") from exc

    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]:
        """Every transfer started in [start, end): ListTransferRecords, newest first, page
        by page until the records are older than ``start`` (Ding keeps two months)."""
        found: list[TopUpResult] = []
        skip = 0
        while True:
            body = await self._list({"Skip": skip, "Take": LIST_PAGE})
            items = [item.get("TransferRecord") for item in body.get("Items") or []
                     if isinstance(item, dict)]
            older = False
            for record in items:
                if not isinstance(record, dict) or not record.get("TransferId"):
                    continue
                reference = str(record["TransferId"].get("DistributorRef") or "")
                result = _result(record, reference, self._clock.now())
                if result.at < start:
                    older = True
                elif result.at < end:
                    found.append(result)
            if older or not body.get("ThereAreMoreItems") or not items:
                return found
            skip += len(items)


# --- reading Ding's objects --------------------------------------------------------------


def _code_names(body: dict[str, Any]) -> set[str]:
    return {str(code.get("Code", "")).lower() for code in body.get("ErrorCodes") or []
            if isinstance(code, dict)}


def _codes(body: dict[str, Any]) -> str:
    return ",".join(sorted(_code_names(body))) or f"ResultCode {body.get('ResultCode')}"



def _validity_days(period: Any) -> int | None:
    match = _PERIOD.match(str(period or ""))
    if not match or not any(match.groupdict().values()):
        return None
    return (int(match["months"] or 0) * 30 + int(match["weeks"] or 0) * 7
            + int(match["days"] or 0))


def _product(item: dict[str, Any], operators: dict[str, Operator]) -> DingProduct | None:
    ours = operators.get(str(item.get("ProviderCode")))
    if ours is None:
        return None
    try:
        minimum, maximum = item["Minimum"], item["Maximum"]
        benefits = {str(b).lower() for b in item.get("Benefits") or []}
        return DingProduct(
            sku=str(item["SkuCode"]), operator=ours,
            data="data" in benefits and "mobile" not in benefits,
            minimum=decimal_of(minimum["SendValue"]), maximum=decimal_of(maximum["SendValue"]),
            send_currency=str(minimum.get("SendCurrencyIso") or ""),
            receive_minimum=decimal_of(minimum.get("ReceiveValue", 0)),
            receive_currency=str(minimum.get("ReceiveCurrencyIso") or ""),
            validity_days=_validity_days(item.get("ValidityPeriodIso")),
            text=str(item.get("DefaultDisplayText") or item["SkuCode"]))
    except (GatewayError, KeyError, TypeError, AttributeError):
        log.warning("DingConnect product %r not understood; left out", item.get("SkuCode"))
        return None


def _as_product(product: DingProduct) -> Product:
    price = Money.from_decimal(product.minimum, product.send_currency)
    if product.data:
        return Product(id=PRODUCT_PREFIX + product.sku, operator=product.operator,
                       kind=ProductKind.DATA, name=product.text, price=price,
                       validity_days=product.validity_days or days_in(product.text) or 0,
                       data_mb=data_mb_in(product.text))
    delivered = (Money.from_decimal(product.receive_minimum, product.receive_currency)
                 if product.receive_currency in CURRENCIES else None)
    validity = product.validity_days if product.validity_days is not None else (
        validity_days_for_airtime(product.operator, price.minor) if price.currency == "USD"
        else 0)
    return Product(id=PRODUCT_PREFIX + product.sku, operator=product.operator,
                   kind=ProductKind.AIRTIME, name=product.text, price=price,
                   airtime=delivered, validity_days=validity)


def _money(price: Any, amount_key: str, currency_key: str) -> Money | None:
    if not isinstance(price, dict) or price.get(amount_key) is None \
            or price.get(currency_key) not in CURRENCIES:
        return None
    try:
        return Money.from_decimal(decimal_of(price[amount_key]), str(price[currency_key]))
    except (GatewayError, MoneyError):
        return None


def _when(text: Any, fallback: datetime) -> datetime:
    if not text:
        return fallback
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return fallback
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _result(record: dict[str, Any], reference: str, now: datetime, *,
            status: TopUpStatus | None = None) -> TopUpResult:
    state = str(record.get("ProcessingState") or "")
    status = status or _STATE.get(state.lower())
    if status is None:
        raise GatewayError(f"transfer {reference}: state {state!r} not understood")
    price = record.get("Price") or {}
    sent = _money(price, "SendValue", "SendCurrencyIso")
    fees = [fee for fee in (_money(price, "CustomerFee", "SendCurrencyIso"),
                            _money(price, "DistributorFee", "SendCurrencyIso")) if fee]
    fee = sum(fees[1:], fees[0]) if fees else None
    commission = None
    if sent is not None and record.get("CommissionApplied") is not None:
        commission = _money({"v": record["CommissionApplied"], "c": sent.currency}, "v", "c")
    cost = sent + fee if sent is not None and fee is not None else sent
    if cost is not None and commission is not None:
        cost = cost - commission
    transfer_id = record.get("TransferId") or {}
    return TopUpResult(
        reference=reference, status=status,
        provider_tx_id=str(transfer_id.get("TransferRef") or ""),
        amount=sent or Money(0, "USD"),
        at=_when(record.get("CompletedUtc") or record.get("StartedUtc"), now),
        failure_reason=DeclineReason.DECLINED.value if status is TopUpStatus.FAILED else None,
        delivered=_money(price, "ReceiveValue", "ReceiveCurrencyIso"),
        provider_cost=cost, provider_fee=fee, provider_discount=commission)
