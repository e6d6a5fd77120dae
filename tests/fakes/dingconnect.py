"""A fake of the DingConnect HTTP API ("Ding API V1"): a real server on 127.0.0.1 that keeps
a distributor balance, Cambodian providers and products, and transfer records, and refuses
what Ding refuses.

    with FakeDingConnect(clock=clock.now) as ding:
        ding.submit_next(settle_to="Failed", after=timedelta(minutes=5))
        ...                                  # the adapter talks to ding.base_url

What it follows, from Ding's published swagger 2.0 description (host api.dingconnect.com):

* Every method is /api/V1/<Method>. Header ``api_key`` is required: missing or wrong gives
  401 with ``{ResultCode, ErrorCodes: [{Code, Context}]}``. ``X-Correlation-Id`` is echoed.
* GET GetProviders ?countryIsos&providerCodes&regionCodes (repeatable) &accountNumber →
  Items[{ProviderCode, CountryIso, Name, ShortName, ValidationRegex, CustomerCareNumber,
  RegionCodes, PaymentTypes, LogoUrl}]. accountNumber keeps the providers whose
  ValidationRegex matches it: that is how Ding tells the operator of a number.
* GET GetProducts ?countryIsos&providerCodes&skuCodes&benefits&regionCodes&accountNumber →
  Items[{ProviderCode, SkuCode, LocalizationKey, SettingDefinitions, Minimum, Maximum,
  CommissionRate, ProcessingMode, RedemptionMechanism, Benefits, ValidityPeriodIso, UatNumber,
  AdditionalInformation, DefaultDisplayText, RegionCode, PaymentTypes, LookupBillsRequired}];
  Minimum/Maximum are Price {CustomerFee, DistributorFee, ReceiveValue, ReceiveCurrencyIso,
  ReceiveValueExcludingTax, TaxRate, TaxName, TaxCalculation, SendValue, SendCurrencyIso}.
  A fixed-value product has Minimum == Maximum.
* GET GetProviderStatus ?providerCodes → Items[{ProviderCode, IsProcessingTransfers, Message}].
* POST SendTransfer {SkuCode, SendValue (2 dp), SendCurrencyIso, AccountNumber, DistributorRef,
  Settings, ValidateOnly, BillRef} → {TransferRecord, ResultCode, ErrorCodes}, that shape on
  200/400/500/503. TransferRecord = {TransferId{TransferRef, DistributorRef}, SkuCode, Price,
  CommissionApplied, StartedUtc, CompletedUtc, ProcessingState, ReceiptText,
  ReceiptParams{providerRef}, AccountNumber}. Documented behaviour kept here:
  SendValue within [Minimum, Maximum]; SendCurrencyIso empty means the distributor currency;
  ValidateOnly checks the request and the balance, deducts nothing and gives no TransferId,
  the Price being an estimate; Instant products end Complete (or Failed); Batch products
  answer Submitted, are deducted at once and refunded if they fail; past the 90 s provider
  limit the answer is ProviderTimedOut, failed and not charged; DistributorFee is deducted
  on top of SendValue, CustomerFee is taken off SendValue before the provider; a transfer to
  a product's UatNumber is test mode and deducts nothing.
* POST ListTransferRecords {TransferRef, DistributorRef, AccountNumber, Skip, Take (required)}
  → {Items[{TransferRecord, ResultCode, ErrorCodes}], ThereAreMoreItems}; only transfers of
  the last 2 months.
* GET GetBalance → {Balance, CurrencyIso}; GET GetErrorCodeDescriptions → Items[{Code, Message}].

The fake's own choices, where the docs are silent:

* ResultCode: 1 success (as in the generated SDKs' examples); 2 the request was refused
  (auth, validation, balance, duplicate, rate limit); 3 Ding or the provider failed
  (5xx, ProviderUnavailable, ProviderTimedOut, a record that ended Failed).
* ErrorCodes[].Code names are the fake's (Ding publishes its list only through
  GetErrorCodeDescriptions at run time), except ProviderTimedOut, which the docs name. See
  ``ErrorCode``; GetErrorCodeDescriptions lists them all.
* HTTP status: 400 for every refusal of a request (InvalidRequest for a missing or mistyped
  field, Context naming it), 401 auth, 503 ProviderUnavailable (nothing recorded), 500
  ProviderTimedOut (with the Failed TransferRecord), 429 RateLimited (only when injected).
* Seeded providers, all CountryIso and RegionCode "KH", Prepaid: Smart SMKH, Cellcard CCKH,
  Metfone MFKH, Seatel STKH (invented codes). ValidationRegex is 855, a national prefix
  (without its 0) and 6 or 7 digits; AccountNumber may also carry a leading "+".
  CustomerCareNumber is null, LogoUrl is invented.
* Products per provider: fixed airtime 1, 2, 5 and 10 USD (commission 3 %), range airtime
  0.50–50.00 USD (commission 2 %), a 5 USD "20 GB 30 days" data bundle (P30D, DistributorFee
  0.10, no commission). Seatel's range product receives KHR at 4100 per USD; Metfone's data
  bundle is ProcessingMode Batch. CustomerFee is 0 everywhere. No product needs Settings or
  LookupBills; Settings and BillRef are accepted and ignored. Send prices are in the
  distributor's currency (``currency``, USD by default; the seeded amounts are USD-sized).
* CommissionRate is a fraction (0.03 = 3 %). CommissionApplied = SendValue × CommissionRate;
  cost to the distributor = SendValue + DistributorFee − CommissionApplied (cents, half up);
  ReceiveValue = (SendValue − CustomerFee) × rate, rounded down to the receive currency's
  unit. Tax is left to the provider: TaxRate/TaxName/TaxCalculation null.
* A DistributorRef is used up by any transfer that was recorded, Failed ones included (a
  retry after ProviderTimedOut needs a new ref), and by nothing that was refused or only
  validated. ``duplicate_refs="pay_twice"`` turns the check off.
* ValidateOnly answers ProcessingState "Complete" with TransferId, StartedUtc and CompletedUtc
  null. It does not use up submit_next/provider_timeout_next. A refusal answers
  TransferRecord null.
* Batch transfers settle Complete BATCH_SETTLE_AFTER after they started unless submit_next
  says otherwise; a settled-Failed record carries ErrorCodes [ProviderError]. Settling is
  evaluated lazily, by the fake's clock, whenever state is read (over HTTP or by a control).
* "2 months" is calendar months back from the fake's clock. ListTransferRecords: newest
  first, Take ≥ 1, Skip ≥ 0, filters exact (AccountNumber without "+"). Paths, query
  parameter names, body field names and GetProviders/GetProducts filter values are matched
  case-insensitively, as ASP.NET does.
* Money is Decimal throughout; answers write it as JSON numbers (a float made from the
  Decimal at the edge, whose shortest repr is the same digits).
"""

from __future__ import annotations

import calendar
import enum
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from tests.fakes.http import Answer, FakeHttpServer, LoggedRequest, Route

API_PREFIX = "/api/V1/"
DEFAULT_API_KEY = "ding-test-key"
CORRELATION_HEADER = "X-Correlation-Id"

RESULT_SUCCESS = 1
RESULT_REFUSED = 2
RESULT_FAILED = 3

PROVIDER_TIME_LIMIT = timedelta(seconds=90)  # documented; the fake answers at once
BATCH_SETTLE_AFTER = timedelta(minutes=2)
LISTING_MONTHS = 2
RETRY_AFTER_SECONDS = 1  # sent with an injected 429

COUNTRY_ISO = "KH"
REGION_CODE = "KH"
DIAL_CODE = "855"
KHR_PER_USD = Decimal("4100")

SMART = "SMKH"
CELLCARD = "CCKH"
METFONE = "MFKH"
SEATEL = "STKH"
PROVIDER_CODES = (SMART, CELLCARD, METFONE, SEATEL)

FIXED_TOPUP_VALUES = (Decimal("1.00"), Decimal("2.00"), Decimal("5.00"), Decimal("10.00"))
RANGE_MINIMUM = Decimal("0.50")
RANGE_MAXIMUM = Decimal("50.00")
DATA_BUNDLE_VALUE = Decimal("5.00")
DATA_BUNDLE_TEXT = "20 GB 30 days"
DATA_BUNDLE_VALIDITY = "P30D"

FIXED_COMMISSION_RATE = Decimal("0.03")
RANGE_COMMISSION_RATE = Decimal("0.02")
DATA_DISTRIBUTOR_FEE = Decimal("0.10")

_CENT = Decimal("0.01")
_MINOR_UNITS = {"KHR": Decimal("1")}  # riel has no minor unit in use; others are in cents


class ProcessingState(enum.StrEnum):
    SUBMITTED = "Submitted"
    PROCESSING = "Processing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    CANCELLING = "Cancelling"


class ProcessingMode(enum.StrEnum):
    INSTANT = "Instant"
    BATCH = "Batch"


class ErrorCode(enum.StrEnum):
    """The fake's names for Ding's error codes (only ProviderTimedOut is Ding's own)."""

    AUTHENTICATION_FAILED = "AuthenticationFailed"
    INVALID_REQUEST = "InvalidRequest"
    PRODUCT_NOT_FOUND = "ProductNotFound"
    ACCOUNT_NUMBER_INVALID = "AccountNumberInvalid"
    INVALID_SEND_VALUE = "InvalidSendValue"
    VALUE_OUT_OF_RANGE = "ValueOutOfRange"
    INVALID_SEND_CURRENCY = "InvalidSendCurrency"
    DUPLICATE_DISTRIBUTOR_REF = "DuplicateDistributorRef"
    INSUFFICIENT_BALANCE = "InsufficientBalance"
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    PROVIDER_TIMED_OUT = "ProviderTimedOut"
    PROVIDER_ERROR = "ProviderError"
    RATE_LIMITED = "RateLimited"
    NOT_FOUND = "NotFound"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    INTERNAL_ERROR = "InternalError"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"


ERROR_DESCRIPTIONS: Mapping[ErrorCode, str] = {
    ErrorCode.AUTHENTICATION_FAILED: "The api_key header is missing or not recognised.",
    ErrorCode.INVALID_REQUEST: "The request is malformed or misses a required field.",
    ErrorCode.PRODUCT_NOT_FOUND: "No product has this SkuCode.",
    ErrorCode.ACCOUNT_NUMBER_INVALID: "The AccountNumber does not match the provider.",
    ErrorCode.INVALID_SEND_VALUE: "SendValue must be a positive number with at most 2 decimals.",
    ErrorCode.VALUE_OUT_OF_RANGE: "SendValue is outside the product's Minimum and Maximum.",
    ErrorCode.INVALID_SEND_CURRENCY: "SendCurrencyIso is not the distributor's currency.",
    ErrorCode.DUPLICATE_DISTRIBUTOR_REF: "A transfer with this DistributorRef already exists.",
    ErrorCode.INSUFFICIENT_BALANCE: "The distributor balance does not cover the transfer.",
    ErrorCode.PROVIDER_UNAVAILABLE: "The provider is not processing transfers right now.",
    ErrorCode.PROVIDER_TIMED_OUT:
        f"The provider did not answer within {PROVIDER_TIME_LIMIT.seconds} seconds.",
    ErrorCode.PROVIDER_ERROR: "The provider failed the transfer.",
    ErrorCode.RATE_LIMITED: "Too many requests; retry later.",
    ErrorCode.NOT_FOUND: "There is no such API method.",
    ErrorCode.METHOD_NOT_ALLOWED: "The API method does not take this HTTP verb.",
    ErrorCode.INTERNAL_ERROR: "An internal error occurred.",
    ErrorCode.SERVICE_UNAVAILABLE: "The service is unavailable.",
}

_CODE_FOR_STATUS = {400: ErrorCode.INVALID_REQUEST, 401: ErrorCode.AUTHENTICATION_FAILED,
                    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
                    429: ErrorCode.RATE_LIMITED, 500: ErrorCode.INTERNAL_ERROR,
                    503: ErrorCode.SERVICE_UNAVAILABLE}


# -- seeded catalogue --------------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    code: str
    name: str
    short_name: str
    prefixes: tuple[str, ...]  # national prefixes without the leading 0

    @property
    def validation_regex(self) -> str:
        return rf"^{DIAL_CODE}({'|'.join(self.prefixes)})\d{{6,7}}$"

    @property
    def uat_number(self) -> str:
        return f"{DIAL_CODE}{self.prefixes[0]}000000"

    def accepts(self, account_number: str) -> bool:
        return re.fullmatch(self.validation_regex, account_number) is not None


_PROVIDERS: Mapping[str, _Provider] = {p.code: p for p in (
    _Provider(SMART, "Smart Cambodia", "Smart",
              ("10", "15", "16", "69", "70", "81", "86", "87", "93", "96", "98")),
    _Provider(CELLCARD, "Cellcard Cambodia", "Cellcard",
              ("11", "12", "14", "17", "61", "76", "77", "78", "79", "85", "89", "92", "95",
               "99")),
    _Provider(METFONE, "Metfone Cambodia", "Metfone",
              ("31", "60", "66", "67", "68", "71", "88", "90", "97")),
    _Provider(SEATEL, "Seatel Cambodia", "Seatel", ("18",)),
)}

UAT_NUMBERS: Mapping[str, str] = {code: p.uat_number for code, p in _PROVIDERS.items()}
EXAMPLE_NUMBERS: Mapping[str, str] = {  # one ordinary valid number per provider
    SMART: "85510234567", CELLCARD: "855123456789", METFONE: "85597765432",
    SEATEL: "85518123456"}


@dataclass(frozen=True)
class ProviderSkus:
    fixed: Mapping[Decimal, str]  # SendValue → SkuCode of the fixed airtime product
    range: str
    data: str


SKUS: Mapping[str, ProviderSkus] = {code: ProviderSkus(
    fixed={value: f"{code}_TOPUP_{int(value)}USD" for value in FIXED_TOPUP_VALUES},
    range=f"{code}_TOPUP_RANGE", data=f"{code}_DATA_20GB_30D") for code in PROVIDER_CODES}
BATCH_SKU = SKUS[METFONE].data
KHR_SKU = SKUS[SEATEL].range


@dataclass(frozen=True)
class _Price:
    send_value: Decimal
    send_currency: str
    receive_value: Decimal
    receive_currency: str
    customer_fee: Decimal
    distributor_fee: Decimal
    commission: Decimal

    @property
    def cost(self) -> Decimal:
        """What the distributor's balance pays (Ding's docs: SendValue + DistributorFee)."""
        return self.send_value + self.distributor_fee - self.commission


@dataclass(frozen=True)
class _Product:
    sku_code: str
    provider_code: str
    minimum: Decimal  # SendValue bounds, in the distributor currency
    maximum: Decimal
    benefits: tuple[str, ...]
    display_text: str
    receive_currency: str = "USD"
    receive_rate: Decimal = Decimal(1)  # receive units per unit sent to the provider
    commission_rate: Decimal = Decimal(0)
    distributor_fee: Decimal = Decimal(0)
    customer_fee: Decimal = Decimal(0)
    mode: ProcessingMode = ProcessingMode.INSTANT
    validity: str | None = None

    def price_for(self, send_value: Decimal, send_currency: str) -> _Price:
        to_provider = send_value - self.customer_fee
        unit = _MINOR_UNITS.get(self.receive_currency, _CENT)
        return _Price(
            send_value=send_value, send_currency=send_currency,
            receive_value=(to_provider * self.receive_rate).quantize(unit, ROUND_DOWN),
            receive_currency=self.receive_currency, customer_fee=self.customer_fee,
            distributor_fee=self.distributor_fee,
            commission=_cents(send_value * self.commission_rate))


def _seed_products() -> dict[str, _Product]:
    products: list[_Product] = []
    for code in PROVIDER_CODES:
        name = _PROVIDERS[code].short_name
        skus = SKUS[code]
        for value, sku in skus.fixed.items():
            products.append(_Product(sku, code, value, value, ("Mobile",),
                                     f"{name} top-up {value} USD",
                                     commission_rate=FIXED_COMMISSION_RATE))
        khr = code == SEATEL  # clients meet a receive currency other than the send one
        products.append(_Product(
            skus.range, code, RANGE_MINIMUM, RANGE_MAXIMUM, ("Mobile",),
            f"{name} top-up {RANGE_MINIMUM}–{RANGE_MAXIMUM} USD",
            receive_currency="KHR" if khr else "USD",
            receive_rate=KHR_PER_USD if khr else Decimal(1),
            commission_rate=RANGE_COMMISSION_RATE))
        products.append(_Product(
            skus.data, code, DATA_BUNDLE_VALUE, DATA_BUNDLE_VALUE, ("Data",),
            f"{name} {DATA_BUNDLE_TEXT}", distributor_fee=DATA_DISTRIBUTOR_FEE,
            mode=ProcessingMode.BATCH if skus.data == BATCH_SKU else ProcessingMode.INSTANT,
            validity=DATA_BUNDLE_VALIDITY))
    return {p.sku_code: p for p in products}


_PRODUCTS: Mapping[str, _Product] = _seed_products()


# -- transfer records --------------------------------------------------------------------


SettleState = Literal["Complete", "Failed"]
DuplicateRefs = Literal["reject", "pay_twice"]


@dataclass
class FakeTransfer:
    """One recorded transfer. Controls hand out copies: change state through the fake."""

    transfer_ref: str
    distributor_ref: str
    sku_code: str
    account_number: str  # as Ding stores it: international, without "+"
    state: ProcessingState
    send_value: Decimal
    send_currency: str
    receive_value: Decimal
    receive_currency: str
    customer_fee: Decimal
    distributor_fee: Decimal
    commission: Decimal
    cost: Decimal  # what this transfer costs the distributor
    charged: Decimal  # what is deducted from the balance now (0 once refunded or never)
    started_utc: datetime
    completed_utc: datetime | None = None
    error_code: ErrorCode | None = None
    provider_ref: str | None = None
    uat: bool = False
    settles_at: datetime | None = None  # a Submitted record's settling moment
    settles_to: ProcessingState | None = None


@dataclass(frozen=True)
class _Submission:
    settle_to: ProcessingState
    after: timedelta


class _Refusal(Exception):
    """A request Ding refuses: nothing recorded, nothing charged."""

    def __init__(self, status: int, code: ErrorCode, context: str,
                 result: int = RESULT_REFUSED) -> None:
        super().__init__(f"{code}: {context}")
        self.status = status
        self.code = code
        self.context = context
        self.result = result


class FakeDingConnect(FakeHttpServer):
    name = "fake-dingconnect"

    def __init__(self, *, api_key: str = DEFAULT_API_KEY,
                 clock: Callable[[], datetime] | None = None,
                 balance: Decimal = Decimal("1000.00"), currency: str = "USD",
                 duplicate_refs: DuplicateRefs = "reject",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.currency = currency
        self.duplicate_refs: DuplicateRefs = duplicate_refs
        self._clock = clock or (lambda: datetime.now(UTC))
        self._balance = _decimal_amount(balance)
        self._transfers: list[FakeTransfer] = []
        self._down: set[str] = set()
        self._timeouts_pending = 0
        self._submissions: deque[_Submission] = deque()
        self._ref_counter = 700_000_000  # TransferRefs: Ding's look numeric

    # -- controls (the test's thread) --------------------------------------------------

    @property
    def balance(self) -> Decimal:
        with self.lock:
            self._settle_due()
            return self._balance

    def set_balance(self, amount: Decimal) -> None:
        with self.lock:
            self._balance = _decimal_amount(amount)

    def transfers(self) -> list[FakeTransfer]:
        """Every recorded transfer, oldest first, however old."""
        with self.lock:
            self._settle_due()
            return [replace(t) for t in self._transfers]

    def transfer_by_ref(self, distributor_ref: str) -> FakeTransfer | None:
        """The newest transfer with this DistributorRef (pay_twice may have made several)."""
        matching = [t for t in self.transfers() if t.distributor_ref == distributor_ref]
        return matching[-1] if matching else None

    def set_provider_down(self, provider_code: str, down: bool = True) -> None:
        """A down provider refuses SendTransfer (ValidateOnly too) with ProviderUnavailable."""
        _provider(provider_code)
        with self.lock:
            if down:
                self._down.add(provider_code)
            else:
                self._down.discard(provider_code)

    def submit_next(self, count: int = 1, *, settle_to: SettleState = "Complete",
                    after: timedelta = BATCH_SETTLE_AFTER) -> None:
        """The next ``count`` accepted transfers answer Submitted (charged at once) and
        settle to ``settle_to`` once the fake's clock is ``after`` past their start."""
        submission = _Submission(ProcessingState(settle_to), after)
        with self.lock:
            self._submissions.extend([submission] * count)

    def settle(self, transfer_ref: str, state: SettleState) -> None:
        """Settle a Submitted transfer now, by hand."""
        with self.lock:
            self._settle_due()
            transfer = next((t for t in self._transfers if t.transfer_ref == transfer_ref),
                            None)
            if transfer is None:
                raise KeyError(transfer_ref)
            if transfer.state is not ProcessingState.SUBMITTED:
                raise ValueError(f"transfer {transfer_ref} is {transfer.state}, not Submitted")
            self._apply_settlement(transfer, ProcessingState(state), self._now())

    def provider_timeout_next(self, count: int = 1) -> None:
        """The next ``count`` accepted transfers answer ProviderTimedOut at once (the test
        moves the clock): recorded Failed, not charged."""
        with self.lock:
            self._timeouts_pending += count

    # -- the base's hooks --------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        endpoints: list[tuple[str, str, Callable[[LoggedRequest], Answer]]] = [
            ("GET", "GetProviders", self._get_providers),
            ("GET", "GetProducts", self._get_products),
            ("GET", "GetProviderStatus", self._get_provider_status),
            ("GET", "GetBalance", self._get_balance),
            ("GET", "GetErrorCodeDescriptions", self._get_error_code_descriptions),
            ("POST", "SendTransfer", self._send_transfer),
            ("POST", "ListTransferRecords", self._list_transfer_records),
        ]
        return [(method, f"(?i){re.escape(API_PREFIX + name)}", self._endpoint(handler))
                for method, name, handler in endpoints]

    def error_answer(self, status: int, request: LoggedRequest) -> Answer:
        code = _CODE_FOR_STATUS.get(status, ErrorCode.INTERNAL_ERROR if status >= 500
                                    else ErrorCode.INVALID_REQUEST)
        result = RESULT_FAILED if status >= 500 else RESULT_REFUSED
        body = _failure_body(result, code, request.path,
                             transfer_shape=_is_send_transfer(request) and status != 401)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 429 else {}
        return _with_correlation(Answer(status, body, headers), request)

    # -- endpoints (the server's thread, under self.lock) ------------------------------

    def _endpoint(self, handler: Callable[[LoggedRequest], Answer]) -> Route:
        def serve(request: LoggedRequest, _groups: dict[str, str]) -> Answer:
            with self.lock:
                try:
                    if request.headers.get("api_key") != self.api_key:
                        raise _Refusal(401, ErrorCode.AUTHENTICATION_FAILED, "api_key")
                    self._settle_due()
                    answer = handler(request)
                except _Refusal as refusal:
                    answer = Answer(refusal.status, _failure_body(
                        refusal.result, refusal.code, refusal.context,
                        transfer_shape=_is_send_transfer(request) and refusal.status != 401))
            return _with_correlation(answer, request)
        return serve

    def _get_providers(self, request: LoggedRequest) -> Answer:
        query = _Query(request)
        account = query.account_number()
        items = [_provider_json(p) for p in _PROVIDERS.values()
                 if query.allows("countryIsos", COUNTRY_ISO)
                 and query.allows("providerCodes", p.code)
                 and query.allows("regionCodes", REGION_CODE)
                 and (account is None or p.accepts(account))]
        return _ok({"Items": items})

    def _get_products(self, request: LoggedRequest) -> Answer:
        query = _Query(request)
        account = query.account_number()
        items = [self._product_json(p) for p in _PRODUCTS.values()
                 if query.allows("countryIsos", COUNTRY_ISO)
                 and query.allows("providerCodes", p.provider_code)
                 and query.allows("skuCodes", p.sku_code)
                 and query.allows("regionCodes", REGION_CODE)
                 and query.allows_any("benefits", p.benefits)
                 and (account is None or _PROVIDERS[p.provider_code].accepts(account))]
        return _ok({"Items": items})

    def _get_provider_status(self, request: LoggedRequest) -> Answer:
        query = _Query(request)
        items = [{"ProviderCode": code, "IsProcessingTransfers": code not in self._down,
                  "Message": "Suspended" if code in self._down else "Operational"}
                 for code in PROVIDER_CODES if query.allows("providerCodes", code)]
        return _ok({"Items": items})

    def _get_balance(self, _request: LoggedRequest) -> Answer:
        return _ok({"Balance": _number(self._balance), "CurrencyIso": self.currency})

    def _get_error_code_descriptions(self, _request: LoggedRequest) -> Answer:
        return _ok({"Items": [{"Code": str(code), "Message": message}
                              for code, message in ERROR_DESCRIPTIONS.items()]})

    def _send_transfer(self, request: LoggedRequest) -> Answer:
        body = _Body(request)
        sku_code = body.text("SkuCode")
        account_number = _normalise_account(body.text("AccountNumber"))
        distributor_ref = body.text("DistributorRef")
        validate_only = body.flag("ValidateOnly")
        send_value = body.send_value()
        send_currency = body.optional_text("SendCurrencyIso") or self.currency

        product = _PRODUCTS.get(sku_code)
        if product is None:
            raise _Refusal(400, ErrorCode.PRODUCT_NOT_FOUND, sku_code)
        provider = _PROVIDERS[product.provider_code]
        if not provider.accepts(account_number):
            raise _Refusal(400, ErrorCode.ACCOUNT_NUMBER_INVALID, "AccountNumber")
        if send_currency.upper() != self.currency.upper():
            raise _Refusal(400, ErrorCode.INVALID_SEND_CURRENCY, "SendCurrencyIso")
        if not product.minimum <= send_value <= product.maximum:
            raise _Refusal(400, ErrorCode.VALUE_OUT_OF_RANGE,
                           f"SendValue {product.minimum}..{product.maximum}")
        if self.duplicate_refs == "reject" and any(
                t.distributor_ref == distributor_ref for t in self._transfers):
            raise _Refusal(400, ErrorCode.DUPLICATE_DISTRIBUTOR_REF, distributor_ref)
        if provider.code in self._down:
            raise _Refusal(503, ErrorCode.PROVIDER_UNAVAILABLE, provider.code, RESULT_FAILED)
        price = product.price_for(send_value, self.currency)
        uat = account_number == provider.uat_number
        charge = Decimal(0) if uat else price.cost
        if charge > self._balance:
            raise _Refusal(400, ErrorCode.INSUFFICIENT_BALANCE, "Balance")

        if validate_only:
            return _ok({"TransferRecord": _estimate_json(sku_code, account_number, price)})
        transfer = self._record(product, price, distributor_ref, account_number, charge, uat)
        record = _record_json(transfer)
        if transfer.error_code is ErrorCode.PROVIDER_TIMED_OUT:
            return Answer(500, {"TransferRecord": record, "ResultCode": RESULT_FAILED,
                                "ErrorCodes": [_error(transfer.error_code, provider.code)]})
        return _ok({"TransferRecord": record})

    def _list_transfer_records(self, request: LoggedRequest) -> Answer:
        body = _Body(request)
        take = body.integer("Take", minimum=1)
        skip = body.integer("Skip", minimum=0, default=0)
        account = body.optional_text("AccountNumber")
        wanted = {"transfer_ref": body.optional_text("TransferRef"),
                  "distributor_ref": body.optional_text("DistributorRef"),
                  "account_number": None if account is None else _normalise_account(account)}
        cutoff = _months_before(self._now(), LISTING_MONTHS)
        matching = [t for t in reversed(self._transfers)  # ties: the later one first
                    if t.started_utc >= cutoff
                    and all(v is None or getattr(t, k) == v for k, v in wanted.items())]
        matching.sort(key=lambda t: t.started_utc, reverse=True)
        page = matching[skip:skip + take]
        items = [{"TransferRecord": _record_json(t), **_outcome(t)} for t in page]
        return _ok({"Items": items, "ThereAreMoreItems": skip + take < len(matching)})

    # -- state ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must give aware datetimes")
        return now.astimezone(UTC)

    def _next_ref(self) -> str:
        self._ref_counter += 1
        return str(self._ref_counter)

    def _record(self, product: _Product, price: _Price, distributor_ref: str,
                account_number: str, charge: Decimal, uat: bool) -> FakeTransfer:
        """Record an accepted transfer and charge it, as the provider's outcome says."""
        now = self._now()
        transfer = FakeTransfer(
            transfer_ref=self._next_ref(), distributor_ref=distributor_ref,
            sku_code=product.sku_code, account_number=account_number,
            state=ProcessingState.SUBMITTED, send_value=price.send_value,
            send_currency=price.send_currency, receive_value=price.receive_value,
            receive_currency=price.receive_currency, customer_fee=price.customer_fee,
            distributor_fee=price.distributor_fee, commission=price.commission,
            cost=price.cost, charged=charge, started_utc=now, uat=uat)
        if self._timeouts_pending:
            self._timeouts_pending -= 1
            transfer.charged = Decimal(0)
            transfer.state = ProcessingState.FAILED
            transfer.error_code = ErrorCode.PROVIDER_TIMED_OUT
            transfer.completed_utc = now
        elif (submission := self._next_submission(product)) is not None:
            transfer.settles_at = now + submission.after
            transfer.settles_to = submission.settle_to
        else:
            self._complete(transfer, now)
        self._balance -= transfer.charged
        self._transfers.append(transfer)
        return transfer

    def _next_submission(self, product: _Product) -> _Submission | None:
        if self._submissions:
            return self._submissions.popleft()
        if product.mode is ProcessingMode.BATCH:
            return _Submission(ProcessingState.COMPLETE, BATCH_SETTLE_AFTER)
        return None

    def _complete(self, transfer: FakeTransfer, at: datetime) -> None:
        transfer.state = ProcessingState.COMPLETE
        transfer.completed_utc = at
        transfer.provider_ref = f"P{transfer.transfer_ref}"

    def _apply_settlement(self, transfer: FakeTransfer, state: ProcessingState,
                          at: datetime) -> None:
        transfer.settles_at = transfer.settles_to = None
        if state is ProcessingState.COMPLETE:
            self._complete(transfer, at)
            return
        self._balance += transfer.charged  # Batch: refunded when it fails
        transfer.charged = Decimal(0)
        transfer.state = ProcessingState.FAILED
        transfer.error_code = ErrorCode.PROVIDER_ERROR
        transfer.completed_utc = at

    def _settle_due(self) -> None:
        now = self._now()
        for transfer in self._transfers:
            if (transfer.settles_at is not None and transfer.settles_to is not None
                    and transfer.settles_at <= now):
                self._apply_settlement(transfer, transfer.settles_to, transfer.settles_at)

    def _product_json(self, product: _Product) -> dict[str, Any]:
        return {
            "ProviderCode": product.provider_code, "SkuCode": product.sku_code,
            "LocalizationKey": product.sku_code, "SettingDefinitions": [],
            "Maximum": _price_json(product.price_for(product.maximum, self.currency)),
            "Minimum": _price_json(product.price_for(product.minimum, self.currency)),
            "CommissionRate": _number(product.commission_rate),
            "ProcessingMode": str(product.mode), "RedemptionMechanism": "Immediate",
            "Benefits": list(product.benefits), "ValidityPeriodIso": product.validity,
            "UatNumber": _PROVIDERS[product.provider_code].uat_number,
            "AdditionalInformation": None, "DefaultDisplayText": product.display_text,
            "RegionCode": REGION_CODE, "PaymentTypes": ["Prepaid"],
            "LookupBillsRequired": False,
        }


# -- request parsing ---------------------------------------------------------------------


class _Query:
    """Query parameters, names matched case-insensitively, empty values ignored."""

    def __init__(self, request: LoggedRequest) -> None:
        self._values: dict[str, list[str]] = {}
        for name, values in request.query.items():
            self._values.setdefault(name.lower(), []).extend(v for v in values if v)

    def values(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])

    def allows(self, name: str, value: str) -> bool:
        wanted = self.values(name)
        return not wanted or value.upper() in {w.upper() for w in wanted}

    def allows_any(self, name: str, values: Iterable[str]) -> bool:
        return any(self.allows(name, value) for value in values)

    def account_number(self) -> str | None:
        values = self.values("accountNumber")
        return _normalise_account(values[0]) if values else None


class _Body:
    """A JSON object body, field names matched case-insensitively (as Json.NET does)."""

    def __init__(self, request: LoggedRequest) -> None:
        try:
            parsed = json.loads(request.body or b"null", parse_float=Decimal)
        except ValueError:
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, "body is not JSON") from None
        if not isinstance(parsed, dict):
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, "body is not a JSON object")
        self._fields = {str(name).lower(): value for name, value in parsed.items()}

    def _get(self, name: str) -> Any:
        return self._fields.get(name.lower())

    def optional_text(self, name: str) -> str | None:
        value = self._get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, name)
        return value

    def text(self, name: str) -> str:
        value = self.optional_text(name)
        if value is None:
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, name)
        return value

    def flag(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, name)
        return value

    def integer(self, name: str, *, minimum: int, default: int | None = None) -> int:
        """A whole number ≥ minimum; required unless a default is given."""
        value = self._get(name)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _Refusal(400, ErrorCode.INVALID_REQUEST, name)
        return value

    def send_value(self) -> Decimal:
        value = self._get("SendValue")
        # JSON numbers only: floats never appear (parse_float=Decimal), strings are refused.
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise _Refusal(400, ErrorCode.INVALID_SEND_VALUE, "SendValue")
        amount = Decimal(value)
        if not amount.is_finite() or amount <= 0 or amount != amount.quantize(_CENT):
            raise _Refusal(400, ErrorCode.INVALID_SEND_VALUE, "SendValue")
        return amount.quantize(_CENT)


def _normalise_account(number: str) -> str:
    return number.removeprefix("+")  # Ding stores international numbers without it


# -- answers -----------------------------------------------------------------------------


def _number(amount: Decimal) -> float:
    """Money as a JSON number: the base writes answers with json.dumps, which has no
    Decimal; float's shortest repr gives back the Decimal's digits."""
    return float(amount)


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, ROUND_HALF_UP)


def _decimal_amount(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal):
        raise TypeError("money is a Decimal")
    return amount


def _utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(code: ErrorCode, context: str) -> dict[str, str]:
    return {"Code": str(code), "Context": context}


def _ok(fields: dict[str, Any]) -> Answer:
    return Answer(200, {**fields, "ResultCode": RESULT_SUCCESS, "ErrorCodes": []})


def _failure_body(result: int, code: ErrorCode, context: str, *,
                  transfer_shape: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"ResultCode": result, "ErrorCodes": [_error(code, context)]}
    return {"TransferRecord": None, **body} if transfer_shape else body


def _is_send_transfer(request: LoggedRequest) -> bool:
    return request.path.lower() == (API_PREFIX + "SendTransfer").lower()


def _with_correlation(answer: Answer, request: LoggedRequest) -> Answer:
    correlation = request.headers.get(CORRELATION_HEADER.lower())
    if correlation is None:
        return answer
    return replace(answer, headers={**answer.headers, CORRELATION_HEADER: correlation})


def _provider(code: str) -> _Provider:
    try:
        return _PROVIDERS[code]
    except KeyError:
        raise KeyError(f"no seeded provider {code!r}; these are: {PROVIDER_CODES}") from None


def _provider_json(provider: _Provider) -> dict[str, Any]:
    return {
        "ProviderCode": provider.code, "CountryIso": COUNTRY_ISO, "Name": provider.name,
        "ShortName": provider.short_name, "ValidationRegex": provider.validation_regex,
        "CustomerCareNumber": None, "RegionCodes": [REGION_CODE], "PaymentTypes": ["Prepaid"],
        "LogoUrl": f"https://imagerepo.ding.com/logo/{provider.code[:2]}/{COUNTRY_ISO}.png",
    }


def _price_json(price: _Price) -> dict[str, Any]:
    return {
        "CustomerFee": _number(price.customer_fee),
        "DistributorFee": _number(price.distributor_fee),
        "ReceiveValue": _number(price.receive_value),
        "ReceiveCurrencyIso": price.receive_currency,
        "ReceiveValueExcludingTax": _number(price.receive_value),
        "TaxRate": None, "TaxName": None, "TaxCalculation": None,  # left to the provider
        "SendValue": _number(price.send_value), "SendCurrencyIso": price.send_currency,
    }


def _transfer_price(transfer: FakeTransfer) -> _Price:
    return _Price(transfer.send_value, transfer.send_currency, transfer.receive_value,
                  transfer.receive_currency, transfer.customer_fee, transfer.distributor_fee,
                  transfer.commission)


def _record_json(transfer: FakeTransfer) -> dict[str, Any]:
    complete = transfer.state is ProcessingState.COMPLETE
    receipt_params = {"providerRef": transfer.provider_ref} if transfer.provider_ref else {}
    return {
        "TransferId": {"TransferRef": transfer.transfer_ref,
                       "DistributorRef": transfer.distributor_ref},
        "SkuCode": transfer.sku_code, "Price": _price_json(_transfer_price(transfer)),
        "CommissionApplied": _number(transfer.commission if transfer.charged else Decimal(0)),
        "StartedUtc": _utc(transfer.started_utc), "CompletedUtc": _utc(transfer.completed_utc),
        "ProcessingState": str(transfer.state),
        "ReceiptText": (f"{transfer.receive_value} {transfer.receive_currency} sent to "
                        f"+{transfer.account_number}" if complete else None),
        "ReceiptParams": receipt_params, "AccountNumber": transfer.account_number,
    }


def _estimate_json(sku_code: str, account_number: str, price: _Price) -> dict[str, Any]:
    return {
        "TransferId": None, "SkuCode": sku_code, "Price": _price_json(price),
        "CommissionApplied": _number(price.commission), "StartedUtc": None,
        "CompletedUtc": None, "ProcessingState": str(ProcessingState.COMPLETE),
        "ReceiptText": None, "ReceiptParams": {}, "AccountNumber": account_number,
    }


def _outcome(transfer: FakeTransfer) -> dict[str, Any]:
    if transfer.error_code is None:
        return {"ResultCode": RESULT_SUCCESS, "ErrorCodes": []}
    provider_code = _PRODUCTS[transfer.sku_code].provider_code  # as SendTransfer's Context
    return {"ResultCode": RESULT_FAILED, "ErrorCodes": [_error(transfer.error_code,
                                                                provider_code)]}


def _months_before(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
