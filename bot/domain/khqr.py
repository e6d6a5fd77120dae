"""Bakong KHQR payloads: the National Bank of Cambodia's EMVCo merchant-presented QR.

Where the tag facts come from. The NBC's specification PDF was not read; everything here was
taken from the implementations, read at these versions:

- ``bakong-khqr`` 1.0.20 on npm, the "KHQR javascript SDK" whose package.json names the NBC's
  own GitLab (``khqr/sdk-javascript``) as its repository. Tag order, sub-tags, length limits
  (``emv.INVALID_LENGTH``), the tag-54 format, the tag-99 timestamps and the checks its
  ``verify`` makes all follow it; its test suite supplied the example payloads in our tests.
- ``bakong-khqr`` 0.6.5 on PyPI (unofficial, individual accounts only): same order, limits
  and timestamps, but it writes USD amounts without trailing zeros (``1.5`` where the NBC SDK
  writes ``1.50``). We follow the NBC SDK.
- ``ts-khqr`` 2.2.3 on npm, a TypeScript re-implementation; its README example is a test vector.

The payload: TLV fields of a 2-digit tag, a 2-digit length in characters and the value, in
the order 00, 01, 29|30, 52, 53, 54, 58, 59, 60, 62, 99, 63. Tag 29 is an individual account
(00 account id, 02 acquiring bank), tag 30 a merchant account (00 account id, 01 merchant id,
02 acquiring bank). Tag 99 holds 00 creation and 01 expiry, each 13 digits of milliseconds
since the epoch. Tag 63 is CRC-16/CCITT-FALSE over the whole string up to and including
``6304``, as 4 uppercase hex digits; the MD5 of the whole payload is Bakong's lookup key.

What is uncertain: the limits are the SDK's constants, not the specification's text (ABA's
KHQR guideline agrees on 25 for the name, 15 for the city and 13 for the amount); the SDK's
verify accepts a lowercase CRC where we refuse one, so that any one changed character fails;
whether bank apps trim spaces, which is why we build no value with outer spaces; amounts
written as ``5000.0`` (older SDK output) are read but never written.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain.money import CURRENCIES, Money


class KhqrError(ValueError):
    """Input that cannot make a KHQR, or a payload that does not parse or CRC-check."""


# ISO 4217 numeric codes: the only two currencies Bakong settles.
CURRENCY_CODES: dict[str, str] = {"USD": "840", "KHR": "116"}
_CURRENCY_BY_CODE = {code: currency for currency, code in CURRENCY_CODES.items()}

DEFAULT_CITY = "Phnom Penh"
MERCHANT_CATEGORY_CODE = "5999"  # what every reference SDK defaults to
COUNTRY_CODE = "KH"

# Length limits from the NBC SDK's emv.INVALID_LENGTH.
MAX_ACCOUNT_ID = 32
MAX_MERCHANT_ID = 32
MAX_ACQUIRING_BANK = 32
MAX_MERCHANT_NAME = 25
MAX_MERCHANT_CITY = 15
MAX_ADDITIONAL_FIELD = 25  # bill number, mobile number, store/terminal label, purpose
MAX_AMOUNT_CHARS = 13
TIMESTAMP_DIGITS = 13  # the NBC SDK refuses an expiry of any other length

_STATIC, _DYNAMIC = "11", "12"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_HEADER = re.compile(r"[0-9]{4}")
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]*))?")
_TIMESTAMP = re.compile(r"[0-9]{13}")  # TIMESTAMP_DIGITS
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
_ACCOUNT_ID = re.compile(r"[\x21-\x3f\x41-\x7e]+@[\x21-\x3f\x41-\x7e]+")


def _check_text(what: str, value: object, limit: int) -> None:
    """Printable ASCII only: bank apps show tags 59/60 as they are, and a length in
    characters is then also one in bytes. No outer spaces, which some apps would trim."""
    if not isinstance(value, str) or not value:
        raise KhqrError(f"{what} is required")
    if len(value) > limit:
        raise KhqrError(f"{what} is longer than {limit} characters: {value!r}")
    if not _PRINTABLE.fullmatch(value):
        raise KhqrError(f"{what} must be printable ASCII: {value!r}")
    if value != value.strip():
        raise KhqrError(f"{what} must not start or end with a space: {value!r}")


@dataclass(frozen=True)
class KhqrRecipient:
    """Who is paid: a Bakong account, shown as ``name`` in ``city``.

    With ``merchant_id`` it is a merchant account (tag 30), which the NBC SDK only builds
    with an acquiring bank too; without, an individual one (tag 29), which may still name
    its acquiring bank."""

    account_id: str
    name: str
    city: str = DEFAULT_CITY
    merchant_id: str | None = None
    acquiring_bank: str | None = None

    def __post_init__(self) -> None:
        _check_text("account id", self.account_id, MAX_ACCOUNT_ID)
        if not _ACCOUNT_ID.fullmatch(self.account_id):
            raise KhqrError(f"account id must look like name@bank: {self.account_id!r}")
        _check_text("merchant name", self.name, MAX_MERCHANT_NAME)
        _check_text("merchant city", self.city, MAX_MERCHANT_CITY)
        if self.merchant_id is not None:
            _check_text("merchant id", self.merchant_id, MAX_MERCHANT_ID)
            if self.acquiring_bank is None:
                raise KhqrError("a merchant account needs its acquiring bank")
        if self.acquiring_bank is not None:
            _check_text("acquiring bank", self.acquiring_bank, MAX_ACQUIRING_BANK)

    @property
    def is_merchant(self) -> bool:
        return self.merchant_id is not None


def _aware_ms(what: str, moment: object) -> int:
    if not isinstance(moment, datetime):
        raise KhqrError(f"{what} must be a datetime")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise KhqrError(f"{what} must be timezone-aware")
    ms = (moment - _EPOCH) // _ONE_MS  # floor, exact: no float on the way
    if len(str(ms)) != TIMESTAMP_DIGITS or ms < 0:
        raise KhqrError(f"{what} is outside what {TIMESTAMP_DIGITS} digits of ms can say")
    return ms


def _amount_text(amount: Money) -> str:
    """Tag 54 as the NBC SDK writes it: whole riel; whole dollars without decimals, any
    other dollar amount with exactly two (``10``, ``1.50``, ``0.01``)."""
    exponent = CURRENCIES[amount.currency].exponent
    whole, fraction = divmod(amount.minor, 10**exponent)
    if amount.currency == "KHR" or fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:0{exponent}d}"


@dataclass(frozen=True)
class KhqrRequest:
    """One dynamic KHQR: ``amount`` to ``recipient``, tagged with our ``bill_number``."""

    recipient: KhqrRecipient
    amount: Money
    bill_number: str
    created_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.recipient, KhqrRecipient):
            raise KhqrError("recipient must be a KhqrRecipient")
        if not isinstance(self.amount, Money):
            raise KhqrError("amount must be Money")
        if self.amount.currency not in CURRENCY_CODES:
            raise KhqrError(f"KHQR takes USD or KHR, not {self.amount.currency}")
        if self.amount.minor <= 0:
            raise KhqrError(f"amount must be positive: {self.amount}")
        if self.amount.currency == "KHR" and self.amount.minor % 10 ** CURRENCIES["KHR"].exponent:
            raise KhqrError(f"riel in a KHQR are whole riel: {self.amount}")
        if len(_amount_text(self.amount)) > MAX_AMOUNT_CHARS:
            raise KhqrError(f"amount does not fit {MAX_AMOUNT_CHARS} characters: {self.amount}")
        _check_text("bill number", self.bill_number, MAX_ADDITIONAL_FIELD)
        created = _aware_ms("created_at", self.created_at)
        if _aware_ms("expires_at", self.expires_at) <= created:
            raise KhqrError("expires_at must be at least a millisecond after created_at")


def _tlv(tag: str, value: str) -> str:
    if not 0 < len(value) < 100:
        raise KhqrError(f"tag {tag} cannot hold {len(value)} characters")
    return f"{tag}{len(value):02d}{value}"


def crc16(data: str) -> str:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the UTF-8 text, 4 uppercase hex."""
    return f"{binascii.crc_hqx(data.encode('utf-8'), 0xFFFF):04X}"


def payload_md5(payload: str) -> str:
    """Bakong's key for looking the payment up: lowercase hex MD5 of the whole payload."""
    return hashlib.md5(payload.encode("utf-8"), usedforsecurity=False).hexdigest()


def build_payload(request: KhqrRequest) -> str:
    """The dynamic KHQR string for ``request``, in the NBC SDK's tag order."""
    recipient = request.recipient
    account = _tlv("00", recipient.account_id)
    if recipient.merchant_id is not None:
        account += _tlv("01", recipient.merchant_id)
    if recipient.acquiring_bank is not None:
        account += _tlv("02", recipient.acquiring_bank)
    timestamps = (_tlv("00", str(_aware_ms("created_at", request.created_at)))
                  + _tlv("01", str(_aware_ms("expires_at", request.expires_at))))
    body = "".join((
        _tlv("00", "01"),
        _tlv("01", _DYNAMIC),
        _tlv("30" if recipient.is_merchant else "29", account),
        _tlv("52", MERCHANT_CATEGORY_CODE),
        _tlv("53", CURRENCY_CODES[request.amount.currency]),
        _tlv("54", _amount_text(request.amount)),
        _tlv("58", COUNTRY_CODE),
        _tlv("59", recipient.name),
        _tlv("60", recipient.city),
        _tlv("62", _tlv("01", request.bill_number)),
        _tlv("99", timestamps),
        "6304",
    ))
    return body + crc16(body)


@dataclass(frozen=True)
class ParsedKhqr:
    """What a KHQR says; ``tags`` keeps every top-level value as found."""

    dynamic: bool
    account_id: str
    merchant_account: bool
    merchant_id: str | None
    acquiring_bank: str | None
    merchant_name: str
    merchant_city: str
    amount: Money | None
    bill_number: str | None
    created_at: datetime | None
    expires_at: datetime | None
    tags: dict[str, str]


def _split(data: str, where: str) -> dict[str, str]:
    """TLV fields in order; a truncated, empty or repeated field is a broken payload."""
    fields: dict[str, str] = {}
    index = 0
    while index < len(data):
        header = data[index:index + 4]
        if not _HEADER.fullmatch(header):
            raise KhqrError(f"{where}: no tag and length at character {index}")
        tag, length = header[:2], int(header[2:])
        value = data[index + 4:index + 4 + length]
        if length == 0 or len(value) < length:
            raise KhqrError(f"{where}: tag {tag} is empty or cut short")
        if tag in fields:
            raise KhqrError(f"{where}: tag {tag} appears twice")
        fields[tag] = value
        index += 4 + length
    return fields


def _required(fields: dict[str, str], tag: str, what: str, limit: int) -> str:
    value = fields.get(tag)
    if value is None:
        raise KhqrError(f"no {what} (tag {tag})")
    if len(value) > limit:
        raise KhqrError(f"{what} is longer than {limit} characters")
    return value


def _optional(fields: dict[str, str], tag: str, what: str, limit: int) -> str | None:
    return None if tag not in fields else _required(fields, tag, what, limit)


def _parse_amount(text: str, currency: str) -> Money:
    match = _AMOUNT.fullmatch(text)
    if not match or len(text) > MAX_AMOUNT_CHARS:
        raise KhqrError(f"tag 54 is not an amount: {text!r}")
    exponent = CURRENCIES[currency].exponent
    fraction = (match[2] or "").rstrip("0")  # "5000.0", as older SDKs wrote it, is 5000
    if len(fraction) > exponent:
        raise KhqrError(f"tag 54 has more decimals than {currency} takes: {text!r}")
    return Money(int(match[1]) * 10**exponent + int(fraction.ljust(exponent, "0")), currency)


def _moment(ms: str) -> datetime:
    return _EPOCH + int(ms) * _ONE_MS


def parse_payload(payload: str) -> ParsedKhqr:
    """Read a KHQR, checking its CRC and structure; KhqrError when it is not one.

    Checks as the NBC SDK's ``verify`` does, except for the clock: a dynamic QR must carry
    an amount and a 13-digit expiry no earlier than its creation, but whether it has
    expired is for the caller to judge. A static QR's tag 99 is read only where it holds
    13-digit timestamps (ABA's static QRs put other data there)."""
    if not isinstance(payload, str) or len(payload) < 8 or payload[-8:-4] != "6304":
        raise KhqrError("a KHQR ends with its CRC field, 6304 and four hex digits")
    crc = payload[-4:]
    if crc != crc16(payload[:-4]):
        raise KhqrError(f"CRC {crc!r} does not match the payload ({crc16(payload[:-4])})")
    tags = _split(payload, "payload")
    if next(iter(tags)) != "00" or tags["00"] != "01":
        raise KhqrError("a KHQR starts with payload format indicator 000201")
    if list(tags)[-1] != "63" or tags["63"] != crc:
        raise KhqrError("the CRC must be the last field")
    initiation = tags.get("01", _STATIC)
    if initiation not in (_STATIC, _DYNAMIC):
        raise KhqrError(f"point of initiation must be 11 or 12, not {initiation!r}")

    if ("29" in tags) == ("30" in tags):
        raise KhqrError("a KHQR has exactly one of tag 29 (individual) and 30 (merchant)")
    merchant_account = "30" in tags
    account = _split(tags["30" if merchant_account else "29"], "account information")
    account_id = _required(account, "00", "account id", MAX_ACCOUNT_ID)
    if "@" not in account_id:
        raise KhqrError(f"account id is not name@bank: {account_id!r}")
    merchant_id = (_optional(account, "01", "merchant id", MAX_MERCHANT_ID)
                   if merchant_account else None)
    acquiring_bank = _optional(account, "02", "acquiring bank", MAX_ACQUIRING_BANK)

    if not re.fullmatch(r"[0-9]{4}", tags.get("52", "")):
        raise KhqrError("merchant category code (tag 52) must be 4 digits")
    currency = _CURRENCY_BY_CODE.get(tags.get("53", ""))
    if currency is None:
        raise KhqrError(f"currency (tag 53) must be 840 or 116, not {tags.get('53')!r}")
    amount = _parse_amount(tags["54"], currency) if "54" in tags else None
    _required(tags, "58", "country code", 3)
    merchant_name = _required(tags, "59", "merchant name", MAX_MERCHANT_NAME)
    merchant_city = _required(tags, "60", "merchant city", MAX_MERCHANT_CITY)

    extra = _split(tags["62"], "additional data") if "62" in tags else {}
    for sub in ("01", "02", "03", "07", "08"):
        _optional(extra, sub, f"additional data field {sub}", MAX_ADDITIONAL_FIELD)

    stamps = _split(tags["99"], "timestamps") if "99" in tags else {}
    dynamic = initiation == _DYNAMIC
    if amount is not None and "99" not in tags:
        raise KhqrError("a KHQR with an amount needs its timestamps (tag 99)")
    if dynamic:
        if amount is None:
            raise KhqrError("a dynamic KHQR needs an amount (tag 54)")
        if not _TIMESTAMP.fullmatch(stamps.get("01", "")):
            raise KhqrError("a dynamic KHQR needs a 13-digit expiry (tag 99/01)")
        if "00" in stamps and not _TIMESTAMP.fullmatch(stamps["00"]):
            raise KhqrError("creation time (tag 99/00) must be 13 digits")
    created, expires = (stamps.get(sub, "") for sub in ("00", "01"))
    created_at = _moment(created) if _TIMESTAMP.fullmatch(created) else None
    expires_at = _moment(expires) if _TIMESTAMP.fullmatch(expires) else None
    if created_at and expires_at and dynamic and expires_at < created_at:
        raise KhqrError("the KHQR expires before it was created")

    return ParsedKhqr(
        dynamic=dynamic,
        account_id=account_id,
        merchant_account=merchant_account,
        merchant_id=merchant_id,
        acquiring_bank=acquiring_bank,
        merchant_name=merchant_name,
        merchant_city=merchant_city,
        amount=amount,
        bill_number=extra.get("01"),
        created_at=created_at,
        expires_at=expires_at,
        tags=tags,
    )
