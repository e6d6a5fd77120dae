"""A fake of Reloadly's Airtime (top-ups) API and of its OAuth token endpoint, on 127.0.0.1.

    with FakeReloadly(clock=clock.now) as fake:      # auth URL and API URL: fake.base_url
        fake.process_next(settle_to="FAILED", after=timedelta(minutes=1))
        fake.faults.add(Fault.drop_after_processing(), path="/topups")

Written from Reloadly's public OpenAPI documentation (repository
Reloadly/reloadly-api-documentation), its error-code table, and the official Java SDK's
models and test fixtures (Reloadly/reloadly-sdk-java). What it follows:

Endpoints
    POST /oauth/token                        {client_id, client_secret, grant_type, audience}
                                             -> {access_token, scope, expires_in, token_type}
    GET  /accounts/balance                   {balance, currencyCode, currencyName, updatedAt}
    GET  /operators/countries/{iso}          an array of operators; flags suggestedAmounts,
                                             suggestedAmountsMap, includePin, includeData,
                                             includeBundles
    GET  /operators/{operatorId}             one operator
    GET  /operators/auto-detect/phone/{phone}/countries/{iso}   one airtime operator
    POST /topups                             the transaction
    POST /topups-async                       {transactionId}
    GET  /topups/{transactionId}/status      {code, message, status, transaction} (Java SDK)
    GET  /topups/reports/transactions        a Spring page of transactions
    GET  /topups/reports/transactions/{id}   one transaction
    Not served: /countries, /operators (all), fx-rate, commissions, promotions, MNP lookup.

Headers: API calls need ``Authorization: Bearer <token>`` and
``Accept: application/com.reloadly.topups-v1+json``; POST bodies are
``Content-Type: application/json``. API answers carry the vendor media type.

Error bodies: ``{timeStamp, message, path, errorCode, infoLink, details: [{field, issue}]}``;
an unknown path or a wrong method gets Spring's ``{timeStamp, status, error, message, path}``.
Documented codes used: INVALID_CREDENTIALS, INVALID_TOKEN, TOKEN_EXPIRED,
COUNTRY_NOT_SUPPORTED, COULD_NOT_AUTO_DETECT_OPERATOR, INVALID_RECIPIENT_PHONE,
PHONE_RECENTLY_RECHARGED (2 minutes), INVALID_AMOUNT_FOR_OPERATOR, INSUFFICIENT_BALANCE,
OPERATOR_UNAVAILABLE_OR_CURRENTLY_INACTIVE, TOPUP_TRANSACTION_FAILED. Codes seen from the real
API by third-party clients but not in Reloadly's own pages: INVALID_AUDIENCE,
INVALID_INPUT_PROVIDED, CUSTOM_IDENTIFIER_ALREADY_USED, OPERATOR_AND_RECIPIENT_PHONE_MISMATCH,
INVALID_LOCAL_AMOUNT_FOR_OPERATOR, LOCAL_AMOUNTS_NOT_SUPPORTED_BY_OPERATOR, OPERATOR_NOT_FOUND,
TRANSACTION_NOT_FOUND.

Money: the account pays the requested amount less the operator's discount percentage
(internationalDiscount; localDiscount for an order in the local currency, where the sender
amount is amount / fx.rate); the debit is kept to 5 decimals, as Reloadly's top-up ledger is
reported to do. deliveredAmount = amount x fx.rate rounded to the destination currency
(KHR 0 decimals, USD 2). Balances are Decimal throughout; the wire carries JSON numbers.

Invented (Reloadly publishes none of it, or the docs are silent):
  - the operator ids, names, discounts, plans, fx rates (Seatel USD->KHR at 4100; Smart,
    Cellcard and Metfone USD->USD), logos and the data-bundle operator;
  - the KH number plan: the prefixes below, national numbers of 8 or 9 digits;
  - MEDIA_TYPE_NOT_ACCEPTABLE (406), UNSUPPORTED_GRANT_TYPE (400) and 415 for a non-JSON body;
  - which rule is checked first when a request breaks several;
  - that a PROCESSING top-up settles after a delay a test chooses, that one settling FAILED or
    REFUNDED gives its cost back, and the code/message the status endpoint gives a FAILED one.
Choices where the docs were silent or disagree are marked "Choice:" next to the code.
"""

from __future__ import annotations

import enum
import http
import itertools
import json
import re
import secrets
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

from tests.fakes.http import (
    Answer,
    BearerTokens,
    FakeHttpServer,
    LoggedRequest,
    Route,
    TokenState,
)

# -- protocol constants ---------------------------------------------------------------------

TOPUPS_MEDIA_TYPE = "application/com.reloadly.topups-v1+json"
LIVE_AUDIENCE = "https://topups.reloadly.com"
SANDBOX_AUDIENCE = "https://topups-sandbox.reloadly.com"
GRANT_TYPE = "client_credentials"
TOKEN_PATH = "/oauth/token"
WIRE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # every timestamp in a body, UTC

DEFAULT_TOKEN_LIFETIME = timedelta(days=60)  # the documented expires_in: 5184000
RECHARGE_WAIT = timedelta(minutes=2)  # PHONE_RECENTLY_RECHARGED window
MAX_CUSTOM_IDENTIFIER = 150
DEFAULT_PAGE_SIZE = 200  # documented default of the transactions report
MAX_PAGE_SIZE = 500  # reported cap of the top-up report
LEDGER_PLACES = Decimal("0.00001")  # the top-up ledger's precision
FIRST_TRANSACTION_ID = 4_600_001

# Choice: a missing token gets INVALID_TOKEN with Spring's "Full authentication" message: every
# 401 example in Reloadly's docs pairs that message (Spring's words for "no credentials")
# with INVALID_TOKEN; no MISSING_TOKEN code appears in any Reloadly source.
MISSING_TOKEN_CODE = "INVALID_TOKEN"
# Choice: 503, as third-party clients report from the live API (not 400).
OPERATOR_DOWN_STATUS = 503

KH = "KH"
KH_DIAL_CODE = "855"
COUNTRY_NAMES = {KH: "Cambodia"}
CURRENCY_NAMES = {"USD": "US Dollar", "KHR": "Cambodian Riel", "EUR": "Euro",
                  "GBP": "Pound Sterling"}
CURRENCY_SYMBOLS = {"USD": "$", "KHR": "៛", "EUR": "€", "GBP": "£"}
ZERO_DECIMAL_CURRENCIES = frozenset({"KHR", "JPY", "KRW", "VND"})


class Status(enum.StrEnum):
    PROCESSING = "PROCESSING"
    SUCCESSFUL = "SUCCESSFUL"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"


FINAL_STATUSES = frozenset({Status.SUCCESSFUL, Status.REFUNDED, Status.FAILED})
MONEY_BACK_STATUSES = frozenset({Status.REFUNDED, Status.FAILED})


# -- the seeded catalogue ---------------------------------------------------------------------

SMART_ID = 1001
CELLCARD_ID = 1002
METFONE_ID = 1003
SEATEL_ID = 1004
SMART_DATA_ID = 1005

# National prefixes (after the trunk 0) of Cambodia's mobile networks.
SMART_PREFIXES = frozenset({"10", "15", "16", "69", "70", "81", "86", "87", "93", "96", "98"})
CELLCARD_PREFIXES = frozenset({"11", "12", "14", "17", "61", "76", "77", "78", "79", "85", "89",
                               "92", "95", "99"})
METFONE_PREFIXES = frozenset({"31", "60", "66", "67", "68", "71", "88", "90", "97"})
SEATEL_PREFIXES = frozenset({"18"})
KH_MOBILE_PREFIXES = SMART_PREFIXES | CELLCARD_PREFIXES | METFONE_PREFIXES | SEATEL_PREFIXES
KH_NATIONAL_LENGTHS = (8, 9)  # prefix + 6 or 7 digits


def _decimals(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


@dataclass(frozen=True)
class Operator:
    """One operator of the catalogue (invented; see the module docstring)."""

    id: int
    name: str
    prefixes: frozenset[str]
    denomination_type: str  # FIXED | RANGE
    destination_currency: str
    fx_rate: Decimal  # destination units per sender unit
    international_discount: Decimal  # percent
    local_discount: Decimal = Decimal(0)
    bundle: bool = False
    data: bool = False
    pin: bool = False
    supports_local_amounts: bool = False
    fixed_amounts: tuple[Decimal, ...] = ()
    fixed_amounts_descriptions: Mapping[str, str] = field(default_factory=dict)
    local_fixed_amounts: tuple[Decimal, ...] = ()
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    local_min_amount: Decimal | None = None
    local_max_amount: Decimal | None = None
    suggested_amounts: tuple[Decimal, ...] = ()
    country: str = KH

    @property
    def fixed(self) -> bool:
        return self.denomination_type == "FIXED"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


SEED_OPERATORS: tuple[Operator, ...] = (
    Operator(
        id=SMART_ID, name="Smart Cambodia", prefixes=SMART_PREFIXES, denomination_type="FIXED",
        destination_currency="USD", fx_rate=Decimal("1.0"), international_discount=Decimal("3.5"),
        fixed_amounts=_decimals("1", "2", "5", "10", "20")),
    Operator(
        id=CELLCARD_ID, name="Cellcard Cambodia", prefixes=CELLCARD_PREFIXES,
        denomination_type="RANGE", destination_currency="USD", fx_rate=Decimal("1.0"),
        international_discount=Decimal("4.0"), min_amount=Decimal("0.5"),
        max_amount=Decimal("50"), suggested_amounts=_decimals("1", "2", "5", "10", "20")),
    Operator(
        id=METFONE_ID, name="Metfone Cambodia", prefixes=METFONE_PREFIXES,
        denomination_type="FIXED", destination_currency="USD", fx_rate=Decimal("1.0"),
        international_discount=Decimal("3.0"), supports_local_amounts=True,
        fixed_amounts=_decimals("1", "2", "3", "5", "10", "20"),
        local_fixed_amounts=_decimals("1", "2", "3", "5", "10", "20")),
    Operator(
        id=SEATEL_ID, name="Seatel Cambodia", prefixes=SEATEL_PREFIXES, denomination_type="RANGE",
        destination_currency="KHR", fx_rate=Decimal("4100"), international_discount=Decimal("5.0"),
        supports_local_amounts=True, min_amount=Decimal("1"), max_amount=Decimal("50"),
        local_min_amount=Decimal("4100"), local_max_amount=Decimal("205000"),
        suggested_amounts=_decimals("1", "2", "5", "10")),
    Operator(
        id=SMART_DATA_ID, name="Smart Cambodia Data", prefixes=SMART_PREFIXES, bundle=True,
        data=True, denomination_type="FIXED", destination_currency="USD", fx_rate=Decimal("1.0"),
        international_discount=Decimal("2.0"), fixed_amounts=_decimals("3", "5", "10"),
        fixed_amounts_descriptions={"3.00": "Smart 20 GB / 30 days",
                                    "5.00": "Smart 40 GB / 30 days",
                                    "10.00": "Smart Unlimited / 30 days"}),
)


# -- records ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TopupRecord:
    """What a test reads back about one accepted top-up (a snapshot)."""

    id: int
    custom_identifier: str | None
    phone: str  # international digits, e.g. "85512345678"
    operator_id: int
    status: Status
    requested_amount: Decimal
    requested_currency: str
    delivered_amount: Decimal
    delivered_currency: str
    discount: Decimal
    cost: Decimal  # what the account was debited; given back if it settled FAILED/REFUNDED
    created_at: datetime
    use_local_amount: bool


@dataclass
class _Transaction:
    id: int
    custom_identifier: str | None
    phone: str
    sender_phone: str | None
    operator: Operator
    use_local_amount: bool
    requested_amount: Decimal
    requested_currency: str
    delivered_amount: Decimal
    discount: Decimal
    cost: Decimal
    created_at: datetime
    old_balance: Decimal
    new_balance: Decimal
    status: Status
    settle_at: datetime | None = None  # when a PROCESSING one settles by itself
    settle_to: Status | None = None

    def record(self) -> TopupRecord:
        return TopupRecord(
            id=self.id, custom_identifier=self.custom_identifier, phone=self.phone,
            operator_id=self.operator.id, status=self.status,
            requested_amount=self.requested_amount, requested_currency=self.requested_currency,
            delivered_amount=self.delivered_amount,
            delivered_currency=self.operator.destination_currency, discount=self.discount,
            cost=self.cost, created_at=self.created_at, use_local_amount=self.use_local_amount)


@dataclass(frozen=True)
class _Plan:
    settle_to: Status
    after: timedelta


@dataclass(frozen=True)
class _Order:
    operator_id: int
    amount: Decimal
    use_local_amount: bool
    custom_identifier: str | None
    country_code: str
    number: str
    sender_phone: str | None


@dataclass(frozen=True)
class _Price:
    requested: Decimal  # in the account currency
    discount: Decimal
    cost: Decimal
    delivered: Decimal  # in the destination currency


class _Refusal(Exception):
    """Raised inside a handler; becomes Reloadly's error body."""

    def __init__(self, status: int, error_code: str | None, message: str,
                 details: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = list(details)


def _invalid_input(message: str, field_name: str, issue: str) -> _Refusal:
    return _Refusal(400, "INVALID_INPUT_PROVIDED", message, [(field_name, issue)])


# -- small pure helpers -----------------------------------------------------------------------

def _wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(WIRE_TIME_FORMAT)


def _number(value: Decimal | None) -> float | None:
    """A JSON number for the wire; the fake itself never computes with floats."""
    return None if value is None else float(value)


def _currency_places(currency: str) -> Decimal:
    return Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")


def _round(value: Decimal, places: Decimal) -> Decimal:
    return value.quantize(places, rounding=ROUND_HALF_UP)


def _plain(value: Decimal) -> str:
    """A suggestedAmountsMap key: "5", "0.5"."""
    return format(value.normalize(), "f")


def kh_national_number(raw: str) -> str | None:
    """The national significant number of a Cambodian mobile, or None.

    Takes "+85512345678", "85512345678", "012345678" and "12345678" (spaces and dashes are
    ignored). The dial code is told from a national number by the length: 855 + 8 or 9 digits.
    """
    digits = re.sub(r"[\s-]", "", raw)
    digits = digits.removeprefix("+")
    if not digits.isdigit():
        return None
    if digits.startswith(KH_DIAL_CODE) and len(digits) - len(KH_DIAL_CODE) in KH_NATIONAL_LENGTHS:
        national = digits[len(KH_DIAL_CODE):]
    elif digits.startswith("0") and len(digits) - 1 in KH_NATIONAL_LENGTHS:
        national = digits[1:]
    else:
        national = digits
    if len(national) not in KH_NATIONAL_LENGTHS or national[:2] not in KH_MOBILE_PREFIXES:
        return None
    return national


def _flag(request: LoggedRequest, name: str, default: bool) -> bool:
    values = request.query.get(name)
    if not values:
        return default
    text = values[-1].strip().lower()
    if text not in ("true", "false"):
        raise _invalid_input(f"Invalid value for parameter {name}", name, "must be true or false")
    return text == "true"


def _query(request: LoggedRequest, name: str) -> str | None:
    values = request.query.get(name)
    return values[-1] if values else None


def _parse_int(value: Any) -> int | None:
    """An integer from a JSON number or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _parse_amount(value: Any) -> Decimal | None:
    """A positive amount from a JSON number or a numeric string ("5.00")."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | Decimal):
            amount = Decimal(value)
        elif isinstance(value, str):
            amount = Decimal(value.strip())
        else:
            return None
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


def _media_types(accept: str) -> set[str]:
    return {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}


# -- the fake ---------------------------------------------------------------------------------

class FakeReloadly(FakeHttpServer):
    """Reloadly Airtime with its OAuth endpoint, both at ``base_url``.

    State (balance, tokens, transactions, operators marked down, plans for PROCESSING
    top-ups) is shared with the server thread and changed under ``self.lock``. Top-ups that
    settle later are settled lazily, by the fake's clock, whenever anything is read.
    """

    name = "fake-reloadly"

    SMART_ID: ClassVar[int] = SMART_ID
    CELLCARD_ID: ClassVar[int] = CELLCARD_ID
    METFONE_ID: ClassVar[int] = METFONE_ID
    SEATEL_ID: ClassVar[int] = SEATEL_ID
    SMART_DATA_ID: ClassVar[int] = SMART_DATA_ID

    def __init__(self, *, client_id: str = "reloadly-test-id",
                 client_secret: str = "reloadly-test-secret",  # noqa: S107
                 sandbox: bool = True,
                 clock: Callable[[], datetime] | None = None,
                 token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
                 balance: Decimal = Decimal("1000.00"), currency: str = "USD") -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.sandbox = sandbox
        self.audience = SANDBOX_AUDIENCE if sandbox else LIVE_AUDIENCE
        self.token_lifetime = token_lifetime
        self.currency = currency
        # When True a reused customIdentifier runs again, as two requests racing through a
        # non-atomic duplicate check do: both are paid.
        self.duplicate_check_races = False
        self._clock = clock or (lambda: datetime.now(UTC))
        self._balance = Decimal(balance)
        self._balance_updated_at = self._now()
        self._tokens = BearerTokens()
        self._operators = {operator.id: operator for operator in SEED_OPERATORS}
        self._down: set[int] = set()
        self._transactions: list[_Transaction] = []
        self._ids = itertools.count(FIRST_TRANSACTION_ID)
        self._plans: deque[_Plan] = deque()

    # -- controls for tests ------------------------------------------------------------------

    @property
    def balance(self) -> Decimal:
        with self.lock:
            self._settle_due()
            return self._balance

    def set_balance(self, balance: Decimal) -> None:
        with self.lock:
            self._balance = Decimal(balance)
            self._balance_updated_at = self._now()

    @property
    def issued_tokens(self) -> int:
        with self.lock:
            return len(self._tokens)

    def expire_tokens(self) -> None:
        """Every token issued so far answers TOKEN_EXPIRED from now on."""
        with self.lock:
            self._tokens.revoke_all()

    def transactions(self) -> list[TopupRecord]:
        """Accepted top-ups, oldest first (refused requests leave nothing)."""
        with self.lock:
            self._settle_due()
            return [t.record() for t in self._transactions]

    def transaction_by_reference(self, custom_identifier: str) -> TopupRecord | None:
        """The first top-up with this customIdentifier (more exist only when racing)."""
        with self.lock:
            self._settle_due()
            for transaction in self._transactions:
                if transaction.custom_identifier == custom_identifier:
                    return transaction.record()
            return None

    def operators(self) -> list[Operator]:
        with self.lock:
            return list(self._operators.values())

    def set_operator_down(self, operator_id: int, down: bool = True) -> None:
        with self.lock:
            if operator_id not in self._operators:
                raise KeyError(operator_id)
            if down:
                self._down.add(operator_id)
            else:
                self._down.discard(operator_id)

    def process_next(self, count: int = 1, *, settle_to: str = "SUCCESSFUL",
                     after: timedelta) -> None:
        """The next ``count`` accepted top-ups answer PROCESSING (money held) and settle to
        ``settle_to`` once the fake's clock is ``after`` past their creation."""
        status = Status(settle_to)
        if status not in FINAL_STATUSES:
            raise ValueError(f"a top-up settles to one of {sorted(FINAL_STATUSES)}")
        with self.lock:
            self._plans.extend(_Plan(status, after) for _ in range(count))

    def settle(self, transaction_id: int, status: str) -> None:
        """Force a status: PROCESSING -> any final one, or SUCCESSFUL -> REFUNDED."""
        target = Status(status)
        with self.lock:
            transaction = self._find(transaction_id)
            if transaction is None:
                raise KeyError(transaction_id)
            allowed = (transaction.status is Status.PROCESSING and target in FINAL_STATUSES) or (
                transaction.status is Status.SUCCESSFUL and target is Status.REFUNDED)
            if not allowed:
                raise ValueError(f"cannot go from {transaction.status} to {target}")
            self._apply_settlement(transaction, target)

    # -- the base's hooks --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        api = self._api
        return [
            ("POST", re.escape(TOKEN_PATH), self._token),
            ("GET", r"/accounts/balance", api(self._get_balance)),
            ("GET", r"/operators/countries/(?P<iso>[^/]+)", api(self._operators_by_country)),
            ("GET", r"/operators/auto-detect/phone/(?P<phone>[^/]+)/countries/(?P<iso>[^/]+)",
             api(self._auto_detect)),
            ("GET", r"/operators/(?P<operator_id>\d+)", api(self._operator_by_id)),
            ("POST", r"/topups", api(self._topup)),
            ("POST", r"/topups-async", api(self._topup_async)),
            ("GET", r"/topups/(?P<transaction_id>\d+)/status", api(self._topup_status)),
            ("GET", r"/topups/reports/transactions", api(self._report)),
            ("GET", r"/topups/reports/transactions/(?P<transaction_id>\d+)",
             api(self._report_one)),
        ]

    def error_answer(self, status: int, request: LoggedRequest) -> Answer:
        """Spring's default body: unknown paths, wrong methods and injected statuses."""
        return Answer(status, {
            "timeStamp": _wire_time(self._now()), "status": status,
            "error": http.HTTPStatus(status).phrase, "message": "No message available",
            "path": request.path})

    # -- plumbing ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _error(self, request: LoggedRequest, refusal: _Refusal,
               headers: dict[str, str] | None = None) -> Answer:
        return Answer(refusal.status, {
            "timeStamp": _wire_time(self._now()), "message": refusal.message,
            "path": request.path, "errorCode": refusal.error_code, "infoLink": None,
            "details": [{"field": f, "issue": i} for f, i in refusal.details]},
            headers or {})

    def _api(self, handler: Route) -> Route:
        """Wrap an API handler: bearer token, Accept header, due settlements, refusals."""
        def guarded(request: LoggedRequest, params: dict[str, str]) -> Answer:
            vendor = {"Content-Type": TOPUPS_MEDIA_TYPE}
            with self.lock:
                try:
                    self._authorize(request)
                    self._check_accept(request)
                    self._settle_due()
                    answer = handler(request, params)
                except _Refusal as refusal:
                    json_type = {"Content-Type": "application/json"}
                    return self._error(request, refusal,
                                       json_type if refusal.status == 406 else vendor)
            return Answer(answer.status, answer.body, {**vendor, **answer.headers})
        return guarded

    def _authorize(self, request: LoggedRequest) -> None:
        state = self._tokens.check(request.headers.get("authorization", ""), self._now())
        if state is TokenState.MISSING:
            raise _Refusal(401, MISSING_TOKEN_CODE,
                           "Full authentication is required to access this resource")
        if state is TokenState.UNKNOWN:
            raise _Refusal(401, "INVALID_TOKEN",
                           "Invalid token, make sure token is valid for the given environment")
        if state is TokenState.EXPIRED:
            raise _Refusal(401, "TOKEN_EXPIRED", "The access token has expired")

    def _check_accept(self, request: LoggedRequest) -> None:
        if TOPUPS_MEDIA_TYPE not in _media_types(request.headers.get("accept", "")):
            raise _Refusal(406, "MEDIA_TYPE_NOT_ACCEPTABLE",
                           f"Could not find acceptable representation; send Accept: "
                           f"{TOPUPS_MEDIA_TYPE}")

    def _json_body(self, request: LoggedRequest) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                           f"Content type '{content_type}' not supported")
        try:
            body = json.loads(request.body or b"null", parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise _Refusal(400, "INVALID_INPUT_PROVIDED", "Malformed JSON request") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "INVALID_INPUT_PROVIDED", "The request body must be an object")
        return body

    def _find(self, transaction_id: int) -> _Transaction | None:
        for transaction in self._transactions:
            if transaction.id == transaction_id:
                return transaction
        return None

    def _settle_due(self) -> None:
        now = self._now()
        for transaction in self._transactions:
            if (transaction.status is Status.PROCESSING and transaction.settle_at is not None
                    and transaction.settle_to is not None and now >= transaction.settle_at):
                self._apply_settlement(transaction, transaction.settle_to)

    def _apply_settlement(self, transaction: _Transaction, status: Status) -> None:
        if status in MONEY_BACK_STATUSES and transaction.status not in MONEY_BACK_STATUSES:
            self._balance += transaction.cost
            self._balance_updated_at = self._now()
        transaction.status = status
        transaction.settle_at = transaction.settle_to = None

    # -- auth --------------------------------------------------------------------------------

    def _token(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        with self.lock:
            try:
                body = self._json_body(request)
                missing = [name for name in ("client_id", "client_secret", "grant_type",
                                             "audience") if not isinstance(body.get(name), str)]
                if missing:
                    raise _Refusal(400, "INVALID_INPUT_PROVIDED",
                                   f"Missing required field {missing[0]}",
                                   [(name, "must not be blank") for name in missing])
                if body["grant_type"] != GRANT_TYPE:
                    raise _Refusal(400, "UNSUPPORTED_GRANT_TYPE",
                                   f"Unsupported grant type; use {GRANT_TYPE}")
                if (not secrets.compare_digest(body["client_id"], self.client_id)
                        or not secrets.compare_digest(body["client_secret"], self.client_secret)):
                    raise _Refusal(401, "INVALID_CREDENTIALS", "Access Denied")
                if body["audience"] != self.audience:
                    # Choice: credentials belong to one environment, so the other
                    # environment's audience is refused as Reloadly's docs explain
                    # INVALID_CREDENTIALS; anything else is not an audience at all.
                    other = LIVE_AUDIENCE if self.sandbox else SANDBOX_AUDIENCE
                    if body["audience"] == other:
                        raise _Refusal(401, "INVALID_CREDENTIALS", "Access Denied")
                    raise _Refusal(401, "INVALID_AUDIENCE", "The provided audience is not valid")
            except _Refusal as refusal:
                return self._error(request, refusal)
            value = self._tokens.issue(self._now(), self.token_lifetime)
        scope = ("developer" if self.sandbox
                 else "send-topups read-topups-history read-operators read-promotions")
        return Answer(200, {"access_token": value, "scope": scope,
                            "expires_in": int(self.token_lifetime.total_seconds()),
                            "token_type": "Bearer"})

    # -- balance and operators ---------------------------------------------------------------

    def _get_balance(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        return Answer(200, {"balance": _number(self._balance), "currencyCode": self.currency,
                            "currencyName": CURRENCY_NAMES.get(self.currency, self.currency),
                            "updatedAt": _wire_time(self._balance_updated_at)})

    def _operator_json(self, operator: Operator, *, suggested: bool,
                       suggested_map: bool) -> dict[str, Any]:
        # Choice: suggestedAmounts / suggestedAmountsMap are always present, empty unless the
        # query asks for them (the docs: "Indicates if this field should be returned").
        places = _currency_places(operator.destination_currency)
        suggestions = operator.suggested_amounts if not operator.fixed else ()
        return {
            "id": operator.id, "operatorId": operator.id, "name": operator.name,
            "bundle": operator.bundle, "data": operator.data, "pin": operator.pin,
            "supportsLocalAmounts": operator.supports_local_amounts,
            "denominationType": operator.denomination_type,
            "senderCurrencyCode": self.currency,
            "senderCurrencySymbol": CURRENCY_SYMBOLS.get(self.currency, self.currency),
            "destinationCurrencyCode": operator.destination_currency,
            "destinationCurrencySymbol": CURRENCY_SYMBOLS.get(operator.destination_currency,
                                                              operator.destination_currency),
            "commission": _number(operator.international_discount),
            "internationalDiscount": _number(operator.international_discount),
            "localDiscount": _number(operator.local_discount),
            "mostPopularAmount": None,
            "minAmount": _number(operator.min_amount), "maxAmount": _number(operator.max_amount),
            "localMinAmount": _number(operator.local_min_amount),
            "localMaxAmount": _number(operator.local_max_amount),
            "country": {"isoName": operator.country, "name": COUNTRY_NAMES[operator.country]},
            "fx": {"rate": _number(operator.fx_rate),
                   "currencyCode": operator.destination_currency},
            "logoUrls": [f"https://logos.fake-reloadly.invalid/{operator.slug}-size-{n}.png"
                         for n in (1, 2, 3)],
            "fixedAmounts": [_number(a) for a in operator.fixed_amounts],
            "fixedAmountsDescriptions": dict(operator.fixed_amounts_descriptions),
            "localFixedAmounts": [_number(a) for a in operator.local_fixed_amounts],
            "localFixedAmountsDescriptions": {},
            "suggestedAmounts": [_number(a) for a in suggestions] if suggested else [],
            "suggestedAmountsMap": ({_plain(a): _number(_round(a * operator.fx_rate, places))
                                     for a in suggestions} if suggested_map else {}),
            "promotions": [],
        }

    def _suggestion_flags(self, request: LoggedRequest) -> dict[str, bool]:
        return {"suggested": _flag(request, "suggestedAmounts", False),
                "suggested_map": _flag(request, "suggestedAmountsMap", False)}

    @staticmethod
    def _country(iso: str) -> str:
        code = urllib.parse.unquote(iso).upper()
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise _Refusal(404, None, "Country code must be 2 characters ISO-Alpha-2 country code")
        if code not in COUNTRY_NAMES:
            raise _Refusal(404, "COUNTRY_NOT_SUPPORTED",
                           "Country not found and/or not currently supported")
        return code

    def _operators_by_country(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        country = self._country(params["iso"])
        flags = self._suggestion_flags(request)
        include_pin = _flag(request, "includePin", True)
        include_data = _flag(request, "includeData", True)
        include_bundles = _flag(request, "includeBundles", True)
        chosen = [op for op in self._operators.values() if op.country == country
                  and (include_pin or not op.pin) and (include_data or not op.data)
                  and (include_bundles or not op.bundle)]
        return Answer(200, [self._operator_json(op, **flags) for op in chosen])

    def _operator(self, operator_id: int) -> Operator:
        operator = self._operators.get(operator_id)
        if operator is None:
            # The docs' message; the code is what clients report seeing.
            raise _Refusal(404, "OPERATOR_NOT_FOUND", "Operator not found for given id")
        return operator

    def _operator_by_id(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        operator = self._operator(int(params["operator_id"]))
        return Answer(200, self._operator_json(operator, **self._suggestion_flags(request)))

    def _airtime_operator_for(self, national: str) -> Operator | None:
        for operator in self._operators.values():
            if not (operator.bundle or operator.data) and national[:2] in operator.prefixes:
                return operator
        return None

    def _auto_detect(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        self._country(params["iso"])
        national = kh_national_number(urllib.parse.unquote(params["phone"]))
        operator = self._airtime_operator_for(national) if national else None
        if operator is None:
            raise _Refusal(404, "COULD_NOT_AUTO_DETECT_OPERATOR",
                           "Could not retrieve/auto-detect mobile number operator")
        return Answer(200, self._operator_json(operator, **self._suggestion_flags(request)))

    # -- top-ups -----------------------------------------------------------------------------

    def _parse_order(self, body: dict[str, Any]) -> _Order:
        for name in ("operatorId", "amount", "recipientPhone"):
            if body.get(name) is None:
                raise _invalid_input(f"Missing required field {name}", name, "must not be null")
        operator_id = _parse_int(body["operatorId"])
        if operator_id is None or operator_id <= 0:
            raise _invalid_input("Invalid operatorId provided", "operatorId",
                                 "must be a positive integer")
        amount = _parse_amount(body["amount"])
        if amount is None:
            raise _invalid_input("Invalid amount provided", "amount", "must be a positive number")
        use_local = body.get("useLocalAmount", False)
        if use_local is None:
            use_local = False
        if not isinstance(use_local, bool):
            raise _invalid_input("Invalid useLocalAmount provided", "useLocalAmount",
                                 "must be a boolean")
        reference = body.get("customIdentifier")
        if reference is not None and not isinstance(reference, str):
            raise _invalid_input("Invalid customIdentifier provided", "customIdentifier",
                                 "must be a string")
        if reference is not None and len(reference) > MAX_CUSTOM_IDENTIFIER:
            raise _invalid_input(
                f"Maximum length allowed for field customIdentifier is {MAX_CUSTOM_IDENTIFIER}",
                "customIdentifier", f"size must be at most {MAX_CUSTOM_IDENTIFIER}")
        recipient = body["recipientPhone"]
        if not isinstance(recipient, dict):
            raise _invalid_input("Invalid recipientPhone provided", "recipientPhone",
                                 "must be an object")
        for name in ("countryCode", "number"):
            if recipient.get(name) in (None, ""):
                raise _invalid_input(f"Missing required field recipientPhone.{name}",
                                     f"recipientPhone.{name}", "must not be blank")
        number = recipient["number"]
        if isinstance(number, int | Decimal) and not isinstance(number, bool):
            number = str(number)
        if not isinstance(number, str) or not isinstance(recipient["countryCode"], str):
            raise _invalid_input("Invalid recipientPhone provided", "recipientPhone",
                                 "number and countryCode must be strings")
        sender = body.get("senderPhone")
        sender_number = None
        if isinstance(sender, dict) and sender.get("number") is not None:
            sender_number = re.sub(r"\D", "", str(sender["number"])) or None
        return _Order(operator_id=operator_id, amount=amount, use_local_amount=use_local,
                      custom_identifier=reference or None,
                      country_code=recipient["countryCode"].strip().upper(), number=number,
                      sender_phone=sender_number)

    def _check_phone(self, operator: Operator, order: _Order) -> str:
        """The recipient as international digits, or the refusal."""
        national = kh_national_number(order.number) if order.country_code == operator.country \
            else None
        if national is None:
            raise _Refusal(400, "INVALID_RECIPIENT_PHONE", "Recipient phone number is not valid")
        if national[:2] not in operator.prefixes:
            raise _Refusal(400, "OPERATOR_AND_RECIPIENT_PHONE_MISMATCH",
                           "The recipient phone number does not belong to the given operator")
        return KH_DIAL_CODE + national

    def _price(self, operator: Operator, order: _Order) -> _Price:
        """The price of an order, or the refusal of its amount."""
        places = _currency_places(operator.destination_currency)
        if order.use_local_amount:
            if not operator.supports_local_amounts:
                raise _Refusal(400, "LOCAL_AMOUNTS_NOT_SUPPORTED_BY_OPERATOR",
                               "Local amounts are not supported by this operator")
            local = order.amount
            in_plan = (local in operator.local_fixed_amounts if operator.fixed else
                       operator.local_min_amount is not None
                       and operator.local_max_amount is not None
                       and operator.local_min_amount <= local <= operator.local_max_amount)
            if not in_plan or local != _round(local, places):
                raise _Refusal(400, "INVALID_LOCAL_AMOUNT_FOR_OPERATOR",
                               "The local amount is not valid for this operator")
            requested = _round(local / operator.fx_rate, LEDGER_PLACES)
            percent, delivered = operator.local_discount, local
        else:
            amount = order.amount
            in_plan = (amount in operator.fixed_amounts if operator.fixed else
                       operator.min_amount is not None and operator.max_amount is not None
                       and operator.min_amount <= amount <= operator.max_amount)
            if not in_plan:
                raise _Refusal(400, "INVALID_AMOUNT_FOR_OPERATOR",
                               "The amount is not valid for this operator")
            requested = amount
            percent, delivered = operator.international_discount, _round(
                amount * operator.fx_rate, places)
        # The debit is rounded (to the ledger's 5 decimals), the discount is what it leaves.
        cost = _round(requested * (100 - percent) / 100, LEDGER_PLACES)
        return _Price(requested=requested, discount=requested - cost, cost=cost,
                      delivered=delivered)

    def _recently_recharged(self, phone: str, order: _Order) -> bool:
        # Choice: a PROCESSING top-up counts too: the number is being recharged.
        now = self._now()
        for transaction in self._transactions:
            if (transaction.phone != phone or transaction.status in MONEY_BACK_STATUSES
                    or now - transaction.created_at >= RECHARGE_WAIT):
                continue
            racing = (self.duplicate_check_races and order.custom_identifier is not None
                      and transaction.custom_identifier == order.custom_identifier)
            if not racing:  # a racing twin passed this check before the first was written
                return True
        return False

    def _accept_order(self, request: LoggedRequest) -> _Transaction:
        """Every rule of POST /topups, then the debit. A refusal changes nothing."""
        order = self._parse_order(self._json_body(request))
        if (order.custom_identifier is not None and not self.duplicate_check_races
                and any(t.custom_identifier == order.custom_identifier
                        for t in self._transactions)):
            raise _Refusal(400, "CUSTOM_IDENTIFIER_ALREADY_USED",
                           "The custom identifier has already been used")
        operator = self._operator(order.operator_id)
        if operator.id in self._down:
            raise _Refusal(OPERATOR_DOWN_STATUS, "OPERATOR_UNAVAILABLE_OR_CURRENTLY_INACTIVE",
                           "The operator is currently unavailable or inactive")
        phone = self._check_phone(operator, order)
        price = self._price(operator, order)
        if self._recently_recharged(phone, order):
            raise _Refusal(400, "PHONE_RECENTLY_RECHARGED",
                           "The phone number was recharged less than 2 minutes ago")
        if self._balance < price.cost:
            raise _Refusal(400, "INSUFFICIENT_BALANCE",
                           "Your account balance is not sufficient for this top-up")
        return self._record(operator, order, phone, price)

    def _record(self, operator: Operator, order: _Order, phone: str,
                price: _Price) -> _Transaction:
        now = self._now()
        old_balance = self._balance
        self._balance -= price.cost
        self._balance_updated_at = now
        plan = self._plans.popleft() if self._plans else None
        transaction = _Transaction(
            id=next(self._ids), custom_identifier=order.custom_identifier, phone=phone,
            sender_phone=order.sender_phone, operator=operator,
            use_local_amount=order.use_local_amount, requested_amount=price.requested,
            requested_currency=self.currency, delivered_amount=price.delivered,
            discount=price.discount, cost=price.cost, created_at=now, old_balance=old_balance,
            new_balance=self._balance,
            status=Status.PROCESSING if plan else Status.SUCCESSFUL,
            settle_at=now + plan.after if plan else None,
            settle_to=plan.settle_to if plan else None)
        self._transactions.append(transaction)
        return transaction

    def _transaction_json(self, transaction: _Transaction, *,
                          balance_info: bool) -> dict[str, Any]:
        return {
            "transactionId": transaction.id, "status": transaction.status.value,
            "operatorTransactionId": None, "customIdentifier": transaction.custom_identifier,
            "recipientPhone": transaction.phone, "recipientEmail": None,
            "senderPhone": transaction.sender_phone, "countryCode": transaction.operator.country,
            "operatorId": transaction.operator.id, "operatorName": transaction.operator.name,
            "discount": _number(transaction.discount),
            "discountCurrencyCode": transaction.requested_currency,
            "requestedAmount": _number(transaction.requested_amount),
            "requestedAmountCurrencyCode": transaction.requested_currency,
            "deliveredAmount": _number(transaction.delivered_amount),
            "deliveredAmountCurrencyCode": transaction.operator.destination_currency,
            "transactionDate": _wire_time(transaction.created_at), "pinDetail": None,
            "balanceInfo": {
                "oldBalance": _number(transaction.old_balance),
                "newBalance": _number(transaction.new_balance),
                "currencyCode": self.currency,
                "currencyName": CURRENCY_NAMES.get(self.currency, self.currency),
                "updatedAt": _wire_time(transaction.created_at),
            } if balance_info else None,
        }

    def _topup(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        transaction = self._accept_order(request)
        return Answer(200, self._transaction_json(transaction, balance_info=True))

    def _topup_async(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        transaction = self._accept_order(request)
        return Answer(200, {"transactionId": transaction.id})

    def _topup_status(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        transaction = self._find(int(params["transaction_id"]))
        if transaction is None:
            raise _Refusal(404, "TRANSACTION_NOT_FOUND", "Transaction not found")
        failed = transaction.status is Status.FAILED
        # Choice: while PROCESSING the transaction is null, as clients report from the API.
        processing = transaction.status is Status.PROCESSING
        return Answer(200, {
            "code": "TOPUP_TRANSACTION_FAILED" if failed else None,
            "message": "The top-up failed at the operator" if failed else None,
            "status": transaction.status.value,
            "transaction": None if processing
            else self._transaction_json(transaction, balance_info=True)})

    # -- reports -----------------------------------------------------------------------------

    @staticmethod
    def _date_filter(request: LoggedRequest, name: str) -> datetime | None:
        value = _query(request, name)
        if value is None or value == "":
            return None
        try:
            return datetime.strptime(value, WIRE_TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise _invalid_input(f"Invalid {name}", name,
                                 "must be formatted yyyy-MM-dd HH:mm:ss") from None

    @staticmethod
    def _int_param(request: LoggedRequest, name: str, default: int) -> int:
        value = _query(request, name)
        if value is None or value == "":
            return default
        parsed = _parse_int(value)
        if parsed is None:
            raise _invalid_input(f"Invalid {name}", name, "must be an integer")
        return parsed

    def _report_matches(self, request: LoggedRequest) -> list[_Transaction]:
        reference = _query(request, "customIdentifier")
        country = _query(request, "countryCode")
        operator_name = _query(request, "operatorName")
        operator_id = self._int_param(request, "operatorId", 0) or None
        start = self._date_filter(request, "startDate")
        end = self._date_filter(request, "endDate")
        matches = []
        for t in self._transactions:
            moment = t.created_at.replace(microsecond=0)
            # Choice: a reference is searched case-insensitively, as clients report (it is
            # used exactly when checking for duplicates).
            if ((reference and (t.custom_identifier or "").lower() != reference.lower())
                    or (country and t.operator.country != country.upper())
                    or (operator_id and t.operator.id != operator_id)
                    or (operator_name and t.operator.name.lower() != operator_name.lower())
                    or (start and moment < start) or (end and moment > end)):
                continue
            matches.append(t)
        return matches

    def _report(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        # Choice: page is 1-based as documented ("Default value is 1"), below 1 reads page 1;
        # "number" is Spring's 0-based index (the SDK's fixture shows number 0 for the first
        # page); oldest first, as the SDK's fixture and clients' reports show.
        page = max(self._int_param(request, "page", 1), 1)
        size = self._int_param(request, "size", DEFAULT_PAGE_SIZE)
        if size < 1:
            raise _invalid_input("Invalid size", "size", "must be at least 1")
        size = min(size, MAX_PAGE_SIZE)
        matches = self._report_matches(request)
        total_pages = -(-len(matches) // size)
        chunk = matches[(page - 1) * size:page * size]
        sort = {"sorted": True, "unsorted": False, "empty": False}
        return Answer(200, {
            "content": [self._transaction_json(t, balance_info=False) for t in chunk],
            "pageable": {"sort": sort, "pageNumber": page - 1, "pageSize": size,
                         "offset": (page - 1) * size, "paged": True, "unpaged": False},
            "totalElements": len(matches), "totalPages": total_pages,
            "last": page >= total_pages, "first": page == 1, "sort": sort,
            "numberOfElements": len(chunk), "size": size, "number": page - 1,
            "empty": not chunk})

    def _report_one(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        transaction = self._find(int(params["transaction_id"]))
        if transaction is None:
            raise _Refusal(404, None, "Transaction not found")
        return Answer(200, self._transaction_json(transaction, balance_info=False))
