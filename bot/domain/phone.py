"""Cambodian mobile numbers: accept what people type, detect the operator, refuse the rest."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType, carrier

from bot.domain.operators import Operator

# phonenumbers' own carrier names for Cambodian prefixes, mapped to the operators we serve.
_CARRIER_NAMES = {
    "smart": Operator.SMART,
    "cellcard": Operator.CELLCARD,
    "metfone": Operator.METFONE,
    "seatel": Operator.SEATEL,
}
_ALLOWED_CHARS = re.compile(r"^[+\d\s\-().]+$")


class PhoneError(ValueError):
    class Reason(enum.Enum):
        EMPTY = "empty"
        NOT_A_NUMBER = "not_a_number"
        FOREIGN = "foreign"
        LANDLINE = "landline"
        INVALID = "invalid"
        UNSUPPORTED_OPERATOR = "unsupported_operator"

    def __init__(self, reason: PhoneError.Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MobileNumber:
    e164: str  # +85512345678: the canonical form, the one that is encrypted and indexed
    operator: Operator

    @property
    def national(self) -> str:
        """0xx xxx xxx, as Cambodians write it."""
        parsed = phonenumbers.parse(self.e164)
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))

    @property
    def masked(self) -> str:
        """Enough to recognise one's own line without revealing it: 012 ••• 678."""
        digits = "0" + self.e164.removeprefix("+855")
        return f"{digits[:3]} ••• {digits[-3:]}"


def parse_cambodian_mobile(text: str) -> MobileNumber:
    """Parse ``012345678``, ``012 345 678``, ``+855 12-345-678``, ``855 12345678``."""
    raw = (text or "").strip()
    if not raw:
        raise PhoneError(PhoneError.Reason.EMPTY)
    if len(raw) > 32 or not _ALLOWED_CHARS.match(raw):
        raise PhoneError(PhoneError.Reason.NOT_A_NUMBER)
    digits = re.sub(r"\D", "", raw)
    if len(digits) < 6:
        raise PhoneError(PhoneError.Reason.NOT_A_NUMBER)
    if raw.startswith("00"):
        raw = "+" + digits[2:]
    elif digits.startswith("855") and not raw.startswith(("+", "0")) and len(digits) >= 11:
        raw = "+" + digits
    try:
        parsed = phonenumbers.parse(raw, "KH")
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(PhoneError.Reason.NOT_A_NUMBER) from exc
    if parsed.country_code != 855:
        raise PhoneError(PhoneError.Reason.FOREIGN, f"+{parsed.country_code}")
    if not phonenumbers.is_valid_number(parsed):
        raise PhoneError(PhoneError.Reason.INVALID)
    kind = phonenumbers.number_type(parsed)
    if kind not in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise PhoneError(PhoneError.Reason.LANDLINE)
    name = carrier.name_for_number(parsed, "en").strip().lower()
    operator = _CARRIER_NAMES.get(name)
    if operator is None:
        raise PhoneError(PhoneError.Reason.UNSUPPORTED_OPERATOR, name or "unknown")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return MobileNumber(e164=str(e164), operator=operator)


def describe_phone_error(error: PhoneError) -> str:
    """An English sentence for CLI and logs; the bot localizes from ``error.reason``."""
    return {
        PhoneError.Reason.EMPTY: "no number given",
        PhoneError.Reason.NOT_A_NUMBER: "that is not a phone number",
        PhoneError.Reason.FOREIGN: f"{error.detail} is not a Cambodian number (+855)",
        PhoneError.Reason.LANDLINE: "that is a landline, not a mobile number",
        PhoneError.Reason.INVALID: "that is not a valid Cambodian number",
        PhoneError.Reason.UNSUPPORTED_OPERATOR:
            f"the operator ({error.detail}) is not supported: Smart, Cellcard, Metfone, Seatel",
    }[error.reason]
