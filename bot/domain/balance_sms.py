"""Reading the balance-inquiry SMS Cambodian carriers send, and balances people type.

No API reports the balance of a physical prepaid line, so a user either types what their
phone shows or forwards the carrier's reply to *888# (Smart), *124# / *112# (Cellcard) or
*097# / *101# (Metfone). Those replies come in English or Khmer, with Khmer or ASCII
digits, and are often wrapped in promotions ("Top up $5 and get 10GB ..."). This module
pulls out the three facts worth keeping: the main balance, the remaining data and the
date the line stays valid until.

It works by labels: a value counts only when it follows (or, for data, precedes) a word
that says what it is, with nothing but filler in between ("Main balance is $1.25",
"សមតុល្យ៖ ១.២៥ ដុល្លារ", "Internet: 1,536 MB", "1.5GB of data left"). Values behind
promotional or bonus words ("bonus balance", "get 10GB free", "offer valid until ...")
are not the line's own. Numbers are read digit by digit into integers: no floats.

Pure functions, no I/O; ``parse_balance_sms`` never raises on any text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.domain.money import CURRENCIES, Money, MoneyError, parse_money

MAX_SMS_CHARS = 1600  # a 10-part concatenated SMS; anything longer is not a carrier reply
MAX_DATA_MB = 10_000_000  # 10 TB: above this a "data" figure is not a prepaid allowance
MB_PER_GB = 1024  # Cambodian carriers count 1 GB as 1,024 MB
# A validity date this far from now is a misread, not a line's validity.
VALIDITY_PAST = timedelta(days=366)
VALIDITY_FUTURE = timedelta(days=3660)
END_OF_DAY = time(23, 59, 59)


@dataclass(frozen=True)
class ParsedBalance:
    """What a carrier's balance SMS said; at least one field is set."""

    balance: Money | None = None
    data_mb: int | None = None
    validity_end: datetime | None = None  # aware UTC

    def __post_init__(self) -> None:
        if self.balance is None and self.data_mb is None and self.validity_end is None:
            raise ValueError("a parsed balance says at least one thing")
        if self.data_mb is not None and self.data_mb < 0:
            raise ValueError("data_mb cannot be negative")
        if self.validity_end is not None and (self.validity_end.tzinfo is None
                                              or self.validity_end.utcoffset() != timedelta(0)):
            raise ValueError("validity_end must be an aware UTC datetime")


# --- normalising ------------------------------------------------------------------------

_KHMER_DIGITS: dict[str, str | int | None] = {chr(0x17E0 + i): str(i) for i in range(10)}
_KHMER_DIGIT_TABLE = str.maketrans(_KHMER_DIGITS)  # ០..៩ -> 0..9
_TRANSLATION = str.maketrans({
    **_KHMER_DIGITS,
    "៖": ":",  # Khmer colon
    "។": ".",  # Khmer full stop (khan)
    "\u200b": "",  # zero-width space: Khmer's invisible word break
    "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
    "−": "-",
})


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATION)
    return re.sub(r"\s+", " ", text).strip().lower()


# --- numbers ----------------------------------------------------------------------------

# Bounded runs keep int() far from Python's limit on digits and the regex linear.
_NUM = r"(?<![0-9])[0-9]{1,12}(?:[.,][0-9]{1,12}){0,4}(?![0-9])"
_SEPARATOR = re.compile(r"[.,]")


def _split_number(token: str, *, dot_groups: bool) -> tuple[int, str] | None:
    """``(whole, decimal digits)`` of ``1.25``, ``1,25``, ``1,536``, ``1.234,56`` ...

    A lone separator followed by exactly three digits groups thousands when it is a comma
    (or a dot and ``dot_groups``); otherwise it is the decimal mark. None when ambiguous.
    """
    parts = _SEPARATOR.split(token)
    seps = _SEPARATOR.findall(token)
    if not seps:
        return int(token), ""
    if len(seps) == 1:
        head, tail = parts
        if len(tail) == 3 and head != "0" and (seps[0] == "," or dot_groups):
            return int(head + tail), ""
        return int(head), tail
    grouped_ok = len(parts[0]) <= 3 and parts[0] != "0"
    if all(sep == seps[0] for sep in seps):  # 1,234,567 / 1.234.567
        if grouped_ok and all(len(part) == 3 for part in parts[1:]):
            return int("".join(parts)), ""
        return None
    if (all(sep == seps[0] for sep in seps[:-1]) and grouped_ok
            and all(len(part) == 3 for part in parts[1:-1])):  # 1,234.56 / 1.234,56
        return int("".join(parts[:-1])), parts[-1]
    return None


# --- money ------------------------------------------------------------------------------

_CURRENCY_WORDS = {
    "$": "USD", "us$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD",
    "ដុល្លារ": "USD", "៛": "KHR", "khr": "KHR", "riel": "KHR", "riels": "KHR", "រៀល": "KHR",
}
_CENT_WORDS = {"cent", "cents", "សេន"}
_PRE = r"(?P<pre>us\$|usd|khr|\$|៛)"
_POST = r"(?P<post>us\$|usd|khr|riels?|dollars?|cents?|ដុល្លារ|រៀល|សេន|\$|៛)"
# What a bare number after a balance label may be instead of dollars: "Credit: 100 min".
_NOT_MONEY_AFTER = re.compile(
    r" ?(?:[/:%*#0-9]|-[0-9]|(?:gb|mb|kb|tb|g|m|min|mins|minutes?|sms|days?|hours?|hrs?"
    r"|times?|points?|pts|x|k|calls?)(?![a-z])|នាទី|សារ|ថ្ងៃ|ពិន្ទុ|ម៉ោង|ដង|ជីហ្គាបៃ|មេហ្គាបៃ)")
_AMOUNT = rf"(?P<amt>(?:{_PRE} ?)?(?P<num>{_NUM})(?: ?{_POST}(?![a-z]))?)"


def _money(whole: int, frac: str, currency: str) -> Money | None:
    """Minor units, dropping decimals the currency does not use (a balance shown to the
    hundredth of a cent is floored to the cent: the conservative reading)."""
    rules = CURRENCIES[currency]
    kept = frac[: rules.input_decimals]
    minor = whole * 10**rules.exponent + (int(kept.ljust(rules.exponent, "0")) if kept else 0)
    if minor > rules.max_minor:
        return None
    return Money(minor, currency)


def _amount(match: re.Match[str], text: str) -> Money | None:
    """The money in an ``_AMOUNT`` match, or None when it is not money after all."""
    start = match.start("amt")
    if start > 0 and text[start - 1] == "-":
        return None  # negative: not a prepaid balance we can use
    pre, post, token = match["pre"], match["post"], match["num"]
    if pre is None and post is None:
        # A bare number counts (USD) only when nothing after it says it is something else.
        if _NOT_MONEY_AFTER.match(text, match.end("num")):
            return None
        if start > 0 and text[start - 1] in "*#/":
            return None
    if post in _CENT_WORDS:
        if pre is not None:
            return None
        parts = _split_number(token, dot_groups=False)
        if parts is None or parts[1].strip("0"):
            return None
        return Money(parts[0], "USD") if parts[0] <= CURRENCIES["USD"].max_minor else None
    currencies = {_CURRENCY_WORDS[word] for word in (pre, post) if word is not None}
    if len(currencies) > 1:
        return None
    currency = currencies.pop() if currencies else "USD"
    parts = _split_number(token, dot_groups=currency == "KHR")
    if parts is None:
        return None
    return _money(parts[0], parts[1], currency)


# --- data -------------------------------------------------------------------------------

_UNIT_FACTOR_MB = {
    "kb": 0, "mb": 1, "gb": MB_PER_GB, "tb": MB_PER_GB * MB_PER_GB,
    "megabyte": 1, "megabytes": 1, "gigabyte": MB_PER_GB, "gigabytes": MB_PER_GB,
    "មេហ្គាបៃ": 1, "មេកាបៃ": 1, "ជីហ្គាបៃ": MB_PER_GB, "ជីកាបៃ": MB_PER_GB,
    "ហ្គីហ្គាបៃ": MB_PER_GB, "គីឡូបៃ": 0,
}
_UNIT = (r"(?P<unit>gigabytes?|megabytes?|gb|mb|kb|tb|មេហ្គាបៃ|មេកាបៃ|ជីហ្គាបៃ|ជីកាបៃ"
         r"|ហ្គីហ្គាបៃ|គីឡូបៃ)(?![a-z])")
_DATA_AMOUNT = rf"(?P<dnum>{_NUM}) ?{_UNIT}"


def _megabytes(token: str, unit: str) -> int | None:
    parts = _split_number(token, dot_groups=False)
    if parts is None:
        return None
    whole, frac = parts[0], parts[1][:6]
    factor = _UNIT_FACTOR_MB[unit]
    if factor == 0:  # kilobytes: whole megabytes only
        megabytes = whole // 1024
    else:
        megabytes = whole * factor + (int(frac) * factor // 10 ** len(frac) if frac else 0)
    return megabytes if megabytes <= MAX_DATA_MB else None


# --- labels -----------------------------------------------------------------------------

# Words allowed between a label and its value ("Main balance is currently: $1.25").
_FILLER_EN = (r"is|are|of|now|currently|remaining|remain|left|available|amount|total"
              r"|you have|has|your|main|account|acc|in")
_FILLER_KM = r"គឺ|នៅ ?សល់|នៅ|មាន|ចំនួន|របស់ ?អ្នក|បច្ចុប្បន្ន|សរុប|ស្មើ|គណនី|មេ|ទឹកប្រាក់|ប្រាក់"
_FILLER = rf"(?:[ :=\-–—>(\[,]|\b(?:{_FILLER_EN})\b|{_FILLER_KM}){{0,10}}"

_BALANCE_LABEL = re.compile(
    r"(?P<main>\bmain ?(?:account|acc|a/c)?(?: ?bal(?:ance)?)?(?![a-z])"
    r"|\bbasic ?(?:account|acc|balance|bal)(?![a-z])|\bcore ?balance"
    r"|សមតុល្យ ?(?:គណនី ?)?មេ|គណនី ?មេ|ទឹកប្រាក់ ?(?:ក្នុង ?)?គណនី ?មេ)"
    r"|\baccount ?balance|\bacc(?:ount)? ?bal\b|\bbalance|\bbal\b|\bcredit(?![a-z])"
    r"|\bairtime|សមតុល្យ(?: ?គណនី)?|ទឹកប្រាក់ ?(?:ក្នុង ?)?គណនី"
)
_BALANCE_VALUE = re.compile(_FILLER + _AMOUNT)
# What makes a balance not the line's spendable main balance, just before its label.
_NOT_MAIN_BALANCE = re.compile(
    r"(?:bonus|promo\w*|free|gift|reward|extra|sms|call|calls|voice|minutes?|data|internet"
    r"|top ?-?up|recharge|buy|get|add|transfer(?:red)?|pay|spend|loan|borrow(?:ed)?"
    r"|ប្រូម៉ូសិន|បន្ថែម|ជូន|កាដូ|ឥតគិតថ្លៃ|ទិន្នន័យ|អ៊ីនធឺណិត|បញ្ចូល|ខ្ចី)"
    r"(?: ?(?:your|the|ur))?[ :\-]*$"
)

_DATA_WORD = r"(?:data|internet|ទិន្នន័យ|អ៊ីនធឺណិត|អ៊ីនធើណិត|អ៊ីនធឺណេត|អ៊ីនធើណេត)"
_DATA_LABEL = re.compile(
    r"(?:\b(?:(?:mobile|4g|3g|lte|high ?-?speed) ?)?(?:data|internet)"
    r"(?: ?(?:balance|remaining|left|volume|allowance))?(?![a-z])"
    r"|ទិន្នន័យ|អ៊ីនធឺណិត|អ៊ីនធើណិត|អ៊ីនធឺណេត|អ៊ីនធើណេត)"
)
_DATA_VALUE = re.compile(_FILLER + _DATA_AMOUNT)
# "1.5GB of data remaining", "500MB left", "៥០០MB នៅសល់".
_DATA_BEFORE_LABEL = re.compile(
    rf"{_DATA_AMOUNT} ?(?:of )?(?:(?:mobile|4g|high ?-?speed) )?(?:{_DATA_WORD} ?)?"
    r"(?:left|remaining|remain|available|នៅសល់)(?![a-z])"
)
_NOT_OWN_DATA = re.compile(
    r"(?:bonus|promo\w*|free|gift|reward|extra|get|buy|enjoy|receive|win|up to|with|only"
    r"|ប្រូម៉ូសិន|ឥតគិតថ្លៃ|ជូន|ទិញ|ទទួលបាន)(?: ?(?:your|the|a))?[ :\-]*$"
)
# A data figure that is a price list entry: "1GB for $1", "500MB/day", "2GB @ $1".
_PRICE_AFTER_DATA = re.compile(r" ?(?:for\b|only\b|at \$|@|/ ?(?:day|week|month)|per\b)")

_VALIDITY_LABEL = re.compile(
    r"\b(?:valid(?:ity)?(?: ?(?:date|period))?(?: ?(?:until|till|til|to|thru|through|up to))?"
    r"|exp(?:iry|iration|ires?|ired)?(?: ?(?:date|on|at))?\.?"
    r"|active (?:until|till|to)|until|till)(?![a-z])"
    r"|ផុតកំណត់|សុពលភាព|រហូតដល់|ដល់ថ្ងៃ"
)
_VALIDITY_FILLER = re.compile(
    r"(?:[ :=\-–>(\[,]|\b(?:is|on|at|date|until|till|to|by|before|the|day|of|be)\b"
    r"|ថ្ងៃ|ទី|នៅ|ដល់|រហូត|ត្រឹម|គឺ|ម៉ោង){0,10}"
)
# Promotions and one-time codes have validity dates too; they are not the line's.
_NOT_LINE_VALIDITY = re.compile(
    r"(?:offer|promo\w*|campaign|deal|event|bonus|package|pack|bundle|code|otp|pin|link"
    r"|voucher|coupon|ប្រូម៉ូសិន|កូដ|កញ្ចប់)\b[^.;!?\n]{0,24}$"
)

_ACCOUNT_WORDS = re.compile(r"\b(?:account|line|sim|number|subscriber)\b|គណនី|ស៊ីម|លេខ")
_CODE_WORDS = re.compile(r"\b(?:otp|code|pin|password|passcode|verif\w*)\b|កូដ|សម្ងាត់")

# --- dates ------------------------------------------------------------------------------

_MONTHS_EN = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7,
              "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
_MONTHS_KM = {"មករា": 1, "កុម្ភៈ": 2, "កុម្ភះ": 2, "មីនា": 3, "មេសា": 4, "ឧសភា": 5,
              "មិថុនា": 6, "កក្កដា": 7, "សីហា": 8, "កញ្ញា": 9, "តុលា": 10, "វិច្ឆិកា": 11,
              "ធ្នូ": 12}
_MON_EN = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]{0,6}\.?"
_MON_KM = "(?P<kmon>" + "|".join(sorted(_MONTHS_KM, key=len, reverse=True)) + ")"
_DATE_PATTERNS = [
    re.compile(r"(?P<y>[0-9]{4})(?P<s>[-/.])(?P<m>[0-9]{1,2})(?P=s)(?P<d>[0-9]{1,2})(?![0-9])"),
    re.compile(r"(?P<d>[0-9]{1,2})(?P<s>[-/.])(?P<m>[0-9]{1,2})(?P=s)"
               r"(?P<y>[0-9]{4}|[0-9]{2})(?![0-9])"),
    re.compile(rf"(?P<d>[0-9]{{1,2}})(?:st|nd|rd|th)?[ \-/.]?{_MON_EN}(?:[ \-/.,]{{0,2}}"
               r"(?P<y>[0-9]{4}|[0-9]{2}))?(?![0-9])"),
    re.compile(rf"{_MON_EN} ?(?P<d>[0-9]{{1,2}})(?:st|nd|rd|th)?(?![0-9])"
               r"(?:,? ?(?P<y>[0-9]{4}))?(?![0-9])"),
    re.compile(rf"(?:ថ្ងៃ ?(?:ទី ?)?)?(?P<d>[0-9]{{1,2}}) ?(?:ខែ ?)?{_MON_KM}"
               r"(?: ?(?:ឆ្នាំ ?)?(?P<y>[0-9]{4}))?(?![0-9])"),
    re.compile(r"(?P<d>[0-9]{1,2})/(?P<m>[0-9]{1,2})(?![0-9/])"),
]
_TIME = re.compile(r"(?P<h>[0-9]{1,2})(?::|h)(?P<mi>[0-9]{2})(?::(?P<sec>[0-9]{2}))?"
                   r"(?: ?(?P<ampm>am|pm)(?![a-z]))?(?![0-9])")
_BETWEEN_DATE_AND_TIME = re.compile(r"(?:,? ?(?:at |@ |- |នៅ ?|ម៉ោង ?)?)")
_BETWEEN_TIME_AND_DATE = re.compile(r"(?:,? ?(?:on |- |ថ្ងៃ ?(?:ទី ?)?)?)")


@dataclass(frozen=True)
class _Found:
    start: int
    end: int


def _time_at(text: str, pos: int) -> tuple[time, int] | None:
    match = _TIME.match(text, pos)
    if match is None:
        return None
    hour, minute = int(match["h"]), int(match["mi"])
    second = int(match["sec"]) if match["sec"] else 0
    if match["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match["ampm"] == "pm" else 0)
    if (hour, minute, second) == (24, 0, 0):
        return END_OF_DAY, match.end()
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second), match.end()


def _date_at(text: str, pos: int, today: date) -> tuple[date, int] | None:
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text, pos)
        if match is None:
            continue
        groups = match.groupdict()
        day = int(groups["d"])
        if groups.get("mon"):
            month = _MONTHS_EN[groups["mon"]]
        elif groups.get("kmon"):
            month = _MONTHS_KM[groups["kmon"]]
        else:
            month = int(groups["m"])
            if month > 12 and day <= 12:  # only ever m/d/y when d/m/y is impossible
                day, month = month, day
        raw_year = groups.get("y")
        try:
            if raw_year is None:
                found = date(today.year, month, day)
                if found < today - timedelta(days=31):  # "31/01" read in December
                    found = date(today.year + 1, month, day)
            else:
                year = int(raw_year) + (2000 if len(raw_year) == 2 else 0)
                if not 2000 <= year <= 2100:
                    continue
                found = date(year, month, day)
        except ValueError:
            continue
        return found, match.end()
    return None


def _validity_at(text: str, pos: int, *, now: datetime,
                 zone: ZoneInfo) -> tuple[datetime, int] | None:
    """A date with an optional time starting at ``pos`` (after filler), as aware UTC."""
    filler = _VALIDITY_FILLER.match(text, pos)
    pos = filler.end() if filler else pos
    today = now.astimezone(zone).date()
    at: time | None = None
    leading = _time_at(text, pos)
    if leading is not None:
        between = _BETWEEN_TIME_AND_DATE.match(text, leading[1])
        dated = _date_at(text, between.end() if between else leading[1], today)
        if dated is None:
            return None
        at, (day, end) = leading[0], dated
    else:
        dated = _date_at(text, pos, today)
        if dated is None:
            return None
        day, end = dated
        between = _BETWEEN_DATE_AND_TIME.match(text, end)
        trailing = _time_at(text, between.end() if between else end)
        if trailing is not None:
            at, end = trailing
    try:
        moment = datetime.combine(day, at or END_OF_DAY, tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    if not now - VALIDITY_PAST <= moment <= now + VALIDITY_FUTURE:
        return None
    return moment, end


# --- the parser -------------------------------------------------------------------------


def _balances(text: str) -> tuple[Money | None, list[_Found], list[_Found]]:
    """(the main balance, spans of line balances, spans of other money such as bonuses)."""
    best: tuple[int, int, Money] | None = None
    own: list[_Found] = []
    other: list[_Found] = []
    for label in _BALANCE_LABEL.finditer(text):
        value = _BALANCE_VALUE.match(text, label.end())
        if value is None:
            continue
        money = _amount(value, text)
        if money is None:
            continue
        span = _Found(label.start(), value.end())
        if _NOT_MAIN_BALANCE.search(text, max(0, label.start() - 32), label.start()):
            other.append(span)
            continue
        own.append(span)
        rank = (0 if label["main"] else 1, label.start())
        if best is None or rank < best[:2]:
            best = (rank[0], rank[1], money)
    return (best[2] if best else None), own, other


def _data(text: str) -> tuple[int | None, list[_Found]]:
    """(the remaining data in MB, spans of every data figure read)."""
    candidates: list[tuple[int, int, _Found]] = []  # (position, MB, span)
    spans: list[_Found] = []

    def consider(label_start: int, match: re.Match[str]) -> None:
        megabytes = _megabytes(match["dnum"], match["unit"])
        if megabytes is None:
            return
        span = _Found(label_start, match.end())
        spans.append(span)
        if _NOT_OWN_DATA.search(text, max(0, label_start - 24), label_start):
            return
        if _PRICE_AFTER_DATA.match(text, match.end("unit")):
            return
        candidates.append((label_start, megabytes, span))

    for label in _DATA_LABEL.finditer(text):
        value = _DATA_VALUE.match(text, label.end())
        if value is not None:
            consider(label.start(), value)
    for before in _DATA_BEFORE_LABEL.finditer(text):
        consider(before.start(), before)
    if not candidates:
        return None, spans
    return min(candidates, key=lambda c: c[0])[1], spans


def _validity(text: str, *, now: datetime, zone: ZoneInfo, line_fields: list[_Found],
              other_fields: list[_Found]) -> datetime | None:
    """The line's validity. When a message gives several dates, the one after the main
    balance wins over one after a data pack or a bonus; a lone date is the line's."""
    found: dict[int, tuple[str, datetime]] = {}  # label position -> (belongs to, moment)
    fields = [(f.end, "line") for f in line_fields] + [(f.end, "other") for f in other_fields]
    for label in _VALIDITY_LABEL.finditer(text):
        if _NOT_LINE_VALIDITY.search(text, max(0, label.start() - 48), label.start()):
            continue
        read = _validity_at(text, label.end(), now=now, zone=zone)
        if read is None or any(at == read[0] for _, at in found.values()):
            continue
        before = [(end, owner) for end, owner in fields if end <= label.start()]
        owner = max(before)[1] if before else "none"
        found[label.start()] = (owner, read[0])
    for wanted in ("line", "none"):
        for _, (owner, moment) in sorted(found.items()):
            if owner == wanted:
                return moment
    if len(found) == 1:
        return next(iter(found.values()))[1]
    return None


def parse_balance_sms(text: str, *, now: datetime, zone: ZoneInfo) -> ParsedBalance | None:
    """The balance, data and validity in a carrier's balance SMS; None when it is not one.

    ``now`` (aware) bounds plausible validity dates and completes dates given without a
    year; ``zone`` is the carrier's zone the SMS dates are written in (a date without a
    time means the end of that local day). Never raises on any ``text``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_SMS_CHARS:
        return None
    normal = _normalise(text)
    if len(normal) > MAX_SMS_CHARS:
        return None
    balance, own_balances, other_balances = _balances(normal)
    data_mb, data_spans = _data(normal)
    validity = _validity(normal, now=now, zone=zone, line_fields=own_balances,
                         other_fields=other_balances + data_spans)
    if balance is None and data_mb is None:
        # A date alone is a balance reply only when it is about the account, not a code.
        if validity is None or not (_ACCOUNT_WORDS.search(normal) or own_balances):
            return None
        if _CODE_WORDS.search(normal):
            return None
    return ParsedBalance(balance=balance, data_mb=data_mb, validity_end=validity)


_TYPED_ZERO = re.compile(r"(?:us\$|\$|usd)? ?0*(?:\.0*)? ?(?:us\$|\$|usd)?", re.IGNORECASE)


def parse_typed_balance(text: str) -> Money | None:
    """A balance the user typed: ``1.25``, ``$3``, ``3 USD``, ``០.៥០``. USD only.

    Uses ``parse_money``'s rules; None for anything it refuses, except that a balance of
    zero ("0", "$0.00") is a real reading and is kept.
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    raw = unicodedata.normalize("NFKC", text).translate(_KHMER_DIGIT_TABLE).strip()
    raw = re.sub(r"\s*(?:ដុល្លារ|dollars?)$", " USD", raw, flags=re.IGNORECASE)
    try:
        money = parse_money(raw, "USD")
    except MoneyError as error:
        if error.reason is MoneyError.Reason.ZERO and _TYPED_ZERO.fullmatch(raw):
            return Money.zero("USD")
        return None
    return money if money.currency == "USD" else None
