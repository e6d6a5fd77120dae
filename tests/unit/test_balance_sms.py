"""Parsing carriers' balance SMS (English and Khmer) and balances people type.

The samples follow the shape of the replies Smart (*888#), Cellcard (*124# / *112#) and
Metfone (*097# / *101#) send: a label, a value, often a validity date, in English or in
Khmer with Khmer digits, and promotions around them.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain import balance_sms
from bot.domain.balance_sms import ParsedBalance, parse_balance_sms, parse_typed_balance
from bot.domain.money import Money

PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")  # UTC+7, no daylight saving
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 09:00 in Phnom Penh


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def local(year: int, month: int, day: int, hour: int = 23, minute: int = 59,
          second: int = 59) -> datetime:
    """A Phnom Penh wall-clock time as aware UTC (23:59:59 by default: end of that day)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=PHNOM_PENH).astimezone(UTC)


@dataclass(frozen=True)
class Sample:
    operator: str
    text: str
    expected: ParsedBalance


SAMPLES: dict[str, Sample] = {
    # --- Smart (*888#) ------------------------------------------------------------------
    "smart-en-balance-validity": Sample(
        "smart",
        "Your main balance is $1.25, valid until 25/12/2026. Dial *888# for more services.",
        ParsedBalance(balance=usd(125), validity_end=local(2026, 12, 25))),
    "smart-en-full-with-promo": Sample(
        "smart",
        "Main Balance: 0.52$ Exp: 17-08-2026 23:59:59. Internet: 1,536 MB Exp: 30-11-2026. "
        "Get 10GB for only $1! Dial *345#",
        ParsedBalance(balance=usd(52), data_mb=1536,
                      validity_end=local(2026, 8, 17, 23, 59, 59))),
    "smart-en-balance-only": Sample(
        "smart",
        "Smart: Balance: 3.40 USD. Thank you for using Smart!",
        ParsedBalance(balance=usd(340))),
    "smart-en-promo-first": Sample(
        "smart",
        "🎉 Top up $5 and get 10GB FREE! Your balance: $2.10 | Data: 2.3 GB | "
        "Valid till Dec 25 2026",
        ParsedBalance(balance=usd(210), data_mb=2355, validity_end=local(2026, 12, 25))),
    "smart-km-full": Sample(
        "smart",
        "សមតុល្យ​គណនី​មេ៖ $១.២៥ ផុតកំណត់ ២៥/១២/២០២៦។ ទិន្នន័យ៖ ៥០០MB។ "
        "ចុច *888# ដើម្បីទិញកញ្ចប់។",
        ParsedBalance(balance=usd(125), data_mb=500, validity_end=local(2026, 12, 25))),
    "smart-km-balance-only": Sample(
        "smart",
        "សមតុល្យ​របស់​អ្នក​គឺ ០.៧៥ ដុល្លារ។ សូមអរគុណ!",
        ParsedBalance(balance=usd(75))),
    # --- Cellcard (*124# / *112#) -------------------------------------------------------
    "cellcard-en-usd-prefix-iso-date": Sample(
        "cellcard",
        "Cellcard: Main account: USD 1.25. Expiry date: 2026-12-25.",
        ParsedBalance(balance=usd(125), validity_end=local(2026, 12, 25))),
    "cellcard-en-data-left": Sample(
        "cellcard",
        "Your account balance is USD 4.80, valid to 05.01.2027 and 1.5GB of data remaining. "
        "Enjoy CellcardApp!",
        ParsedBalance(balance=usd(480), data_mb=1536, validity_end=local(2027, 1, 5))),
    "cellcard-en-bonus-beside-main": Sample(
        "cellcard",
        "Main Acc: $0.30 exp 25/12/26 23:59; Bonus: $1.00 exp 01/12/26; Data: 800MB",
        ParsedBalance(balance=usd(30), data_mb=800,
                      validity_end=local(2026, 12, 25, 23, 59, 0))),
    "cellcard-km-full-month-name": Sample(
        "cellcard",
        "គណនីមេ៖ ២.៥០$ មានសុពលភាពរហូតដល់ថ្ងៃទី២៥ ខែធ្នូ ឆ្នាំ២០២៦។ អ៊ីនធឺណិត៖ ១,០២៤MB។",
        ParsedBalance(balance=usd(250), data_mb=1024, validity_end=local(2026, 12, 25))),
    "cellcard-km-balance-only": Sample(
        "cellcard",
        "Cellcard៖ សមតុល្យ ១០.០០ ដុល្លារ",
        ParsedBalance(balance=usd(1000))),
    "cellcard-en-balance-is-zero": Sample(
        "cellcard",
        "Dear customer, your Main Balance is $0.00. Please top up to keep your line active. "
        "Account valid until 2026-12-01 23:59",
        ParsedBalance(balance=usd(0), validity_end=local(2026, 12, 1, 23, 59, 0))),
    # --- Metfone (*097# / *101#) --------------------------------------------------------
    "metfone-en-basic-account": Sample(
        "metfone",
        "Basic account: 1.25$, expire date: 25/12/2026. Data: 2GB. Dial *097# for offers.",
        ParsedBalance(balance=usd(125), data_mb=2048, validity_end=local(2026, 12, 25))),
    "metfone-en-promotion-balance": Sample(
        "metfone",
        "Metfone: Balance: 1.25 USD; Promotion balance: 3.00 USD; Internet: 500MB; "
        "Expire: 25 Dec 2026",
        ParsedBalance(balance=usd(125), data_mb=500, validity_end=local(2026, 12, 25))),
    "metfone-en-data-only": Sample(
        "metfone",
        "You have 700MB of data left, valid until 30/11/2026 23:59. Buy more: *097*1#",
        ParsedBalance(data_mb=700, validity_end=local(2026, 11, 30, 23, 59, 0))),
    "metfone-km-riel": Sample(
        "metfone",
        "លោកអ្នកមានសមតុល្យ ៥.០០០ រៀល ផុតកំណត់ ២៥-១២-២០២៦",
        ParsedBalance(balance=Money(5000_00, "KHR"), validity_end=local(2026, 12, 25))),
    "metfone-km-data-first": Sample(
        "metfone",
        "Metfone: ទិន្នន័យនៅសល់ ៣.៥GB, សមតុល្យ ០.៩៩$, សុពលភាព ៣១/០១/២០២៧",
        ParsedBalance(balance=usd(99), data_mb=3584, validity_end=local(2027, 1, 31))),
    "metfone-en-time-before-date": Sample(
        "metfone",
        "TK Basic balance 2,50$. Expired at 23:59 on 31.12.2026. Send ON to 1234 to get "
        "5GB/day for $0.50",
        ParsedBalance(balance=usd(250), validity_end=local(2026, 12, 31, 23, 59, 0))),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_carrier_samples_are_read(name: str) -> None:
    sample = SAMPLES[name]

    assert parse_balance_sms(sample.text, now=NOW, zone=PHNOM_PENH) == sample.expected


def test_every_operator_has_english_and_khmer_samples() -> None:
    for operator in ("smart", "cellcard", "metfone"):
        texts = [s.text for s in SAMPLES.values() if s.operator == operator]
        assert len(texts) >= 4
        assert any(any("\u1780" <= ch <= "\u17ff" for ch in text) for text in texts)
        assert any(text.isascii() for text in texts)


def test_validity_is_utc_and_a_bare_date_means_the_end_of_that_local_day() -> None:
    parsed = parse_balance_sms("Balance: $1.00, valid until 25/12/2026", now=NOW,
                               zone=PHNOM_PENH)

    assert parsed is not None
    assert parsed.validity_end == datetime(2026, 12, 25, 16, 59, 59, tzinfo=UTC)
    assert parsed.validity_end.utcoffset() == timedelta(0)


def test_the_zone_given_is_the_one_dates_are_read_in() -> None:
    text = "Balance: $1.00, valid until 25/12/2026 10:00"

    in_phnom_penh = parse_balance_sms(text, now=NOW, zone=PHNOM_PENH)
    in_utc = parse_balance_sms(text, now=NOW, zone=ZoneInfo("UTC"))

    assert in_phnom_penh is not None and in_utc is not None
    assert in_phnom_penh.validity_end == datetime(2026, 12, 25, 3, 0, tzinfo=UTC)
    assert in_utc.validity_end == datetime(2026, 12, 25, 10, 0, tzinfo=UTC)


# --- amounts, data and dates in every accepted spelling ---------------------------------


@pytest.mark.parametrize(
    ("amount", "minor"),
    [
        ("$1.25", 125), ("1.25$", 125), ("USD 1.25", 125), ("1.25 USD", 125),
        ("US$1.25", 125), ("1,25$", 125), ("$ 12", 1200), ("0.5 USD", 50),
        ("1.2575$", 125),  # shown to the hundredth of a cent: floored to the cent
        ("1.25", 125),  # no currency after a balance label: dollars
        ("៛", None), ("50 cents", 50), ("$១.២៥", 125), ("១.២៥ ដុល្លារ", 125),
        ("$2,000.00", None),  # above any prepaid balance: a misread, not a reading
        ("-$1.25", None), ("100 min", None), ("3 SMS", None),
    ],
)
def test_balance_amounts(amount: str, minor: int | None) -> None:
    parsed = parse_balance_sms(f"Balance: {amount}", now=NOW, zone=PHNOM_PENH)

    if minor is None:
        assert parsed is None
    else:
        assert parsed == ParsedBalance(balance=usd(minor))


def test_riel_balances_are_whole_riel() -> None:
    assert parse_balance_sms("Balance: 20,000 KHR", now=NOW, zone=PHNOM_PENH) == \
        ParsedBalance(balance=Money(20_000_00, "KHR"))
    assert parse_balance_sms("សមតុល្យ ៤០០០៛", now=NOW, zone=PHNOM_PENH) == \
        ParsedBalance(balance=Money(4_000_00, "KHR"))


@pytest.mark.parametrize(
    ("data", "mb"),
    [
        ("1.5GB", 1536), ("1,536 MB", 1536), ("500MB", 500), ("2.3 GB", 2355),
        ("1,5 GB", 1536), ("512.75MB", 512), ("2048 KB", 2), ("១០ GB", 10240),
        ("៥០០ មេហ្គាបៃ", 500), ("2 gigabytes", 2048), ("0MB", 0),
    ],
)
def test_data_amounts(data: str, mb: int) -> None:
    assert parse_balance_sms(f"Data: {data}", now=NOW, zone=PHNOM_PENH) == \
        ParsedBalance(data_mb=mb)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("25/12/2026", local(2026, 12, 25)),
        ("25-12-2026", local(2026, 12, 25)),
        ("2026-12-25", local(2026, 12, 25)),
        ("25.12.2026", local(2026, 12, 25)),
        ("25/12/26", local(2026, 12, 25)),
        ("Dec 25 2026", local(2026, 12, 25)),
        ("December 25, 2026", local(2026, 12, 25)),
        ("25 Dec 2026", local(2026, 12, 25)),
        ("25-Dec-2026", local(2026, 12, 25)),
        ("25/12/2026 23:59", local(2026, 12, 25, 23, 59, 0)),
        ("25/12/2026 08:30:15", local(2026, 12, 25, 8, 30, 15)),
        ("2026-12-25 at 11:00 pm", local(2026, 12, 25, 23, 0, 0)),
        ("25/12", local(2026, 12, 25)),  # no year: the coming 25 December
        ("05/01", local(2027, 1, 5)),  # ... which may be next year's
        ("12/25/2026", local(2026, 12, 25)),  # month first only where day first cannot be
        ("២៥ ធ្នូ ២០២៦", local(2026, 12, 25)),
        ("31/02/2026", None),  # no such day
        ("25/12/2099", None),  # too far ahead to be a prepaid line's validity
        ("25/12/2020", None),  # too long ago
    ],
)
def test_validity_dates(written: str, expected: datetime | None) -> None:
    parsed = parse_balance_sms(f"Balance: $1.00, expires {written}", now=NOW,
                               zone=PHNOM_PENH)

    assert parsed is not None
    assert parsed.balance == usd(100)
    assert parsed.validity_end == expected


def test_an_expired_line_keeps_its_past_validity() -> None:
    parsed = parse_balance_sms("Your line expired on 01/11/2026. Balance: $0.40", now=NOW,
                               zone=PHNOM_PENH)

    assert parsed == ParsedBalance(balance=usd(40), validity_end=local(2026, 11, 1))


def test_account_validity_alone_is_a_reading() -> None:
    parsed = parse_balance_sms("Your account is valid until 25/12/2026.", now=NOW,
                               zone=PHNOM_PENH)

    assert parsed == ParsedBalance(validity_end=local(2026, 12, 25))


def test_main_balance_wins_over_a_bonus_written_first() -> None:
    parsed = parse_balance_sms("Bonus balance: $5.00 exp 01/12/2026. Main balance: $0.80 "
                               "exp 20/12/2026.", now=NOW, zone=PHNOM_PENH)

    assert parsed == ParsedBalance(balance=usd(80), validity_end=local(2026, 12, 20))


def test_data_validity_is_not_taken_for_the_lines_when_the_balance_has_its_own() -> None:
    parsed = parse_balance_sms("Data: 1GB valid until 30/11/2026. Balance: $2.00 valid "
                               "until 10/01/2027.", now=NOW, zone=PHNOM_PENH)

    assert parsed == ParsedBalance(balance=usd(200), data_mb=1024,
                                   validity_end=local(2027, 1, 10))


# --- what is not a balance message ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "a" * 4000,
        "Balance: $1.25 " + "x" * 4000,
        "😀🎉👍💸📱",
        "Your Smart verification code is 482913. It expires in 5 minutes. Do not share it.",
        "ABA: 482913 is your OTP code, valid until 10:35 25/11/2026.",
        "Top up $5 and get 10GB FREE data! Offer valid until 31/12/2026. Dial *888# to "
        "check your balance.",
        "បញ្ចូលលុយ ៥ ដុល្លារ ទទួលបានទិន្នន័យ ១០GB ឥតគិតថ្លៃ!",
        "Buy Data 5GB for $1. Reply YES to subscribe.",
        "Your balance is low. Top up now with ABA Pay!",
        "Your account 001 234 567 has been credited USD 20.00",
        "Meeting at 25/12/2026 10:00, bring $5",
        "1.25",
        "$1.25",
        "Balance:",
        "Balance: 25/12/2026",
    ],
)
def test_non_balance_messages_are_refused(text: str) -> None:
    assert parse_balance_sms(text, now=NOW, zone=PHNOM_PENH) is None


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_balance_sms("Balance: $1", now=datetime(2026, 1, 1), zone=PHNOM_PENH)


def test_a_parsed_balance_says_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ParsedBalance()
    with pytest.raises(ValueError, match="UTC"):
        ParsedBalance(validity_end=datetime(2026, 1, 1, tzinfo=PHNOM_PENH))


# --- never raises, never floats ---------------------------------------------------------

SMS_ALPHABET = st.sampled_from([
    *"0123456789០១២៣៤៥៦៧៨៩ $៛.,:/-–៖។\n\u200babcdeghilmnoprstuvxyBDGMKUSz",
    "balance", "Main", "data", "Internet", "valid until", "exp", "GB", "MB", "USD",
    "សមតុល្យ", "ទិន្នន័យ", "ផុតកំណត់", "មានសុពលភាព", "ដុល្លារ", "រៀល", "ធ្នូ", "Dec",
    "23:59", "25/12/2026", "2026-12-25", "bonus", "code", "am", "pm",
])


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    result = parse_balance_sms(text, now=NOW, zone=PHNOM_PENH)

    assert result is None or isinstance(result, ParsedBalance)


@settings(deadline=None, max_examples=500)
@given(st.lists(SMS_ALPHABET, max_size=40).map("".join),
       st.sampled_from([PHNOM_PENH, ZoneInfo("UTC"), ZoneInfo("America/Los_Angeles")]))
def test_sms_like_text_gives_integers_and_aware_utc_or_nothing(text: str,
                                                                zone: ZoneInfo) -> None:
    result = parse_balance_sms(text, now=NOW, zone=zone)

    if result is None:
        return
    assert result.balance is not None or result.data_mb is not None or \
        result.validity_end is not None
    if result.balance is not None:
        assert type(result.balance.minor) is int
        assert result.balance.minor >= 0
    if result.data_mb is not None:
        assert type(result.data_mb) is int
        assert result.data_mb >= 0
    if result.validity_end is not None:
        assert result.validity_end.utcoffset() == timedelta(0)


def test_the_parser_source_has_no_floats() -> None:
    tree = ast.parse(inspect.getsource(balance_sms))
    float_literals = [node for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, float)]
    float_calls = [node for node in ast.walk(tree)
                   if isinstance(node, ast.Name) and node.id == "float"]
    true_divisions = [node for node in ast.walk(tree)
                      if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)]

    assert float_literals == []
    assert float_calls == []
    assert true_divisions == []


# --- typed balances ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "minor"),
    [
        ("1.25", 125), ("$3", 300), ("3 USD", 300), ("3usd", 300), ("  $ 0.50 ", 50),
        ("1.25$", 125), ("១.២៥", 125), ("២ ដុល្លារ", 200), ("＄３", 300),
        ("0", 0), ("$0.00", 0),  # an empty line is a real reading
    ],
)
def test_typed_balances(typed: str, minor: int) -> None:
    assert parse_typed_balance(typed) == usd(minor)


@pytest.mark.parametrize(
    "typed",
    ["", "hello", "-1", "1.255", "20000 KHR", "5 XTR", "$2000", "1.2.3", "0 KHR",
     "Balance: $1.25", "x" * 4000],
)
def test_typed_balances_refused(typed: str) -> None:
    assert parse_typed_balance(typed) is None


@settings(deadline=None)
@given(st.text())
def test_typed_balance_never_raises(text: str) -> None:
    result = parse_typed_balance(text)

    assert result is None or (result.currency == "USD" and type(result.minor) is int)
