"""Money as integer minor units plus an ISO 4217 code, and parsing what people type.

Floats never appear: amounts are parsed digit by digit into ``int`` minor units.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from babel.numbers import format_currency, format_decimal


@dataclass(frozen=True)
class CurrencyRules:
    """How a currency is stored, typed and bounded."""

    exponent: int  # ISO 4217 minor unit: 10**exponent minor units make one major unit
    input_decimals: int  # decimals people may type (the riel has no coins in use)
    max_minor: int  # above this an amount is absurd for a mobile top-up or wallet payment


CURRENCIES: dict[str, CurrencyRules] = {
    "USD": CurrencyRules(exponent=2, input_decimals=2, max_minor=1_000_00),
    "KHR": CurrencyRules(exponent=2, input_decimals=0, max_minor=4_000_000_00),
    "XTR": CurrencyRules(exponent=0, input_decimals=0, max_minor=100_000),
}

_SYMBOLS = {"$": "USD", "US$": "USD", "USD": "USD", "៛": "KHR", "KHR": "KHR", "RIEL": "KHR",
            "RIELS": "KHR", "XTR": "XTR", "⭐": "XTR", "STARS": "XTR"}


class MoneyError(ValueError):
    """An amount that cannot be accepted; ``reason`` says why, for a localized message."""

    class Reason(enum.Enum):
        EMPTY = "empty"
        NOT_A_NUMBER = "not_a_number"
        NEGATIVE = "negative"
        ZERO = "zero"
        TOO_MANY_DECIMALS = "too_many_decimals"
        TOO_LARGE = "too_large"
        UNKNOWN_CURRENCY = "unknown_currency"
        CURRENCY_MISMATCH = "currency_mismatch"

    def __init__(self, reason: MoneyError.Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise MoneyError(MoneyError.Reason.UNKNOWN_CURRENCY, self.currency)
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError("Money.minor must be an int of minor units")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def of_major(cls, major: int, currency: str) -> Money:
        return cls(major * 10 ** CURRENCIES[currency].exponent, currency)

    @classmethod
    def from_decimal(cls, major: Decimal | int | str, currency: str) -> Money:
        """Major units as a provider gives them ("4.99", 4100) in minor units, rounded half
        up to the currency's minor unit. MoneyError for an unknown currency or a non-number;
        never a float: parse JSON with ``parse_float=Decimal``."""
        if currency not in CURRENCIES:
            raise MoneyError(MoneyError.Reason.UNKNOWN_CURRENCY, str(currency))
        if isinstance(major, float | bool):
            raise TypeError("amounts are Decimal, int or str, never float")
        try:
            value = Decimal(major)
        except ArithmeticError as exc:
            raise MoneyError(MoneyError.Reason.NOT_A_NUMBER, str(major)) from exc
        if not value.is_finite():
            raise MoneyError(MoneyError.Reason.NOT_A_NUMBER, str(major))
        minor = value.scaleb(CURRENCIES[currency].exponent).quantize(
            Decimal(1), rounding=ROUND_HALF_UP)
        return cls(int(minor), currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(MoneyError.Reason.CURRENCY_MISMATCH,
                             f"{self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    def as_decimal(self) -> Decimal:
        """Exact decimal of major units, for display libraries only."""
        return Decimal(self.minor).scaleb(-CURRENCIES[self.currency].exponent)

    def plain(self) -> str:
        """Locale-free text such as ``5.50 USD`` for logs, CLI and references."""
        rules = CURRENCIES[self.currency]
        shown = self.as_decimal().quantize(Decimal(1).scaleb(-rules.input_decimals))
        return f"{shown} {self.currency}"

    def __str__(self) -> str:
        return self.plain()


@functools.lru_cache(maxsize=8192)  # pure, and Babel's formatting is slow: plan lists repeat
def format_money(money: Money, locale: str = "en") -> str:
    """Money for people, in their locale's conventions (``$5.50``, ``20,000៛``)."""
    if money.currency == "XTR":
        return f"{format_decimal(money.minor, locale=locale)} ⭐"
    if money.currency == "KHR":  # riel is written whole, the sign after the number
        return f"{format_decimal(money.as_decimal(), format='#,##0', locale=locale)}៛"
    return str(format_currency(money.as_decimal(), money.currency, locale=locale))


_AMOUNT = re.compile(r"^(?P<sign>[-−])?(?P<int>\d{1,3}(?:[,\s ]\d{3})+|\d+)?(?:[.](?P<frac>\d*))?$")


def parse_money(text: str, default_currency: str = "USD") -> Money:
    """Parse what a person types: ``5``, ``$5``, ``5.50``, ``20000 KHR``, ``20,000៛``.

    Refuses negatives, zero, more decimals than the currency takes and absurd amounts,
    each with a ``MoneyError.reason``.
    """
    raw = (text or "").strip()
    if not raw:
        raise MoneyError(MoneyError.Reason.EMPTY)
    if len(raw) > 40:
        raise MoneyError(MoneyError.Reason.NOT_A_NUMBER)
    currency, number = _split_currency(raw.upper())
    currency = currency or default_currency
    if currency not in CURRENCIES:
        raise MoneyError(MoneyError.Reason.UNKNOWN_CURRENCY, currency)
    match = _AMOUNT.match(number.strip())
    if not match or (match["int"] is None and not match["frac"]):
        raise MoneyError(MoneyError.Reason.NOT_A_NUMBER)
    if match["sign"]:
        raise MoneyError(MoneyError.Reason.NEGATIVE)
    rules = CURRENCIES[currency]
    whole = int(re.sub(r"[,\s ]", "", match["int"] or "0"))
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > rules.input_decimals:
        raise MoneyError(MoneyError.Reason.TOO_MANY_DECIMALS, str(rules.input_decimals))
    minor = whole * 10**rules.exponent + (int(frac.ljust(rules.exponent, "0")) if frac else 0)
    if minor == 0:
        raise MoneyError(MoneyError.Reason.ZERO)
    if minor > rules.max_minor:
        raise MoneyError(MoneyError.Reason.TOO_LARGE, Money(rules.max_minor, currency).plain())
    return Money(minor, currency)


def _split_currency(raw: str) -> tuple[str | None, str]:
    """Take a currency symbol or code off either end of the text."""
    for symbol in sorted(_SYMBOLS, key=len, reverse=True):
        if raw.startswith(symbol):
            return _SYMBOLS[symbol], raw[len(symbol):]
        if raw.endswith(symbol):
            return _SYMBOLS[symbol], raw[: -len(symbol)]
        # a sign before the symbol: "-$5"
        if raw[:1] in "-−" and raw[1:].startswith(symbol):
            return _SYMBOLS[symbol], raw[0] + raw[1 + len(symbol):]
    code = re.search(r"(?<![A-Z])[A-Z]{3}$", raw)
    if code and re.search(r"\d", raw[: code.start()]):
        return code.group(0), raw[: code.start()]
    return None, raw
