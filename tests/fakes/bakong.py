"""A fake of the Bakong Open API's payment checks (National Bank of Cambodia), on 127.0.0.1.

    with FakeBakong(clock=clock.now, token="dev-token") as fake:  # the adapter: fake.api_url
        paid = fake.pay(payload)                      # a bank app paid the KHQR: now visible
        fake.pay(other, amount=Decimal("4.88"), at=clock.now() + timedelta(minutes=20))
        fake.fail(third)                              # a failed transfer: errorCode 3
        fake.rate_limit = (10, 60)                    # 10 requests a minute, then 429
        fake.faults.add(Fault.http_status(504), path="/v1/check_transaction_by_md5")

Written from the facts the project gathered (the Open API's endpoint list and response
envelope, the errorCode table of a TypeScript client's comments), the PyPI package
``bakong-khqr`` 0.6.5 (``khqr.py``: check_payment, get_payment, check_bulk_payments and the
HTTP errors it names: 401 token, 403 "only accepts requests from Cambodia IP addresses", 429,
504 "busy"), the PHP SDK ``bakong-khqr-php``'s live tests (an md5 list of unknown hashes
comes back with every item ``status: "NOT_FOUND"``) and ``helmab/bakong``'s README (list items
``{md5, status: SUCCESS | NOT_FOUND | STATIC_QR, message, data}``).

Endpoints (base URL production https://api-bakong.nbc.gov.kh; ``api_url`` here), both POST,
JSON in and out, ``Authorization: Bearer <developer token>`` (what bakong-khqr sends, with
``Content-Type: application/json``; the fake does not check Content-Type):

    POST /v1/check_transaction_by_md5        body {"md5": "<32 lowercase hex>"}
      paid       200 {responseCode: 0, responseMessage: "Getting transaction successfully.",
                      errorCode: null, data: TRANSACTION}
      not found  200 {responseCode: 1, responseMessage: "Transaction could not be found.
                      Please check and try again.", errorCode: 1, data: null}
      failed     200 {responseCode: 1, responseMessage: "Transaction failed.", errorCode: 3,
                      data: null}
      static QR  200 {responseCode: 1, responseMessage: "Sorry, the system does not support
                      static QR code.", errorCode: 2, data: null}
    POST /v1/check_transaction_by_md5_list   body ["<md5>", ...] (1 to 50 of them)
      200 {responseCode: 0, responseMessage: "Getting transaction successfully.",
           errorCode: null, data: [ITEM, ...]}, one ITEM per md5 asked, in the order asked
           (a repeated md5 is answered each time):
           {md5, status: "SUCCESS", message: "Getting transaction successfully.",
            data: TRANSACTION} when paid, else {md5, status, message, data: null} with
           status "NOT_FOUND" (message as the single check's), "FAILED" ("Transaction
           failed.") or "STATIC_QR" (the static-QR message).

    TRANSACTION = {hash: 64 hex, fromAccountId: the payer, toAccountId: the QR's Bakong account
    id, currency: "USD" | "KHR", amount: JSON number (USD with cents: 5.0, 4.88; KHR whole
    riel: 20500), description, createdDateMs, acknowledgedDateMs (ms since the epoch),
    trackingStatus, receiverBank, receiverBankAccount, instructionRef, externalRef}.

Refusals (the envelope ``{responseCode: 1, responseMessage, errorCode, data: null}`` always):
  - checked in this order: the 403 switch, the rate limit (429), the token (401), the body;
  - ``refuse_foreign_ip = True``: 403 to every request (errorCode null);
  - ``rate_limit = (requests, per_seconds)``: a sliding window, on the fake's clock, over the
    requests to the two endpoints past the 403 switch (401s and 400s count; a 429, an
    injected status, an unknown path do not); one over it gets 429 with ``Retry-After``
    (whole seconds until the window has room, at least 1);
  - a missing, unknown, expired or revoked token: 401, errorCode 6 "Unauthorized.";
  - a body that is not JSON, not an object with a string ``md5`` (single check), not a JSON
    array (list check), an empty list or one of more than 50, or an md5 that is not 32
    lowercase hex digits: HTTP ``bad_request_status`` (400 unless a test sets it, e.g. to 200),
    errorCode 5 "Missing required fields.", and nothing is looked up (one bad md5 refuses the
    whole list);
  - faults from the base: ``faults`` (any status, 504 "busy" included, drop or delay after
    processing) and ``latency_seconds``; an injected status, an unknown path (404) and a
    wrong method (405) answer the same envelope with errorCode null.

Choices where the sources are silent (the adapter should not depend on them):
  - HTTP 400 for errorCode 5 (the API's list of HTTP codes has 400; bakong-khqr returns the
    envelope of any status that carries a responseCode, so it reads 200 and 400 alike);
  - unpaid items of a list check are present with status NOT_FOUND (the PHP SDK's test says
    so), not left out; FAILED and every message of an item are the fake's; the list's
    envelope is responseCode 0 whenever the request was valid, even if nothing was paid;
  - the bodies of 401/403/429/5xx (Bakong's gateway may well answer them without the
    envelope: clients should read the status only); whether Bakong sends ``Retry-After`` on
    429 is not confirmed;
  - md5s must be lowercase (as the facts give them); an uppercase one is refused, not
    looked up; an empty list is refused too;
  - a static QR's md5 answers errorCode 2 at HTTP 200 (list status STATIC_QR, a status
    helmab/bakong names); when Bakong really gives errorCode 2 is not known;
  - the CRC must be uppercase hex (the facts' format; bakong-khqr-php's check accepts either
    case: the fake is stricter);
  - the token: any string; by default a JWT-like one (header.payload.signature, base64url,
    the payload's ``exp`` the expiry) good for 90 days from the fake's start on its clock.
    ``renew_token()`` issues another (the old one stays good until its own expiry, as the
    fake cannot know whether Bakong revokes it); ``expire_token()`` revokes one;
  - description "" unless ``pay(description=...)``; trackingStatus, receiverBank,
    receiverBankAccount and instructionRef null; externalRef "100FT" + 11 digits (invented);
    acknowledgedDateMs = createdDateMs.

Paying (what a bank app does; no request, straight into the fake's state):
  - ``pay(payload)`` parses the KHQR with the fake's own TLV parser (``parse_khqr``; it does
    not use the bot's code, on purpose) and refuses, raising ``InvalidKhqr``, one that is not
    TLV, does not start with 000201, has no tag 53 (116 KHR / 840 USD) or no Bakong account id
    (tag 29 or 30, sub-tag 00), has a malformed amount (KHR with decimals, USD with more than
    cents) or whose tag 63 is not the last or is not the CRC-16/CCITT-FALSE of everything
    before it and "6304", in 4 uppercase hex digits;
  - the md5 is hashlib.md5(payload, UTF-8) in lowercase hex; the transaction gets a new random
    hash and the QR's amount and currency unless ``amount``/``currency`` override them (a payer
    who paid something else); ``at`` (default now) is createdDateMs and the transaction is
    invisible to the endpoints while the clock is before it;
  - a payment after the QR's expiry (tag 99 sub-tag 01) is recorded and answered like any
    other (the money arrived); ``BakongTransaction.late`` says it was late;
  - paying the same md5 again records another transaction, but the endpoints go on answering
    the first one (the earliest ``at`` of those visible, the first recorded on a tie): Bakong's
    lookup by md5 finds one transaction. ``fail()`` counts as one too: a QR that failed first
    stays failed for the endpoints, whatever comes after;
  - a static QR (point of initiation 11, or no amount) can be paid only with ``amount=``; the
    endpoints answer it errorCode 2 / STATIC_QR.

Counters for tests and benchmarks come from the base's request log (every request that
reached the fake, refused and faulted ones included): ``calls(path)`` and ``md5s_asked()``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import http
import itertools
import json
import math
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.fakes.http import (
    Answer,
    BearerTokens,
    FakeHttpServer,
    LoggedRequest,
    Route,
    TokenState,
    _Token,
)

# -- protocol constants ---------------------------------------------------------------------

CHECK_MD5 = "/v1/check_transaction_by_md5"
CHECK_MD5_LIST = "/v1/check_transaction_by_md5_list"
MAX_MD5_LIST = 50
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
DEFAULT_PAYER = "customer@aclb"

FOUND_MESSAGE = "Getting transaction successfully."
NOT_FOUND_MESSAGE = "Transaction could not be found. Please check and try again."
STATIC_QR_MESSAGE = "Sorry, the system does not support static QR code."
FAILED_MESSAGE = "Transaction failed."
MISSING_FIELDS_MESSAGE = "Missing required fields."
UNAUTHORIZED_MESSAGE = "Unauthorized."
TOO_MANY_MESSAGE = "Too many requests. Please wait a while before trying again."
FORBIDDEN_MESSAGE = "Forbidden: requests are only accepted from Cambodia."
BUSY_MESSAGE = "Bakong server is busy, please try again later."

CURRENCIES = {"116": "KHR", "840": "USD"}
_MD5 = re.compile(r"[0-9a-f]{32}")
_TWO_DIGITS = re.compile(r"[0-9]{2}")
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MS = re.compile(r"[0-9]{1,15}")
_CENT = Decimal("0.01")


class ErrorCode(enum.IntEnum):
    """Bakong's errorCode values (a TypeScript client's table); 11 and 12 belong to
    check_bakong_account, which the fake does not serve."""

    NOT_FOUND = 1
    STATIC_QR = 2
    FAILED = 3
    MISSING_FIELDS = 5
    UNAUTHORIZED = 6
    ACCOUNT_NOT_FOUND = 11
    ACCOUNT_INVALID = 12


class ItemStatus(enum.StrEnum):
    """The status of one item of a list check (only SUCCESS means paid)."""

    SUCCESS = "SUCCESS"
    NOT_FOUND = "NOT_FOUND"
    FAILED = "FAILED"  # Choice: the fake's name for a failed transaction
    STATIC_QR = "STATIC_QR"


def envelope(response_code: int, message: str, error_code: int | None,
             data: Any = None) -> dict[str, Any]:
    return {"responseCode": response_code, "responseMessage": message,
            "errorCode": None if error_code is None else int(error_code), "data": data}


# -- KHQR, parsed by the fake itself ----------------------------------------------------------

class InvalidKhqr(ValueError):
    """A payload a bank app would not pay."""


def khqr_crc(text: str) -> str:
    """CRC-16/CCITT-FALSE of ``text`` (everything up to and including "6304")."""
    return f"{binascii.crc_hqx(text.encode('utf-8'), 0xFFFF):04X}"


def parse_tlv(text: str) -> list[tuple[str, str]]:
    """EMVCo tag-length-value fields: a 2-digit tag, a 2-digit length, that many characters."""
    fields: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        tag, length = text[index:index + 2], text[index + 2:index + 4]
        if not (_TWO_DIGITS.fullmatch(tag) and _TWO_DIGITS.fullmatch(length)):
            raise InvalidKhqr(f"no tag and length at {index}: {text[index:index + 4]!r}")
        size = int(length)
        value = text[index + 4:index + 4 + size]
        if len(value) != size:
            raise InvalidKhqr(f"tag {tag} says {size} characters, {len(value)} are left")
        fields.append((tag, value))
        index += 4 + size
    return fields


def _unique(fields: list[tuple[str, str]], where: str) -> dict[str, str]:
    tags = [tag for tag, _ in fields]
    repeated = sorted({tag for tag in tags if tags.count(tag) > 1})
    if repeated:
        raise InvalidKhqr(f"{where}: tag(s) {', '.join(repeated)} repeated")
    return dict(fields)


def _from_ms(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not _MS.fullmatch(value):
        raise InvalidKhqr(f"{what} is not milliseconds: {value!r}")
    return datetime.fromtimestamp(int(value) / 1000, UTC)


@dataclass(frozen=True)
class Khqr:
    """What the fake read in a KHQR payload."""

    payload: str
    md5: str
    account_id: str  # tag 29 or 30, sub-tag 00
    merchant_account: bool  # tag 30 (a merchant) rather than 29 (an individual)
    currency: str  # USD | KHR
    amount: Decimal | None  # None: a static QR
    static: bool  # point of initiation 11, or no amount
    merchant_name: str | None  # tag 59
    bill_number: str | None  # tag 62, sub-tag 01
    created_at: datetime | None  # tag 99, sub-tag 00
    expires_at: datetime | None  # tag 99, sub-tag 01


def _amount(text: str, currency: str) -> Decimal:
    if not _AMOUNT.fullmatch(text):
        raise InvalidKhqr(f"tag 54 is not an amount: {text!r}")
    value = Decimal(text)
    if value <= 0:
        raise InvalidKhqr(f"tag 54 is not positive: {text!r}")
    if currency == "KHR" and value != value.to_integral_value():
        raise InvalidKhqr(f"a KHR amount has no decimals: {text!r}")
    if currency == "USD" and value != value.quantize(_CENT):
        raise InvalidKhqr(f"a USD amount has at most cents: {text!r}")
    return value


def md5_hex(payload: str) -> str:
    """The handle Bakong looks a KHQR's payment up by (an identifier, not a security hash)."""
    return hashlib.md5(payload.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_khqr(payload: str) -> Khqr:
    """The fake's own reading of a KHQR string; raises ``InvalidKhqr``."""
    fields = parse_tlv(payload)
    if not fields or fields[0] != ("00", "01"):
        raise InvalidKhqr("the payload does not start with 000201")
    if fields[-1][0] != "63" or len(fields[-1][1]) != 4:
        raise InvalidKhqr("tag 63 (4 characters) is not the last one")
    expected = khqr_crc(payload[:-4])
    if fields[-1][1] != expected:
        raise InvalidKhqr(f"CRC {fields[-1][1]!r} is wrong: {expected!r} expected")
    tags = _unique(fields, "the payload")
    account_tag = "30" if "30" in tags else "29"
    if account_tag not in tags:
        raise InvalidKhqr("no merchant account information (tag 29 or 30)")
    account = _unique(parse_tlv(tags[account_tag]), f"tag {account_tag}")
    account_id = account.get("00")
    if not account_id:
        raise InvalidKhqr(f"tag {account_tag} has no Bakong account id (sub-tag 00)")
    currency = CURRENCIES.get(tags.get("53", ""))
    if currency is None:
        raise InvalidKhqr(f"tag 53 is not 116 or 840: {tags.get('53')!r}")
    amount = _amount(tags["54"], currency) if "54" in tags else None
    additional = _unique(parse_tlv(tags.get("62", "")), "tag 62")
    stamps = _unique(parse_tlv(tags.get("99", "")), "tag 99")
    return Khqr(
        payload=payload, md5=md5_hex(payload),
        account_id=account_id, merchant_account=account_tag == "30", currency=currency,
        amount=amount, static=tags.get("01") == "11" or amount is None,
        merchant_name=tags.get("59"), bill_number=additional.get("01"),
        created_at=_from_ms(stamps.get("00"), "tag 99 sub-tag 00"),
        expires_at=_from_ms(stamps.get("01"), "tag 99 sub-tag 01"))


# -- records ----------------------------------------------------------------------------------

def _ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000)


def wire_amount(amount: Decimal, currency: str) -> int | float:
    """The JSON number Bakong gives: whole riel, or dollars with cents."""
    return int(amount) if currency == "KHR" else float(amount.quantize(_CENT))


@dataclass(frozen=True)
class BakongTransaction:
    """One transfer a bank app made against a KHQR (a snapshot)."""

    md5: str
    hash: str  # 64 hex
    succeeded: bool  # False: recorded by fail()
    from_account_id: str
    to_account_id: str
    currency: str
    amount: Decimal
    description: str
    created_at: datetime  # when the endpoints start to see it
    acknowledged_at: datetime
    external_ref: str
    qr: Khqr

    @property
    def late(self) -> bool:
        """Paid at or after the QR's expiry."""
        return self.qr.expires_at is not None and self.created_at >= self.qr.expires_at

    def wire(self) -> dict[str, Any]:
        """The ``data`` object of a paid answer."""
        return {
            "hash": self.hash, "fromAccountId": self.from_account_id,
            "toAccountId": self.to_account_id, "currency": self.currency,
            "amount": wire_amount(self.amount, self.currency), "description": self.description,
            "createdDateMs": _ms(self.created_at), "acknowledgedDateMs": _ms(self.acknowledged_at),
            "trackingStatus": None, "receiverBank": None, "receiverBankAccount": None,
            "instructionRef": None, "externalRef": self.external_ref}


class _DeveloperTokens(BearerTokens):
    """The base's bearer tokens, plus a value chosen by the test and revoking one of them."""

    def register(self, value: str, expires_at: datetime) -> None:
        self._tokens[value] = _Token(expires_at=expires_at)

    def revoke(self, value: str) -> None:
        self._tokens[value].revoked = True

    def expiry(self, value: str) -> datetime:
        return self._tokens[value].expires_at


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like_token(issued_at: datetime, expires_at: datetime) -> str:
    """A token shaped like Bakong's developer tokens (an HS256 JWT; the signature is random)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"data": {"id": secrets.token_hex(8)}, "iat": int(issued_at.timestamp()),
              "exp": int(expires_at.timestamp())}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"


class _Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.answer = Answer(status, body, headers or {})


# -- the fake ---------------------------------------------------------------------------------

class FakeBakong(FakeHttpServer):
    """Bakong's md5 payment checks at ``api_url`` (the paths start with /v1).

    State (tokens, transactions, the rate-limit window, the switches) is shared with the
    server thread and changed under ``self.lock``.
    """

    name = "fake-bakong"

    def __init__(self, *, clock: Callable[[], datetime] | None = None,
                 token: str | None = None,
                 token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
                 rate_limit: tuple[int, float] | None = None,
                 bad_request_status: int = 400) -> None:
        super().__init__()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.token_lifetime = token_lifetime
        self.rate_limit = rate_limit  # (requests, per seconds); None: no limit
        self.refuse_foreign_ip = False  # True: 403 to every request
        self.bad_request_status = bad_request_status  # the HTTP status of errorCode 5
        self._tokens = _DeveloperTokens()
        self._transactions: dict[str, list[BakongTransaction]] = {}
        self._window: deque[datetime] = deque()
        self._refs = itertools.count(1)
        self.token = self._issue(token)

    # -- controls for tests ------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What the adapter's BAKONG_API_URL should be (it adds /v1/...)."""
        return self.base_url

    @property
    def authorization(self) -> dict[str, str]:
        """The header of a good request."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def token_expires_at(self) -> datetime:
        with self.lock:
            return self._tokens.expiry(self.token)

    def renew_token(self, lifetime: timedelta | None = None) -> str:
        """A new current token (from now, ``token_lifetime`` unless told); the old one stays
        good until its own expiry."""
        with self.lock:
            self.token = self._issue(None, lifetime)
            return self.token

    def expire_token(self, token: str | None = None) -> None:
        """The current token (or this one) answers 401 from now on."""
        with self.lock:
            self._tokens.revoke(self.token if token is None else token)

    def pay(self, payload: str, *, amount: Decimal | int | str | None = None,
            currency: str | None = None, from_account: str = DEFAULT_PAYER,
            at: datetime | None = None, status: str = "SUCCESS",
            description: str = "") -> BakongTransaction:
        """A bank app pays the KHQR: a transaction keyed by the payload's md5, visible to the
        endpoints from ``at`` (default now). ``amount``/``currency``: what the payer really
        sent, if not the QR's. ``status`` "FAILED" is ``fail()``. Raises ``InvalidKhqr``."""
        if status not in ("SUCCESS", "FAILED"):
            raise ValueError(f"status must be SUCCESS or FAILED, not {status!r}")
        qr = parse_khqr(payload)
        if currency is not None and currency not in CURRENCIES.values():
            raise ValueError(f"currency must be USD or KHR, not {currency!r}")
        paid_currency = currency or qr.currency
        if amount is None:
            if qr.amount is None:
                raise ValueError("a static QR carries no amount: pass amount=")
            paid = qr.amount
        else:
            try:
                paid = Decimal(str(amount))
            except InvalidOperation as exc:
                raise ValueError(f"not an amount: {amount!r}") from exc
            if paid <= 0:
                raise ValueError("the amount must be positive")
        if at is not None and at.tzinfo is None:
            raise ValueError("at must be an aware datetime")
        with self.lock:
            moment = (at or self._now()).astimezone(UTC)
            record = BakongTransaction(
                md5=qr.md5, hash=secrets.token_hex(32), succeeded=status == "SUCCESS",
                from_account_id=from_account, to_account_id=qr.account_id,
                currency=paid_currency, amount=paid, description=description,
                created_at=moment, acknowledged_at=moment,
                external_ref=f"100FT{next(self._refs):011d}", qr=qr)
            self._transactions.setdefault(qr.md5, []).append(record)
            return record

    def fail(self, payload: str, *, from_account: str = DEFAULT_PAYER,
             at: datetime | None = None) -> BakongTransaction:
        """A failed transfer against the KHQR: the endpoints answer errorCode 3 / FAILED."""
        return self.pay(payload, from_account=from_account, at=at, status="FAILED")

    def transactions(self, md5: str | None = None) -> list[BakongTransaction]:
        """Every transaction recorded (of one md5), visible yet or not, in recorded order."""
        with self.lock:
            if md5 is not None:
                return list(self._transactions.get(md5, []))
            return [t for records in self._transactions.values() for t in records]

    def answered(self, md5: str) -> BakongTransaction | None:
        """The transaction the endpoints answer for this md5 now (None: not found)."""
        with self.lock:
            return self._answered(md5, self._now())

    def calls(self, path: str | None = None) -> int:
        """Requests that reached the fake (to this path), refused and faulted ones included."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def md5s_asked(self, path: str | None = None) -> list[str]:
        """The md5s in the bodies of requests to the two endpoints (or one), in order, as
        asked (strings only; bodies that are not JSON give none)."""
        asked: list[str] = []
        with self.lock:
            logged = list(self.requests)
        for request in logged:
            if request.path not in (CHECK_MD5, CHECK_MD5_LIST) or (
                    path is not None and request.path != path):
                continue
            try:
                body = json.loads(request.body)
            except ValueError:
                continue
            if request.path == CHECK_MD5 and isinstance(body, dict):
                body = [body.get("md5")]
            if isinstance(body, list):
                asked.extend(item for item in body if isinstance(item, str))
        return asked

    def clear_log(self) -> None:
        """Forget the requests so far (the counters start again)."""
        with self.lock:
            self.requests.clear()

    # -- the base's hooks --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Route]]:
        return [("POST", re.escape(CHECK_MD5), self._guarded(self._check_md5)),
                ("POST", re.escape(CHECK_MD5_LIST), self._guarded(self._check_md5_list))]

    def error_answer(self, status: int, request: LoggedRequest) -> Answer:
        messages = {401: UNAUTHORIZED_MESSAGE, 403: FORBIDDEN_MESSAGE, 429: TOO_MANY_MESSAGE,
                    504: BUSY_MESSAGE}
        message = messages.get(status) or http.HTTPStatus(status).phrase
        code = ErrorCode.UNAUTHORIZED if status == 401 else None
        return Answer(status, envelope(1, message, code))

    # -- plumbing ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _issue(self, value: str | None, lifetime: timedelta | None = None) -> str:
        now = self._now()
        expires_at = now + (lifetime or self.token_lifetime)
        token = value or jwt_like_token(now, expires_at)
        self._tokens.register(token, expires_at)
        return token

    def _guarded(self, handler: Callable[[Any], Answer]) -> Route:
        """The 403 switch, then the rate limit, then the token, then the body."""
        def route(request: LoggedRequest, params: dict[str, str]) -> Answer:
            with self.lock:
                try:
                    if self.refuse_foreign_ip:
                        raise _Refusal(403, envelope(1, FORBIDDEN_MESSAGE, None))
                    self._throttle()
                    state = self._tokens.check(request.headers.get("authorization", ""),
                                               self._now())
                    if state is not TokenState.VALID:
                        raise _Refusal(401, envelope(1, UNAUTHORIZED_MESSAGE,
                                                     ErrorCode.UNAUTHORIZED))
                    return handler(self._body(request))
                except _Refusal as refusal:
                    return refusal.answer
        return route

    def _throttle(self) -> None:
        if self.rate_limit is None:
            return
        limit, per_seconds = self.rate_limit
        now, period = self._now(), timedelta(seconds=per_seconds)
        while self._window and self._window[0] <= now - period:
            self._window.popleft()
        if len(self._window) >= limit:
            wait = (self._window[len(self._window) - limit] + period - now).total_seconds()
            raise _Refusal(429, envelope(1, TOO_MANY_MESSAGE, None),
                           {"Retry-After": str(max(math.ceil(wait), 1))})
        self._window.append(now)

    def _missing_fields(self) -> _Refusal:
        return _Refusal(self.bad_request_status,
                        envelope(1, MISSING_FIELDS_MESSAGE, ErrorCode.MISSING_FIELDS))

    def _body(self, request: LoggedRequest) -> Any:
        try:
            return json.loads(request.body)
        except ValueError:  # UnicodeDecodeError included
            raise self._missing_fields() from None

    def _md5(self, value: Any) -> str:
        if not isinstance(value, str) or not _MD5.fullmatch(value):
            raise self._missing_fields()
        return value

    def _answered(self, md5: str, now: datetime) -> BakongTransaction | None:
        visible = [t for t in self._transactions.get(md5, []) if t.created_at <= now]
        return min(visible, key=lambda t: t.created_at, default=None)  # min keeps the first

    def _status(self, md5: str) -> tuple[ItemStatus, BakongTransaction | None]:
        found = self._answered(md5, self._now())
        if found is None:
            return ItemStatus.NOT_FOUND, None
        if found.qr.static:
            return ItemStatus.STATIC_QR, found
        return (ItemStatus.SUCCESS if found.succeeded else ItemStatus.FAILED), found

    # -- endpoints ---------------------------------------------------------------------------

    def _check_md5(self, body: Any) -> Answer:
        if not isinstance(body, dict):
            raise self._missing_fields()
        status, found = self._status(self._md5(body.get("md5")))
        if status is ItemStatus.SUCCESS and found is not None:
            return Answer(200, envelope(0, FOUND_MESSAGE, None, found.wire()))
        code, message = _REFUSED[status]
        return Answer(200, envelope(1, message, code))

    def _check_md5_list(self, body: Any) -> Answer:
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_MD5_LIST:
            raise self._missing_fields()
        md5s = [self._md5(item) for item in body]
        items: list[dict[str, Any]] = []
        for md5 in md5s:
            status, found = self._status(md5)
            if status is ItemStatus.SUCCESS and found is not None:
                items.append({"md5": md5, "status": status.value, "message": FOUND_MESSAGE,
                              "data": found.wire()})
            else:
                items.append({"md5": md5, "status": status.value,
                              "message": _REFUSED[status][1], "data": None})
        return Answer(200, envelope(0, FOUND_MESSAGE, None, items))


_REFUSED: dict[ItemStatus, tuple[ErrorCode, str]] = {
    ItemStatus.NOT_FOUND: (ErrorCode.NOT_FOUND, NOT_FOUND_MESSAGE),
    ItemStatus.FAILED: (ErrorCode.FAILED, FAILED_MESSAGE),
    ItemStatus.STATIC_QR: (ErrorCode.STATIC_QR, STATIC_QR_MESSAGE),
}
