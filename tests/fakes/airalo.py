"""A fake of Airalo's Partner API v2 (eSIMs), on 127.0.0.1.

    with FakeAiralo(clock=clock.now) as fake:          # the adapter's base URL: fake.api_url
        fake.sell_out(PACKAGE_1GB)
        iccids = fake.make_sims(PACKAGE_3GB, 10_000)  # bought before: no request, no debit
        fake.faults.add(Fault.drop_after_processing(), path="/v2/orders", method="POST")

Written from Airalo's OpenAPI export of its apidog developer pages (paths, parameters, the
example bodies of every answer below), its "Rate limits" and "Error handling" pages, and the
official Python SDK (airalo-python-sdk: endpoints, the 1..50 quantity bounds, JSON bodies).

Endpoints (all under /v2; every one but /token needs ``Authorization: Bearer <token>``)
    POST /token                   form {client_id, client_secret, grant_type=client_credentials}
                                  -> {data: {token_type, expires_in, access_token}, meta}
    GET  /packages                ?filter[type]=local|global &filter[country]=KH
                                  &include=topup &limit &page -> {data: [country or region
                                  entries {slug, country_code, title, image, operators: [{...,
                                  packages: [...], countries: [...]}]}], links, meta}
    POST /orders                  form {quantity*, package_id*, type, description,
                                  brand_settings_name, to_email, sharing_option[],
                                  copy_address[]} -> {data: the order with sims[], meta}
    GET  /orders                  ?include=sims,user,status &filter[description|code|iccid|
                                  order_status|created_at] &limit &page; newest first
    GET  /orders/{id}             ?include=sims,user,status
    GET  /sims/{iccid}            ?include=order,order.status,order.user
    GET  /sims/{iccid}/usage      {remaining, total, expired_at, is_unlimited, status,
                                  remaining_voice, remaining_text, total_voice, total_text}
    GET  /sims/{iccid}/topups     the top-up packages of that eSIM's operator
    POST /orders/topups           form {package_id*, iccid*, description} -> the order, no sims
    GET  /balance                 {data: {balances: {name, availableBalance: {amount,
                                  currency}}}, meta}
    Not served: orders-async, future-orders, cancel-future-orders, voucher/*, refund,
    GET /sims (list), /sims/{iccid}/packages, /sims/{iccid}/instructions, PUT .../brand,
    compatible-devices, notifications/*, simulator/webhook, finance/exchange-rates.

Bodies: POST bodies may be multipart/form-data (what the docs show),
application/x-www-form-urlencoded or JSON (what the SDK sends); ``name[]`` keys are lists.
Strings are trimmed and "" counts as missing, as Laravel does. The SDK's ``airalo-signature``
header is accepted and not checked.

Errors, as documented:
  - validation: 422 ``{data: {<field>: <message>}, meta: {message: "the parameter is invalid"}}``,
    every failing field at once, with Laravel's messages ("The quantity may not be greater
    than 50.", "The selected package is invalid.", "The selected client id is invalid.",
    "SIM quantity is not available. Available quantity: N.", "invalid topup package");
  - business: 422 ``{code, reason}`` with the documented codes (``ErrorCode``): 11
    insufficient credit, 13 operator maintenance, 34 package out of stock, 73 recycled eSIM;
    ``business_error()`` builds any of them (33, 53, ...) for ``Fault.http_status``;
  - unknown ICCID / order: 404 ``{data: [], meta: {message: "messages.resource_not_found"}}``;
  - a known client id with a wrong secret: 401 ``{data: [], meta: {message: "Client
    authentication failed"}}``;
  - rate limits: 429 ``{message: "Too Many Attempts."}`` with ``Retry-After``,
    ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``; an allowed
    request carries the limit and what remains. Windows are fixed and start at their first
    request (Laravel's throttle), measured on the fake's clock.
Amounts are 2-decimal Decimals, written as JSON numbers, except where the docs' examples show
strings (GET /orders and GET /orders/{id}: ``price`` "9.50", ``validity`` "7"). Timestamps are
"YYYY-MM-DD HH:MM:SS", UTC. ``meta.message`` is copied from the docs' examples, typos included
("api.succes" for usage, "succes" for an eSIM): clients must not read it.

Choices where the sources disagree (marked "Choice:" in the code too):
  - token lifetime: the prose says 24 hours ("valid for a year" elsewhere; the example's
    expires_in is 31622400): ``token_lifetime`` defaults to 24 h;
  - rate limits, all constructor parameters (``RateLimit``; None turns one off):
    /token 3 a minute (the rate-limits page says 5: ``TOKEN_RATE_LIMIT_PAGE``), keyed for the
    whole fake (one caller IP); /packages 40 a minute (the endpoint's page; 80 elsewhere) for
    the partner account, every token sharing it; usage 10 a minute per ICCID (the endpoint's
    page says 100: ``USAGE_RATE_LIMIT_ENDPOINT_PAGE``; the rate-limits page 1 per 15 minutes:
    ``USAGE_RATE_LIMIT_PAGE``) and 5 a second for the account over all ICCIDs;
  - filter[description] (and filter[code], filter[iccid]) is the documented SQL LIKE
    '%value%': case-insensitive, a contained match, and ``%``/``_`` in the value are wildcards.
    An adapter looking up its reference must compare ``description`` exactly itself;
  - GET /orders and /orders/{id} give ``sims``, ``user`` and ``status`` only when ``include``
    names them; top-up orders are listed too (type "topup", sims = the eSIM topped up);
  - price and net_price of an order are per eSIM (every example has quantity 1); the account
    is debited net_price x quantity;
  - the docs' prose says pages >= 2 of /packages may come as an object keyed by index while
    their example is a list: a list, unless ``keyed_pages=True``;
  - an unknown client id is the documented 422, a wrong secret the documented 401.

Invented (Airalo publishes none of it):
  - the catalogue: the operator names and ids, package ids (``cambodia-7days-1gb``...;
    Airalo's own are operator slugs), prices, coverages, images; only USD in ``prices``;
  - ICCIDs: 19 digits, 89444654 + a serial + a Luhn digit; matching ids 5 groups of 5;
    SM-DP+ ``lpa.airalo.com``; qrcode_url on the host ``qr.fake-airalo.invalid``;
  - 401 for a missing, unknown or expired token: Laravel's ``{message: "Unauthenticated."}``
    (the 429 body shows framework errors come unwrapped); a request whose Accept does not ask
    for JSON gets its 401 and validation 422s as Laravel's 302 redirect instead;
  - which rule is checked first; the message of a quantity that is not an integer, a too
    long description (255), an unknown brand, e-mail fields, a bad filter or limit < 1;
  - the default page size (Laravel's 15; Airalo documents none);
  - eSIM life: NOT_ACTIVE (expired_at null) until ``install()``; then ACTIVE with
    expired_at = installation + validity days; FINISHED when the data is used up
    (``drain()``); EXPIRED once the clock reaches expired_at (before FINISHED);
    RECYCLED after ``recycle()`` (the documented body). UNKNOWN is never given. Unlimited
    eSIMs report total and remaining 0 (amount is 0 for unlimited packages, as documented);
  - a top-up adds its data and its days (to expired_at once installed, to the validity
    counted at installation before); an expired eSIM lists no top-ups ({data: []}, the
    documented empty answer) and refuses one with code 43; a recycled one gives code 73;
  - sold-out packages leave the /packages listing (the docs say out-of-stock ones are
    excluded) and are refused with code 34; a limited stock refuses more than remains with the
    documented "SIM quantity is not available" message; code 33 is never given by itself.
"""

from __future__ import annotations

import enum
import http
import itertools
import json
import math
import re
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import tornado.httputil

from tests.fakes.http import (
    Answer,
    BearerTokens,
    FakeHttpServer,
    LoggedRequest,
    Route,
    TokenState,
)

# -- protocol constants ---------------------------------------------------------------------

API_PREFIX = "/v2"
DEFAULT_CLIENT_ID = "airalo-test-client"
DEFAULT_CLIENT_SECRET = "airalo-test-secret"
GRANT_TYPE = "client_credentials"
WIRE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TOKEN_LIFETIME = timedelta(hours=24)
DEFAULT_BALANCE = Decimal("1000.00")
CURRENCY = "USD"
SMDP_ADDRESS = "lpa.airalo.com"
DEFAULT_BRAND = "Topup Bot"
MAX_QUANTITY = 50
MAX_DESCRIPTION = 255
DEFAULT_PAGE_SIZE = 15
ICCID_PREFIX = "89444654"
INSTALLATION_GUIDE = "https://www.airalo.com/help/getting-started-with-airalo"
APPLE_INSTALL_URL = "https://esimsetup.apple.com/esim_qrcode_provisioning?carddata="
INVALID_PARAMETER = "the parameter is invalid"
NOT_FOUND_MESSAGE = "messages.resource_not_found"
TOO_MANY = "Too Many Attempts."
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` requests in a fixed window of ``period`` opened by the first one."""

    limit: int
    period: timedelta


TOKEN_RATE_LIMIT = RateLimit(3, timedelta(minutes=1))
TOKEN_RATE_LIMIT_PAGE = RateLimit(5, timedelta(minutes=1))  # the "Rate limits" page
PACKAGES_RATE_LIMIT = RateLimit(40, timedelta(minutes=1))
USAGE_RATE_LIMIT = RateLimit(10, timedelta(minutes=1))  # per ICCID
USAGE_RATE_LIMIT_ENDPOINT_PAGE = RateLimit(100, timedelta(minutes=1))
USAGE_RATE_LIMIT_PAGE = RateLimit(1, timedelta(minutes=15))
USAGE_COMPANY_RATE_LIMIT = RateLimit(5, timedelta(seconds=1))  # all ICCIDs of the account


class ErrorCode(enum.IntEnum):
    """The documented business error codes (HTTP 422, body ``{code, reason}``)."""

    INSUFFICIENT_CREDIT = 11
    OPERATOR_MAINTENANCE = 13
    INVALID_CHECKSUM = 14
    TOPUP_DISABLED = 23
    INSUFFICIENT_STOCK = 33
    PACKAGE_UNAVAILABLE = 34
    BAD_REQUEST = 43
    UNEXPECTED = 53
    RECYCLED = 73


REASONS: Mapping[ErrorCode, str] = {
    ErrorCode.INSUFFICIENT_CREDIT: "Insufficient Airalo Credit: {additional}",
    ErrorCode.OPERATOR_MAINTENANCE:
        "The requested operator is currently undergoing maintenance. Please try again later.",
    ErrorCode.INVALID_CHECKSUM: "Invalid checksum: {additional}",
    ErrorCode.TOPUP_DISABLED: "The requested top-up has been disabled by the operator. "
                              "{additional}",
    ErrorCode.INSUFFICIENT_STOCK: "Insufficient stock of eSIMs remaining: {additional}. "
                                  "Please try your request again later.",
    ErrorCode.PACKAGE_UNAVAILABLE: "The requested eSIM package is invalid or it is currently "
                                   "out of stock. Please try again later.",
    ErrorCode.BAD_REQUEST: "Bad request. {additional} Please check your input and try again.",
    ErrorCode.UNEXPECTED: "Something unexpected happened. We're working to resolve the issue. "
                          "Please try again later.",
    ErrorCode.RECYCLED: "The eSIM with iccid {additional} has been recycled. It can no longer "
                        "be used or topped up.",
}


def business_error(code: int, additional: str = "") -> dict[str, Any]:
    """The body of a documented business refusal, e.g. for ``Fault.http_status(422, ...)``."""
    reason = REASONS[ErrorCode(code)].format(additional=additional)
    return {"code": int(code), "reason": re.sub(r"\s+", " ", reason).strip()}


class SimStatus(enum.StrEnum):
    NOT_ACTIVE = "NOT_ACTIVE"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    UNKNOWN = "UNKNOWN"
    EXPIRED = "EXPIRED"
    RECYCLED = "RECYCLED"


# -- the seeded catalogue (invented) ----------------------------------------------------------

KOUPREY_ID = 2101  # Cambodia, fixed data
KOUPREY_UNLIMITED_ID = 2102  # Cambodia, unlimited (Airalo lists those as another operator)
SIAM_ID = 2201  # Thailand
SAIGON_ID = 2301  # Vietnam
ASIALINK_ID = 2901  # the Asia region, Cambodia included

PACKAGE_1GB = "cambodia-7days-1gb"
PACKAGE_3GB = "cambodia-15days-3gb"
PACKAGE_5GB = "cambodia-30days-5gb"
PACKAGE_10GB = "cambodia-30days-10gb"
PACKAGE_UNLIMITED = "cambodia-10days-unlimited"
TOPUP_1GB = "cambodia-7days-1gb-topup"
TOPUP_3GB = "cambodia-15days-3gb-topup"
TOPUP_5GB = "cambodia-30days-5gb-topup"
THAILAND_1GB = "thailand-7days-1gb"
VIETNAM_1GB = "vietnam-7days-1gb"
ASIA_1GB = "asialink-7days-1gb"
ASIA_5GB = "asialink-30days-5gb"
ASIA_TOPUP_1GB = "asialink-7days-1gb-topup"

ASIA_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("KH", "Cambodia"), ("TH", "Thailand"), ("VN", "Vietnam"), ("LA", "Laos"),
    ("MY", "Malaysia"), ("SG", "Singapore"), ("ID", "Indonesia"), ("PH", "Philippines"))


@dataclass(frozen=True)
class Operator:
    id: int
    title: str
    type: str  # local | global
    slug: str  # the entry it is listed under: a country ("cambodia") or a region ("asia")
    entry_title: str
    country_code: str  # "" for global and regional entries, as documented
    countries: tuple[tuple[str, str], ...]
    networks: tuple[tuple[str, str], ...]  # (network, "4G" | "LTE" | "5G"), in every country
    rechargeable: bool = True
    apn_value: str = "internet"


@dataclass(frozen=True)
class Package:
    id: str
    operator_id: int
    type: str  # sim | topup
    price: Decimal  # recommended retail, USD
    net_price: Decimal  # what the partner pays, USD
    amount: int  # MB; 0 for unlimited
    day: int
    unlimited: bool = False

    @property
    def data(self) -> str:
        return "Unlimited" if self.unlimited else f"{self.amount // 1024} GB"

    @property
    def title(self) -> str:
        return f"{self.data} - {self.day} Days"


SEED_OPERATORS: tuple[Operator, ...] = (
    Operator(KOUPREY_ID, "Kouprey Mobile", "local", "cambodia", "Cambodia", "KH",
             (("KH", "Cambodia"),), (("Smart", "4G"), ("Cellcard", "LTE"))),
    Operator(KOUPREY_UNLIMITED_ID, "Kouprey Mobile", "local", "cambodia", "Cambodia", "KH",
             (("KH", "Cambodia"),), (("Smart", "4G"),), rechargeable=False),
    Operator(SIAM_ID, "Siam Link", "local", "thailand", "Thailand", "TH",
             (("TH", "Thailand"),), (("AIS", "5G"), ("dtac", "LTE"))),
    Operator(SAIGON_ID, "Saigon Link", "local", "vietnam", "Vietnam", "VN",
             (("VN", "Vietnam"),), (("Viettel", "4G"),)),
    Operator(ASIALINK_ID, "Asialink", "global", "asia", "Asia", "", ASIA_COUNTRIES,
             (("Partner networks", "LTE"),), apn_value="globaldata"),
)


def _pkg(package_id: str, operator_id: int, type_: str, price: str, net: str, amount: int,
         day: int, unlimited: bool = False) -> Package:
    return Package(package_id, operator_id, type_, Decimal(price), Decimal(net), amount, day,
                   unlimited)


SEED_PACKAGES: tuple[Package, ...] = (
    _pkg(PACKAGE_1GB, KOUPREY_ID, "sim", "5.00", "2.50", 1024, 7),
    _pkg(TOPUP_1GB, KOUPREY_ID, "topup", "5.00", "2.50", 1024, 7),
    _pkg(PACKAGE_3GB, KOUPREY_ID, "sim", "9.00", "4.80", 3072, 15),
    _pkg(TOPUP_3GB, KOUPREY_ID, "topup", "9.00", "4.80", 3072, 15),
    _pkg(PACKAGE_5GB, KOUPREY_ID, "sim", "13.00", "7.20", 5120, 30),
    _pkg(TOPUP_5GB, KOUPREY_ID, "topup", "13.00", "7.20", 5120, 30),
    _pkg(PACKAGE_10GB, KOUPREY_ID, "sim", "20.00", "12.00", 10240, 30),
    _pkg(PACKAGE_UNLIMITED, KOUPREY_UNLIMITED_ID, "sim", "27.00", "18.50", 0, 10, True),
    _pkg(THAILAND_1GB, SIAM_ID, "sim", "4.50", "1.40", 1024, 7),
    _pkg(VIETNAM_1GB, SAIGON_ID, "sim", "4.50", "1.30", 1024, 7),
    _pkg(ASIA_1GB, ASIALINK_ID, "sim", "5.00", "1.70", 1024, 7),
    _pkg(ASIA_TOPUP_1GB, ASIALINK_ID, "topup", "5.00", "1.70", 1024, 7),
    _pkg(ASIA_5GB, ASIALINK_ID, "sim", "20.00", "7.50", 5120, 30),
)

PARTNER_USER: Mapping[str, Any] = {
    "id": 120, "created_at": "2026-01-05 08:00:00", "name": "Topup Bot", "email":
    "partner@fake-airalo.invalid", "mobile": None, "address": None, "state": None, "city": None,
    "postal_code": None, "country_id": None, "company": "Topup Bot Test"}
COMPLETED = {"name": "Completed", "slug": "completed"}


# -- records for tests ----------------------------------------------------------------------

@dataclass(frozen=True)
class OrderRecord:
    """What a test reads back about one accepted order (a snapshot)."""

    id: int
    code: str
    type: str  # sim | topup
    package_id: str
    quantity: int
    description: str | None
    price: Decimal  # per eSIM, retail
    net_price: Decimal  # per eSIM
    cost: Decimal  # what the account was debited: net_price x quantity
    created_at: datetime
    iccids: tuple[str, ...]  # the eSIMs made, or the one topped up


@dataclass(frozen=True)
class SimRecord:
    iccid: str
    order_id: int
    package_id: str
    operator_id: int
    status: SimStatus
    unlimited: bool
    total_mb: int
    remaining_mb: int
    installed_at: datetime | None
    expired_at: datetime | None
    recycled: bool
    topups: tuple[str, ...]  # package ids, in order
    matching_id: str
    qrcode: str  # the LPA string an install QR holds


@dataclass
class _Sim:
    id: int
    iccid: str
    matching_id: str
    signature: str
    order_id: int
    operator: Operator
    package: Package
    created_at: datetime
    total_mb: int
    validity_days: int  # counted from installation
    brand: str | None
    used_mb: int = 0
    installed_at: datetime | None = None
    expired_at: datetime | None = None
    recycled_at: datetime | None = None
    topups: list[str] = field(default_factory=list)

    def status(self, now: datetime) -> SimStatus:
        if self.recycled_at is not None:
            return SimStatus.RECYCLED
        if self.installed_at is None or self.expired_at is None:
            return SimStatus.NOT_ACTIVE
        if now >= self.expired_at:
            return SimStatus.EXPIRED
        if not self.package.unlimited and self.used_mb >= self.total_mb:
            return SimStatus.FINISHED
        return SimStatus.ACTIVE

    @property
    def remaining_mb(self) -> int:
        return 0 if self.package.unlimited else max(self.total_mb - self.used_mb, 0)

    @property
    def qrcode(self) -> str:
        return f"LPA:1${SMDP_ADDRESS}${self.matching_id}"

    def record(self, now: datetime) -> SimRecord:
        return SimRecord(
            iccid=self.iccid, order_id=self.order_id, package_id=self.package.id,
            operator_id=self.operator.id, status=self.status(now),
            unlimited=self.package.unlimited,
            total_mb=0 if self.package.unlimited else self.total_mb,
            remaining_mb=self.remaining_mb, installed_at=self.installed_at,
            expired_at=self.expired_at, recycled=self.recycled_at is not None,
            topups=tuple(self.topups), matching_id=self.matching_id, qrcode=self.qrcode)


@dataclass
class _Order:
    id: int
    type: str
    package: Package
    operator: Operator
    quantity: int
    description: str | None
    brand: str | None
    created_at: datetime
    sims: list[_Sim]

    @property
    def code(self) -> str:
        return f"{self.created_at:%Y%m%d}-{self.id:06d}"

    def record(self) -> OrderRecord:
        return OrderRecord(
            id=self.id, code=self.code, type=self.type, package_id=self.package.id,
            quantity=self.quantity, description=self.description, price=self.package.price,
            net_price=self.package.net_price, cost=self.package.net_price * self.quantity,
            created_at=self.created_at, iccids=tuple(s.iccid for s in self.sims))


@dataclass
class _Window:
    started: datetime
    hits: int = 0


class _Refusal(Exception):
    """Raised inside a handler; becomes Airalo's answer."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None, *,
                 redirects: bool = False) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.redirects = redirects  # Laravel redirects a client that does not ask for JSON


def _invalid(errors: Mapping[str, str]) -> _Refusal:
    return _Refusal(422, {"data": dict(errors), "meta": {"message": INVALID_PARAMETER}},
                    redirects=True)


def _business(code: ErrorCode, additional: str = "") -> _Refusal:
    return _Refusal(422, business_error(code, additional))


def _not_found() -> _Refusal:
    return _Refusal(404, {"data": [], "meta": {"message": NOT_FOUND_MESSAGE}})


_Limits = Callable[[LoggedRequest, dict[str, str]], list[tuple[str, RateLimit | None]]]


# -- small pure helpers -----------------------------------------------------------------------

def _wire_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime(WIRE_TIME_FORMAT)


def _number(value: Decimal) -> float:
    """A JSON number for the wire; the fake computes with Decimal only."""
    return float(value)


def _money_text(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def _luhn_digit(payload: str) -> str:
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and _luhn_digit(number[:-1]) == number[-1]


def _like(pattern_value: str, text: str | None) -> bool:
    """SQL ``text LIKE '%value%'``, case-insensitively: ``%`` and ``_`` stay wildcards."""
    if text is None:
        return False
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern_value]
    return re.search("".join(parts), text, re.IGNORECASE | re.DOTALL) is not None


_INTEGER = re.compile(r"[+-]?\d+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _text(value: Any) -> str | None:
    """A form value as Laravel sees it after TrimStrings and ConvertEmptyStringsToNull."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _query(request: LoggedRequest, name: str) -> str | None:
    values = request.query.get(name)
    if not values:
        return None
    return values[-1].strip() or None


def _includes(request: LoggedRequest) -> set[str]:
    return {part.strip() for part in (_query(request, "include") or "").split(",")
            if part.strip()}


def _wants_json(request: LoggedRequest) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "/json" in accept or "+json" in accept


def _html(title: str, body: str) -> str:
    return f"<p><b>eSIM name:</b> {title}</p>{body}"


def _manual_installation(operator: Operator) -> str:
    return _html(operator.title, "<p><b>To install it by hand:</b></p><ol><li>Settings &gt; "
                 "Mobile &gt; Add eSIM.</li><li>Type the SM-DP+ address and the activation "
                 "code.</li><li>Name the eSIM.</li></ol><p><b>Data:</b> turn on data "
                 "roaming.</p>")


def _qr_installation(operator: Operator) -> str:
    return _html(operator.title, "<p><b>To install it from the QR code:</b></p><ol><li>"
                 "Settings &gt; Mobile &gt; Add eSIM.</li><li>Scan the QR code shown on "
                 "another screen.</li><li>Name the eSIM.</li></ol><p><b>Data:</b> turn on "
                 "data roaming.</p>")


def _image(name: str, width: int = 132, height: int = 99) -> dict[str, Any]:
    return {"width": width, "height": height,
            "url": f"https://images.fake-airalo.invalid/{name}.png"}


# -- the fake ---------------------------------------------------------------------------------

class FakeAiralo(FakeHttpServer):
    """Airalo's Partner API v2 at ``api_url`` (``base_url`` + "/v2").

    State (tokens, balance, stock, orders, eSIMs, rate-limit windows) is shared with the server
    thread and changed under ``self.lock``. eSIM status is computed from the fake's clock
    whenever it is read.
    """

    name = "fake-airalo"

    def __init__(self, *, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str = DEFAULT_CLIENT_SECRET,
                 clock: Callable[[], datetime] | None = None,
                 token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
                 balance: Decimal = DEFAULT_BALANCE,
                 brands: Iterable[str] = (DEFAULT_BRAND,),
                 token_rate_limit: RateLimit | None = TOKEN_RATE_LIMIT,
                 packages_rate_limit: RateLimit | None = PACKAGES_RATE_LIMIT,
                 usage_rate_limit: RateLimit | None = USAGE_RATE_LIMIT,
                 usage_company_rate_limit: RateLimit | None = USAGE_COMPANY_RATE_LIMIT,
                 keyed_pages: bool = False) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.brands = frozenset(brands)
        self.token_rate_limit = token_rate_limit
        self.packages_rate_limit = packages_rate_limit
        self.usage_rate_limit = usage_rate_limit
        self.usage_company_rate_limit = usage_company_rate_limit
        self.keyed_pages = keyed_pages
        self._clock = clock or (lambda: datetime.now(UTC))
        self._balance = Decimal(balance)
        self._tokens = BearerTokens(length=48)
        self._operators = {op.id: op for op in SEED_OPERATORS}
        self._packages = {p.id: p for p in SEED_PACKAGES}
        self._stock: dict[str, int] = {}  # absent: unlimited
        self._maintenance: set[int] = set()
        self._orders: list[_Order] = []
        self._sims: dict[str, _Sim] = {}
        self._matching_ids: set[str] = set()
        self._windows: dict[str, _Window] = {}
        self._order_ids = itertools.count(300_001)
        self._sim_ids = itertools.count(700_001)
        self._serials = itertools.count(300_001)

    # -- controls for tests ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def credentials(self) -> dict[str, str]:
        """The form fields of a good token request but grant_type."""
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    @property
    def issued_tokens(self) -> int:
        with self.lock:
            return len(self._tokens)

    def expire_tokens(self) -> None:
        """Every token issued so far answers 401 from now on."""
        with self.lock:
            self._tokens.revoke_all()

    @property
    def balance(self) -> Decimal:
        with self.lock:
            return self._balance

    def set_balance(self, balance: Decimal) -> None:
        with self.lock:
            self._balance = Decimal(balance)

    @property
    def orders(self) -> list[OrderRecord]:
        """Accepted orders, sims and top-ups, oldest first (refusals leave nothing)."""
        with self.lock:
            return [order.record() for order in self._orders]

    def orders_with_description(self, description: str) -> list[OrderRecord]:
        """Orders whose description is exactly this, oldest first."""
        return [order for order in self.orders if order.description == description]

    def sim(self, iccid: str) -> SimRecord:
        with self.lock:
            return self._sim(iccid).record(self._now())

    def sims(self) -> list[SimRecord]:
        with self.lock:
            now = self._now()
            return [sim.record(now) for sim in self._sims.values()]

    def packages(self) -> list[Package]:
        with self.lock:
            return list(self._packages.values())

    def install(self, iccid: str) -> None:
        """The user installs the eSIM: ACTIVE, validity counted from now."""
        with self.lock:
            sim = self._sim(iccid)
            if sim.recycled_at is not None or sim.installed_at is not None:
                raise ValueError(f"{iccid} cannot be installed: {sim.status(self._now())}")
            sim.installed_at = self._now()
            sim.expired_at = sim.installed_at + timedelta(days=sim.validity_days)

    def drain(self, iccid: str, mb: int) -> None:
        """The user spends ``mb`` of data; at 0 left the eSIM is FINISHED."""
        if mb < 0:
            raise ValueError("mb must not be negative")
        with self.lock:
            sim = self._sim(iccid)
            if sim.package.unlimited:
                raise ValueError("an unlimited eSIM has no data to drain")
            if sim.status(self._now()) is not SimStatus.ACTIVE:
                raise ValueError(f"{iccid} is {sim.status(self._now())}, not ACTIVE")
            sim.used_mb = min(sim.used_mb + mb, sim.total_mb)

    def recycle(self, iccid: str) -> None:
        """Airalo recycles the eSIM: usage says RECYCLED, top-ups are refused (code 73)."""
        with self.lock:
            self._sim(iccid).recycled_at = self._now()

    def sell_out(self, package_id: str) -> None:
        self.set_stock(package_id, 0)

    def set_stock(self, package_id: str, quantity: int | None) -> None:
        """eSIMs left for a package; None: unlimited (the default), 0: sold out."""
        with self.lock:
            if package_id not in self._packages:
                raise KeyError(package_id)
            if quantity is None:
                self._stock.pop(package_id, None)
            else:
                self._stock[package_id] = quantity

    def set_maintenance(self, operator_id: int, on: bool = True) -> None:
        """Orders and top-ups of this operator's packages get code 13."""
        with self.lock:
            if operator_id not in self._operators:
                raise KeyError(operator_id)
            if on:
                self._maintenance.add(operator_id)
            else:
                self._maintenance.discard(operator_id)

    def make_sims(self, package_id: str, count: int, *, installed: bool = True) -> list[str]:
        """``count`` eSIMs of a sim package made straight in the fake's state, as orders of
        at most ``MAX_QUANTITY`` (no description), without an HTTP request and without
        touching the balance or the stock: eSIMs the partner bought before, for benchmarks
        and tests that need many. ``installed``: ACTIVE from now, as ``install()`` does.
        Their ICCIDs, in order."""
        if count < 0:
            raise ValueError("count must not be negative")
        with self.lock:
            package = self._packages[package_id]
            if package.type != "sim":
                raise ValueError(f"{package_id} is a {package.type} package, not a sim one")
            operator = self._operators[package.operator_id]
            now = self._now()
            made: list[str] = []
            while len(made) < count:
                order_id = next(self._order_ids)
                sims = [self._new_sim(order_id, package, operator, now, None)
                        for _ in range(min(MAX_QUANTITY, count - len(made)))]
                if installed:
                    for sim in sims:
                        sim.installed_at = now
                        sim.expired_at = now + timedelta(days=sim.validity_days)
                self._orders.append(_Order(
                    id=order_id, type="sim", package=package, operator=operator,
                    quantity=len(sims), description=None, brand=None, created_at=now,
                    sims=sims))
                made.extend(sim.iccid for sim in sims)
            return made

    # -- the base's hooks --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        v2 = re.escape(API_PREFIX)
        api = self._api
        return [
            ("POST", f"{v2}/token", self._token),
            ("GET", f"{v2}/packages", api(self._packages_list, self._packages_limits)),
            ("POST", f"{v2}/orders", api(self._order)),
            ("GET", f"{v2}/orders", api(self._orders_list)),
            ("POST", f"{v2}/orders/topups", api(self._topup_order)),
            ("GET", rf"{v2}/orders/(?P<order_id>\d+)", api(self._order_one)),
            ("GET", rf"{v2}/sims/(?P<iccid>[^/]+)", api(self._sim_one)),
            ("GET", rf"{v2}/sims/(?P<iccid>[^/]+)/usage", api(self._usage, self._usage_limits)),
            ("GET", rf"{v2}/sims/(?P<iccid>[^/]+)/topups", api(self._sim_topups)),
            ("GET", f"{v2}/balance", api(self._get_balance)),
        ]

    def error_answer(self, status: int, request: LoggedRequest) -> Answer:
        """Laravel's production bodies: unknown paths, wrong methods, injected statuses."""
        messages = {401: "Unauthenticated.", 429: TOO_MANY, 500: "Server Error"}
        message = messages.get(status) or http.HTTPStatus(status).phrase
        return Answer(status, {"message": message})

    # -- plumbing ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _sim(self, iccid: str) -> _Sim:
        sim = self._sims.get(iccid)
        if sim is None:
            raise KeyError(iccid)
        return sim

    def _refused(self, request: LoggedRequest, refusal: _Refusal) -> Answer:
        if refusal.redirects and not _wants_json(request):
            return Answer(302, "", {"Location": self.base_url + "/"})
        return Answer(refusal.status, refusal.body, refusal.headers)

    def _api(self, handler: Route, limits: _Limits | None = None) -> Route:
        """Wrap an API handler: bearer token, then rate limits, then the handler."""
        def guarded(request: LoggedRequest, params: dict[str, str]) -> Answer:
            with self.lock:
                try:
                    self._authorize(request)
                    headers = self._throttle(limits(request, params)) if limits else {}
                    answer = handler(request, params)
                except _Refusal as refusal:
                    return self._refused(request, refusal)
            return Answer(answer.status, answer.body, {**headers, **answer.headers})
        return guarded

    def _authorize(self, request: LoggedRequest) -> None:
        state = self._tokens.check(request.headers.get("authorization", ""), self._now())
        if state is not TokenState.VALID:
            raise _Refusal(401, {"message": "Unauthenticated."}, redirects=True)

    def _throttle(self, rules: list[tuple[str, RateLimit | None]]) -> dict[str, str]:
        """Count a request against every rule; 429 if one is spent (nothing is counted)."""
        now = self._now()
        active: list[tuple[_Window, RateLimit]] = []
        for key, rule in rules:
            if rule is None:
                continue
            window = self._windows.get(key)
            if window is None or now >= window.started + rule.period:
                window = self._windows[key] = _Window(started=now)
            active.append((window, rule))
        for window, rule in active:
            if window.hits >= rule.limit:
                reset_at = window.started + rule.period
                wait = max(math.ceil((reset_at - now).total_seconds()), 1)
                raise _Refusal(429, {"message": TOO_MANY}, {
                    "Retry-After": str(wait), "X-RateLimit-Limit": str(rule.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(math.ceil(reset_at.timestamp()))})
        for window, _ in active:
            window.hits += 1
        if not active:
            return {}
        window, rule = active[0]
        return {"X-RateLimit-Limit": str(rule.limit),
                "X-RateLimit-Remaining": str(rule.limit - window.hits)}

    def _packages_limits(self, request: LoggedRequest,
                         params: dict[str, str]) -> list[tuple[str, RateLimit | None]]:
        return [("packages", self.packages_rate_limit)]

    def _usage_limits(self, request: LoggedRequest,
                      params: dict[str, str]) -> list[tuple[str, RateLimit | None]]:
        return [(f"usage:{params['iccid']}", self.usage_rate_limit),
                ("usage:company", self.usage_company_rate_limit)]

    @staticmethod
    def _form(request: LoggedRequest) -> dict[str, Any]:
        """The body's fields: multipart, urlencoded or JSON; ``name[]`` keys are lists."""
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        if media == "application/json":
            try:
                body = json.loads(request.body or b"null")
            except (ValueError, UnicodeDecodeError):
                return {}
            return body if isinstance(body, dict) else {}
        if media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return {}
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[tornado.httputil.HTTPFile]] = {}
        tornado.httputil.parse_body_arguments(content_type, request.body, arguments, files)
        fields: dict[str, Any] = {}
        for key, raw in arguments.items():
            values = [v.decode("utf-8", "replace") for v in raw]
            if key.endswith("[]"):
                fields[key[:-2]] = values
            else:
                fields[key] = values[-1]
        return fields

    def _pages(self, request: LoggedRequest, items: list[Any]) -> tuple[list[Any], int, int]:
        """The chunk of ``items`` for limit/page, the page and the limit (or the 422)."""
        errors: dict[str, str] = {}
        raw_limit, raw_page = _query(request, "limit"), _query(request, "page")
        limit, page = DEFAULT_PAGE_SIZE, 1
        if raw_limit is not None:
            if not _INTEGER.fullmatch(raw_limit):
                errors["limit"] = "The limit must be an integer."
            elif int(raw_limit) < 1:
                errors["limit"] = "The limit must be at least 1."
            else:
                limit = int(raw_limit)
        if raw_page is not None:
            if not _INTEGER.fullmatch(raw_page):
                errors["page"] = "The page must be an integer."
            else:
                page = max(int(raw_page), 1)  # the paginator reads a page below 1 as 1
        if errors:
            raise _invalid(errors)
        return items[(page - 1) * limit:page * limit], page, limit

    def _paginated(self, request: LoggedRequest, items: list[Any], chunk: list[Any] | Any,
                   page: int, limit: int) -> dict[str, Any]:
        total = len(items)
        last_page = max(1, -(-total // limit))
        offset = (page - 1) * limit
        count = len(chunk)
        pairs = [(k, v) for k, vs in request.query.items() if k != "page" for v in vs]
        path = self.base_url + request.path

        def url(n: int) -> str:
            return f"{path}?{urllib.parse.urlencode([*pairs, ('page', str(n))])}"

        raw_limit = _query(request, "limit")
        return {
            "data": chunk,
            "links": {"first": url(1), "last": url(last_page),
                      "prev": url(page - 1) if page > 1 else None,
                      "next": url(page + 1) if page < last_page else None},
            "meta": {"message": "success", "current_page": page,
                     "from": offset + 1 if count else None, "last_page": last_page,
                     "path": path,
                     # Choice: per_page echoes the query's string, as the examples show.
                     "per_page": raw_limit if raw_limit is not None else limit,
                     "to": offset + count if count else None, "total": total}}

    # -- auth --------------------------------------------------------------------------------

    def _token(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        with self.lock:
            try:
                headers = self._throttle([("token", self.token_rate_limit)])
                form = self._form(request)
                values = {name: _text(form.get(name))
                          for name in ("client_id", "client_secret", "grant_type")}
                errors = {name: f"The {name.replace('_', ' ')} field is required."
                          for name, value in values.items() if value is None}
                if values["grant_type"] is not None and values["grant_type"] != GRANT_TYPE:
                    errors["grant_type"] = "The selected grant type is invalid."
                client_id = values["client_id"]
                if client_id is not None and not secrets.compare_digest(
                        client_id.encode(), self.client_id.encode()):
                    errors["client_id"] = "The selected client id is invalid."
                if errors:
                    raise _invalid(errors)
                secret = values["client_secret"] or ""
                if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
                    raise _Refusal(401, {"data": [],
                                         "meta": {"message": "Client authentication failed"}})
            except _Refusal as refusal:
                return self._refused(request, refusal)
            value = self._tokens.issue(self._now(), self.token_lifetime)
        return Answer(200, {"data": {"token_type": "Bearer",
                                     "expires_in": int(self.token_lifetime.total_seconds()),
                                     "access_token": value},
                            "meta": {"message": "success"}}, headers)

    # -- packages ----------------------------------------------------------------------------

    def _listed(self, package: Package, include_topups: bool) -> bool:
        if package.type == "topup" and not include_topups:
            return False
        return self._stock.get(package.id) != 0  # sold-out packages leave the listing

    def _package_json(self, package: Package, operator: Operator) -> dict[str, Any]:
        return {
            "id": package.id, "type": package.type, "price": _number(package.price),
            "amount": package.amount, "day": package.day, "is_unlimited": package.unlimited,
            "title": package.title,
            "short_info": "This eSIM doesn't come with a phone number.",
            "qr_installation": _qr_installation(operator),
            "manual_installation": _manual_installation(operator),
            "is_fair_usage_policy": False, "fair_usage_policy": None, "data": package.data,
            "voice": None, "text": None, "net_price": _number(package.net_price),
            "prices": {"net_price": {CURRENCY: _number(package.net_price)},
                       "recommended_retail_price": {CURRENCY: _number(package.price)}},
        }

    @staticmethod
    def _apn(operator: Operator) -> dict[str, Any]:
        return {"ios": {"apn_type": "automatic", "apn_value": operator.apn_value},
                "android": {"apn_type": "manual", "apn_value": operator.apn_value}}

    def _operator_json(self, operator: Operator, packages: list[Package]) -> dict[str, Any]:
        return {
            "id": operator.id, "style": "light", "gradient_start": "#0f1b3f",
            "gradient_end": "#194281", "type": operator.type, "is_prepaid": False,
            "title": operator.title, "esim_type": "Prepaid", "warning": None,
            "apn_type": "manual", "apn_value": operator.apn_value, "is_roaming": True,
            "info": ["4G Data-only eSIM."], "image": _image(f"operator-{operator.id}", 1035, 653),
            "plan_type": "data", "activation_policy": "first-usage", "is_kyc_verify": False,
            "rechargeability": operator.rechargeable, "other_info": None,
            "coverages": [{"name": code, "code": code,
                           "networks": [{"name": n, "types": [t]} for n, t in operator.networks]}
                          for code, _ in operator.countries],
            "install_window_days": None, "topup_grace_window_days": None,
            "apn": self._apn(operator),
            "packages": [self._package_json(p, operator) for p in packages],
            "countries": [{"country_code": code, "title": title, "image": _image(code.lower())}
                          for code, title in operator.countries],
        }

    def _packages_list(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        kind = _query(request, "filter[type]")
        if kind is not None and kind not in ("local", "global"):
            raise _invalid({"filter.type": "The selected filter.type is invalid."})
        country = (_query(request, "filter[country]") or "").upper() or None
        include_topups = "topup" in _includes(request)
        entries: dict[str, dict[str, Any]] = {}
        for operator in self._operators.values():
            if kind is not None and operator.type != kind:
                continue
            # Choice: filter[country] keeps a local entry of that country and a regional one
            # covering it.
            if country is not None and country not in {c for c, _ in operator.countries}:
                continue
            packages = [p for p in self._packages.values() if p.operator_id == operator.id
                        and self._listed(p, include_topups)]
            if not packages:
                continue
            entry = entries.setdefault(operator.slug, {
                "slug": operator.slug, "country_code": operator.country_code,
                "title": operator.entry_title, "image": _image(operator.slug), "operators": []})
            entry["operators"].append(self._operator_json(operator, packages))
        items = list(entries.values())
        chunk, page, limit = self._pages(request, items)
        data: list[Any] | dict[str, Any] = chunk
        if self.keyed_pages and page >= 2:
            offset = (page - 1) * limit
            data = {str(offset + n): entry for n, entry in enumerate(chunk)}
        return Answer(200, self._paginated(request, items, data, page, limit))

    # -- orders ------------------------------------------------------------------------------

    def _new_sim(self, order_id: int, package: Package, operator: Operator, now: datetime,
                 brand: str | None) -> _Sim:
        payload = f"{ICCID_PREFIX}{next(self._serials):010d}"
        matching_id = ""
        while not matching_id or matching_id in self._matching_ids:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            matching_id = "-".join("".join(secrets.choice(alphabet) for _ in range(5))
                                   for _ in range(5))
        self._matching_ids.add(matching_id)
        sim = _Sim(id=next(self._sim_ids), iccid=payload + _luhn_digit(payload),
                   matching_id=matching_id, signature=secrets.token_hex(32), order_id=order_id,
                   operator=operator, package=package, created_at=now,
                   total_mb=package.amount, validity_days=package.day, brand=brand)
        self._sims[sim.iccid] = sim
        return sim

    def _sim_json(self, sim: _Sim) -> dict[str, Any]:
        expires = int((sim.created_at + timedelta(days=365)).timestamp())
        return {
            "id": sim.id, "created_at": _wire_time(sim.created_at), "iccid": sim.iccid,
            "lpa": SMDP_ADDRESS, "imsis": None, "matching_id": sim.matching_id,
            "qrcode": sim.qrcode,
            "qrcode_url": f"https://qr.fake-airalo.invalid/qr?expires={expires}&id={sim.id}"
                          f"&signature={sim.signature}",
            "direct_apple_installation_url": APPLE_INSTALL_URL + sim.qrcode,
            "voucher_code": None, "airalo_code": None, "apn_type": "manual",
            "apn_value": sim.operator.apn_value, "is_roaming": True, "confirmation_code": None,
            "apn": self._apn(sim.operator), "msisdn": None,
        }

    @staticmethod
    def _package_name(order: _Order) -> str:
        return f"{order.operator.title}-{order.package.title}"

    def _created_order_json(self, order: _Order) -> dict[str, Any]:
        """The order as POST /orders and POST /orders/topups answer it: numbers."""
        sim_order = order.type == "sim"
        body: dict[str, Any] = {
            "id": order.id, "code": order.code, "currency": CURRENCY,
            "package_id": order.package.id, "quantity": order.quantity, "type": order.type,
            "description": order.description, "esim_type": "Prepaid",
            "validity": order.package.day, "package": self._package_name(order),
            "data": order.package.data, "price": _number(order.package.price),
            "created_at": _wire_time(order.created_at),
            "manual_installation": _manual_installation(order.operator) if sim_order else "",
            "qrcode_installation": _qr_installation(order.operator) if sim_order else "",
            "installation_guides": {"en": INSTALLATION_GUIDE}, "text": None, "voice": None,
            "net_price": _number(order.package.net_price),
        }
        if sim_order:
            body["brand_settings_name"] = order.brand
            body["sims"] = [self._sim_json(sim) for sim in order.sims]
        return body

    def _listed_order_json(self, order: _Order, includes: set[str]) -> dict[str, Any]:
        """The order as GET /orders and GET /orders/{id} show it: strings, as documented."""
        sim_order = order.type == "sim"
        body: dict[str, Any] = {
            "id": order.id, "created_at": _wire_time(order.created_at), "code": order.code,
            "description": order.description, "type": order.type,
            "package_id": order.package.id, "quantity": order.quantity,
            "package": self._package_name(order), "esim_type": "Prepaid",
            "validity": str(order.package.day), "price": _money_text(order.package.price),
            "data": order.package.data, "currency": CURRENCY,
            "manual_installation": _manual_installation(order.operator) if sim_order else "",
            "qrcode_installation": _qr_installation(order.operator) if sim_order else "",
            "installation_guides": {"en": INSTALLATION_GUIDE},
        }
        if "sims" in includes:
            body["sims"] = [self._sim_json(sim) for sim in order.sims]
        if "user" in includes:
            body["user"] = dict(PARTNER_USER)
        if "status" in includes:
            body["status"] = dict(COMPLETED)
        return body

    def _parse_order(self, form: dict[str, Any]) -> tuple[Package, int, str | None, str | None]:
        errors: dict[str, str] = {}
        quantity_text = _text(form.get("quantity"))
        quantity = 0
        if quantity_text is None:
            errors["quantity"] = "The quantity field is required."
        elif not _INTEGER.fullmatch(quantity_text):
            errors["quantity"] = "The quantity must be an integer."
        else:
            quantity = int(quantity_text)
            if quantity < 1:
                errors["quantity"] = "The quantity must be at least 1."
            elif quantity > MAX_QUANTITY:
                errors["quantity"] = f"The quantity may not be greater than {MAX_QUANTITY}."
        package_id = _text(form.get("package_id"))
        package = self._packages.get(package_id or "")
        if package_id is None:
            errors["package_id"] = "The package id field is required."
        elif package is None or package.type != "sim":
            errors["package_id"] = "The selected package is invalid."
        order_type = _text(form.get("type"))
        if order_type is not None and order_type != "sim":
            errors["type"] = "The selected type is invalid."
        description = self._description(form, errors)
        brand = _text(form.get("brand_settings_name"))
        if brand is not None and brand not in self.brands:
            errors["brand_settings_name"] = "Brand settings name doesn't exist."
        self._check_sharing(form, errors)
        if errors or package is None:
            raise _invalid(errors)
        return package, quantity, description, brand

    @staticmethod
    def _description(form: dict[str, Any], errors: dict[str, str]) -> str | None:
        raw = form.get("description")
        if raw is not None and not isinstance(raw, str | int | float):
            errors["description"] = "The description must be a string."
            return None
        description = _text(raw)
        if description is not None and len(description) > MAX_DESCRIPTION:
            errors["description"] = (f"The description may not be greater than "
                                     f"{MAX_DESCRIPTION} characters.")
        return description

    @staticmethod
    def _check_sharing(form: dict[str, Any], errors: dict[str, str]) -> None:
        to_email = _text(form.get("to_email"))
        options = form.get("sharing_option")
        options = [options] if isinstance(options, str) else options or []
        copies = form.get("copy_address")
        copies = [copies] if isinstance(copies, str) else copies or []
        if to_email is None:
            return
        if not _EMAIL.fullmatch(to_email):
            errors["to_email"] = "The to email must be a valid email address."
        if not options:
            errors["sharing_option"] = ("The sharing option field is required when to email "
                                        "is present.")
        elif not set(options) <= {"link", "pdf"}:
            errors["sharing_option"] = "The selected sharing option is invalid."
        if any(not isinstance(c, str) or not _EMAIL.fullmatch(c.strip()) for c in copies):
            errors["copy_address"] = "The copy address must be a valid email address."

    def _check_business(self, package: Package, quantity: int) -> None:
        """Maintenance, stock, then credit. A refusal changes nothing."""
        if package.operator_id in self._maintenance:
            raise _business(ErrorCode.OPERATOR_MAINTENANCE)
        stock = self._stock.get(package.id)
        if stock == 0:
            raise _business(ErrorCode.PACKAGE_UNAVAILABLE)
        if stock is not None and stock < quantity:
            raise _invalid({"quantity": f"SIM quantity is not available. Available quantity: "
                                        f"{stock}."})
        cost = package.net_price * quantity
        if self._balance < cost:
            raise _business(ErrorCode.INSUFFICIENT_CREDIT,
                            f"the order costs {_money_text(cost)} {CURRENCY}, the balance is "
                            f"{_money_text(self._balance)} {CURRENCY}")

    def _debit(self, package: Package, quantity: int) -> None:
        self._balance -= package.net_price * quantity
        if package.id in self._stock:
            self._stock[package.id] -= quantity

    def _order(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        package, quantity, description, brand = self._parse_order(self._form(request))
        self._check_business(package, quantity)
        self._debit(package, quantity)
        now = self._now()
        operator = self._operators[package.operator_id]
        order_id = next(self._order_ids)
        sims = [self._new_sim(order_id, package, operator, now, brand) for _ in range(quantity)]
        order = _Order(id=order_id, type="sim", package=package, operator=operator,
                       quantity=quantity, description=description, brand=brand,
                       created_at=now, sims=sims)
        self._orders.append(order)
        return Answer(200, {"data": self._created_order_json(order),
                            "meta": {"message": "success"}})

    @staticmethod
    def _created_between(value: str) -> tuple[date, date]:
        first, sep, last = value.partition(" - ")
        try:
            start = date.fromisoformat(first.strip())
            end = date.fromisoformat(last.strip()) if sep else start
        except ValueError:
            raise _invalid({"filter.created_at":
                            "The filter.created_at does not match the format Y-m-d - Y-m-d."},
                           ) from None
        return start, end

    def _orders_list(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        description = _query(request, "filter[description]")
        code = _query(request, "filter[code]")
        iccid = _query(request, "filter[iccid]")
        status = _query(request, "filter[order_status]")
        created = _query(request, "filter[created_at]")
        between = self._created_between(created) if created else None
        matches = []
        for order in reversed(self._orders):  # newest first
            day = order.created_at.date()
            if ((description is not None and not _like(description, order.description))
                    or (code is not None and not _like(code, order.code))
                    or (iccid is not None
                        and not any(_like(iccid, sim.iccid) for sim in order.sims))
                    or (status is not None and status.lower() != "completed")
                    or (between is not None and not between[0] <= day <= between[1])):
                continue
            matches.append(order)
        chunk, page, limit = self._pages(request, matches)
        includes = _includes(request)
        data = [self._listed_order_json(order, includes) for order in chunk]
        return Answer(200, self._paginated(request, matches, data, page, limit))

    def _order_one(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        order_id = int(params["order_id"])
        for order in self._orders:
            if order.id == order_id:
                return Answer(200, {"data": self._listed_order_json(order, _includes(request)),
                                    "meta": {"message": "success"}})
        raise _not_found()

    # -- eSIMs -------------------------------------------------------------------------------

    def _known_sim(self, iccid: str) -> _Sim:
        sim = self._sims.get(urllib.parse.unquote(iccid))
        if sim is None:
            raise _not_found()
        return sim

    def _sim_one(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        sim = self._known_sim(params["iccid"])
        includes = _includes(request)
        body = self._sim_json(sim)
        body.update({"order": None, "brand_settings_name": sim.brand,
                     "recycled": sim.recycled_at is not None,
                     "recycled_at": _wire_time(sim.recycled_at)})
        if "order" in includes:
            order = next(o for o in self._orders if o.id == sim.order_id)
            simable = self._listed_order_json(order, set())
            if "order.status" in includes:
                simable["status"] = dict(COMPLETED)
            if "order.user" in includes:
                simable["user"] = dict(PARTNER_USER)
            body["simable"] = simable
        return Answer(200, {"data": body, "meta": {"message": "succes"}})  # (sic)

    def _usage(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        sim = self._known_sim(params["iccid"])
        status = sim.status(self._now())
        zeros = {"remaining_voice": 0, "remaining_text": 0, "total_voice": 0, "total_text": 0}
        if status is SimStatus.RECYCLED:
            data: dict[str, Any] = {"remaining": 0, "total": 0, "expired_at": None,
                                    "is_unlimited": None, "status": status.value, **zeros}
        else:
            unlimited = sim.package.unlimited
            data = {"remaining": sim.remaining_mb, "total": 0 if unlimited else sim.total_mb,
                    "expired_at": _wire_time(sim.expired_at), "is_unlimited": unlimited,
                    "status": status.value, **zeros}
        return Answer(200, {"data": data, "meta": {"message": "api.succes"}})  # (sic)

    def _topups_for(self, sim: _Sim) -> list[Package]:
        return [p for p in self._packages.values() if p.type == "topup"
                and p.operator_id == sim.operator.id and self._stock.get(p.id) != 0]

    def _sim_topups(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        sim = self._known_sim(params["iccid"])
        status = sim.status(self._now())
        if status is SimStatus.RECYCLED:
            raise _business(ErrorCode.RECYCLED, sim.iccid)
        if status is SimStatus.EXPIRED or not sim.operator.rechargeable:
            return Answer(200, {"data": []})
        return Answer(200, {"data": [{
            "id": p.id, "type": p.type, "price": _number(p.price),
            "net_price": _number(p.net_price), "amount": p.amount, "day": p.day,
            "is_unlimited": p.unlimited, "title": p.title, "data": p.data,
            "short_info": "This eSIM doesn't come with a phone number.", "voice": None,
            "text": None} for p in self._topups_for(sim)]})

    def _topup_order(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        form = self._form(request)
        errors: dict[str, str] = {}
        package_id = _text(form.get("package_id"))
        iccid = _text(form.get("iccid"))
        if package_id is None:
            errors["package_id"] = "The package id field is required."
        if iccid is None:
            errors["iccid"] = "The iccid field is required."
        description = self._description(form, errors)
        sim = self._sims.get(iccid or "")
        if iccid is not None and sim is None:
            errors["iccid"] = "The selected iccid is invalid."
        if errors or sim is None:
            raise _invalid(errors)
        now = self._now()
        status = sim.status(now)
        if status is SimStatus.RECYCLED:
            raise _business(ErrorCode.RECYCLED, sim.iccid)
        package = self._packages.get(package_id or "")
        if (package is None or package.type != "topup" or package.operator_id != sim.operator.id
                or not sim.operator.rechargeable):
            raise _invalid({"package_id": "invalid topup package"})
        if status is SimStatus.EXPIRED:
            raise _business(ErrorCode.BAD_REQUEST,
                            f"The eSIM with iccid {sim.iccid} has expired.")
        self._check_business(package, 1)
        self._debit(package, 1)
        sim.total_mb += package.amount
        if sim.expired_at is None:
            sim.validity_days += package.day
        else:
            sim.expired_at += timedelta(days=package.day)
        sim.topups.append(package.id)
        order = _Order(id=next(self._order_ids), type="topup", package=package,
                       operator=sim.operator, quantity=1, description=description, brand=None,
                       created_at=now, sims=[sim])
        self._orders.append(order)
        return Answer(200, {"data": self._created_order_json(order),
                            "meta": {"message": "success"}})

    # -- balance -----------------------------------------------------------------------------

    def _get_balance(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
        return Answer(200, {"data": {"balances": {
            "name": "balance",
            "availableBalance": {"amount": _number(self._balance), "currency": CURRENCY}}},
            "meta": {"message": "success"}})
