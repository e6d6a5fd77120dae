"""Money: integer minor units, parsing what people type, and locale formatting."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.money import CURRENCIES, Money, MoneyError, format_money, parse_money

Reason = MoneyError.Reason
USD_MAX = CURRENCIES["USD"].max_minor
KHR_MAX_RIELS = CURRENCIES["KHR"].max_minor // 100


# --- parse_money: accepted input -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minor", "currency"),
    [
        ("5", 500, "USD"),
        ("$5", 500, "USD"),
        ("5$", 500, "USD"),
        ("$ 5", 500, "USD"),
        ("5.50", 550, "USD"),
        ("5.5", 550, "USD"),
        ("5.", 500, "USD"),
        ("5.5000", 550, "USD"),
        (".5", 50, "USD"),
        ("0.01", 1, "USD"),
        ("0.10", 10, "USD"),
        ("US$ 12.3", 1230, "USD"),
        ("us$12.30", 1230, "USD"),
        ("usd 5", 500, "USD"),
        ("5 usd", 500, "USD"),
        ("5USD", 500, "USD"),
        ("5.50 USD", 550, "USD"),
        ("  $5  ", 500, "USD"),
        ("1 000", 100_000, "USD"),
        ("1\u00a0000", 100_000, "USD"),  # no-break space as thousands separator
        ("1\u202f000", 100_000, "USD"),  # narrow no-break space
        ("1,000", 100_000, "USD"),
        ("$1,000", 100_000, "USD"),
        ("1000.00", 100_000, "USD"),
        ("20000 KHR", 2_000_000, "KHR"),
        ("20000 khr", 2_000_000, "KHR"),
        ("KHR5", 500, "KHR"),
        ("20,000៛", 2_000_000, "KHR"),
        ("20,000 ៛", 2_000_000, "KHR"),
        ("៛20000", 2_000_000, "KHR"),
        ("20000 riel", 2_000_000, "KHR"),
        ("20000 Riels", 2_000_000, "KHR"),
        ("20000.00 KHR", 2_000_000, "KHR"),  # zero decimals are not decimals
        ("4,000,000៛", 400_000_000, "KHR"),
        ("២០០០០៛", 2_000_000, "KHR"),  # Khmer digits
        ("៥", 500, "USD"),
        ("100 ⭐", 100, "XTR"),
        ("5 xtr", 5, "XTR"),
        ("50 stars", 50, "XTR"),
    ],
)
def test_parse_money_accepts(text: str, minor: int, currency: str) -> None:
    assert parse_money(text) == Money(minor, currency)


def test_parse_money_default_currency_applies_only_without_a_symbol() -> None:
    assert parse_money("20000", default_currency="KHR") == Money(2_000_000, "KHR")
    assert parse_money("$5", default_currency="KHR") == Money(500, "USD")
    assert parse_money("5 XTR", default_currency="KHR") == Money(5, "XTR")


def test_parse_money_unknown_default_currency() -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money("5", default_currency="EUR")
    assert excinfo.value.reason is Reason.UNKNOWN_CURRENCY
    assert excinfo.value.detail == "EUR"


def test_parse_money_largest_amounts_are_accepted() -> None:
    assert parse_money("1000") == Money(USD_MAX, "USD")
    assert parse_money(f"{KHR_MAX_RIELS} KHR") == Money(CURRENCIES["KHR"].max_minor, "KHR")
    assert parse_money("100000 XTR") == Money(CURRENCIES["XTR"].max_minor, "XTR")


# --- parse_money: refused input --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", Reason.EMPTY),
        ("   ", Reason.EMPTY),
        ("\n\t", Reason.EMPTY),
        ("abc", Reason.NOT_A_NUMBER),
        ("$", Reason.NOT_A_NUMBER),
        (".", Reason.NOT_A_NUMBER),
        ("$.", Reason.NOT_A_NUMBER),
        ("5.5.", Reason.NOT_A_NUMBER),
        ("1,00", Reason.NOT_A_NUMBER),
        ("1e3", Reason.NOT_A_NUMBER),
        ("+5", Reason.NOT_A_NUMBER),
        ("$5$", Reason.NOT_A_NUMBER),
        ("USD 5 USD", Reason.NOT_A_NUMBER),
        ("€5", Reason.NOT_A_NUMBER),
        ("-5", Reason.NEGATIVE),
        ("-$5", Reason.NEGATIVE),
        ("$-5", Reason.NEGATIVE),
        ("−5", Reason.NEGATIVE),  # U+2212 minus sign
        ("-5 USD", Reason.NEGATIVE),
        ("-0", Reason.NEGATIVE),
        ("0", Reason.ZERO),
        ("0.00", Reason.ZERO),
        ("$0", Reason.ZERO),
        ("0 KHR", Reason.ZERO),
        ("5.555", Reason.TOO_MANY_DECIMALS),
        ("$0.001", Reason.TOO_MANY_DECIMALS),
        ("20000.5 KHR", Reason.TOO_MANY_DECIMALS),
        ("1.5 XTR", Reason.TOO_MANY_DECIMALS),
        ("1000.01", Reason.TOO_LARGE),
        ("1001", Reason.TOO_LARGE),
        ("12,345.67", Reason.TOO_LARGE),
        ("1 000 000", Reason.TOO_LARGE),
        ("4000001 KHR", Reason.TOO_LARGE),
        ("100001 XTR", Reason.TOO_LARGE),
        ("5 EUR", Reason.UNKNOWN_CURRENCY),
        ("5 gbp", Reason.UNKNOWN_CURRENCY),
        ("x" * 4000, Reason.NOT_A_NUMBER),
        ("5" * 4000, Reason.NOT_A_NUMBER),
        ("$" + "1" * 40, Reason.NOT_A_NUMBER),
    ],
)
def test_parse_money_refuses(text: str, reason: MoneyError.Reason) -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money(text)
    assert excinfo.value.reason is reason
    assert isinstance(excinfo.value, ValueError)


def test_parse_money_none_is_empty() -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money(None)  # type: ignore[arg-type]
    assert excinfo.value.reason is Reason.EMPTY


def test_too_many_decimals_detail_is_the_allowed_number() -> None:
    with pytest.raises(MoneyError) as usd:
        parse_money("5.555")
    with pytest.raises(MoneyError) as khr:
        parse_money("20000.5 KHR")
    assert usd.value.detail == "2"
    assert khr.value.detail == "0"


def test_too_large_detail_names_the_maximum() -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money("1001")
    assert excinfo.value.detail == "1000.00 USD"
    assert str(excinfo.value) == "too_large: 1000.00 USD"


def test_unknown_currency_detail_is_the_code() -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money("5 EUR")
    assert excinfo.value.detail == "EUR"
    assert str(excinfo.value) == "unknown_currency: EUR"


@pytest.mark.parametrize("word", ["dollars", "euros", "bucks"])
def test_a_word_after_the_amount_is_not_cut_into_a_currency_code(word: str) -> None:
    with pytest.raises(MoneyError) as excinfo:
        parse_money(f"5 {word}")
    error = excinfo.value
    assert error.reason is Reason.NOT_A_NUMBER or error.detail == word.upper()


# --- Money value object ----------------------------------------------------------------


def test_comparing_amounts_of_different_currencies_is_refused() -> None:
    assert Money(100, "USD") < Money(200, "USD")
    with pytest.raises(MoneyError):
        assert Money(100, "USD") < Money(200, "KHR")


def test_money_arithmetic_in_one_currency() -> None:
    assert Money(550, "USD") + Money(50, "USD") == Money(600, "USD")
    assert Money(550, "USD") - Money(600, "USD") == Money(-50, "USD")
    assert -Money(550, "USD") == Money(-550, "USD")
    assert Money(1, "USD") < Money(2, "USD")


@pytest.mark.parametrize(
    ("left", "right"),
    [(Money(500, "USD"), Money(500, "KHR")), (Money(500, "KHR"), Money(5, "XTR"))],
)
def test_money_arithmetic_refuses_mixed_currencies(left: Money, right: Money) -> None:
    with pytest.raises(MoneyError) as added:
        _ = left + right
    with pytest.raises(MoneyError) as subtracted:
        _ = left - right
    assert added.value.reason is Reason.CURRENCY_MISMATCH
    assert subtracted.value.reason is Reason.CURRENCY_MISMATCH
    assert added.value.detail == f"{left.currency} vs {right.currency}"


@pytest.mark.parametrize("minor", [5.0, 5.5, True, False, "5", Decimal(5), None])
def test_money_refuses_non_int_minor(minor: object) -> None:
    with pytest.raises(TypeError):
        Money(minor, "USD")  # type: ignore[arg-type]


def test_money_refuses_unknown_currency() -> None:
    with pytest.raises(MoneyError) as excinfo:
        Money(500, "EUR")
    assert excinfo.value.reason is Reason.UNKNOWN_CURRENCY
    assert excinfo.value.detail == "EUR"


def test_money_constructors_and_properties() -> None:
    assert Money.zero("KHR") == Money(0, "KHR")
    assert Money.of_major(5, "USD") == Money(500, "USD")
    assert Money.of_major(20000, "KHR") == Money(2_000_000, "KHR")
    assert Money.of_major(7, "XTR") == Money(7, "XTR")
    assert Money(1, "USD").is_positive
    assert not Money(0, "USD").is_positive
    assert not Money(-1, "USD").is_positive
    assert Money(550, "USD").as_decimal() == Decimal("5.50")
    assert Money(2_000_000, "KHR").as_decimal() == Decimal("20000")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(550, "USD"), "5.50 USD"),
        (Money(500, "USD"), "5.00 USD"),
        (Money(1, "USD"), "0.01 USD"),
        (Money(-5, "USD"), "-0.05 USD"),
        (Money(2_000_000, "KHR"), "20000 KHR"),
        (Money(5, "XTR"), "5 XTR"),
    ],
)
def test_money_plain(money: Money, text: str) -> None:
    assert money.plain() == text
    assert str(money) == text


# --- format_money ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "locale", "text"),
    [
        (Money(550, "USD"), "en", "$5.50"),
        (Money(100_000, "USD"), "en", "$1,000.00"),
        (Money(550, "USD"), "km", "5.50$"),
        (Money(100_000, "USD"), "km", "1,000.00$"),
        (Money(550, "USD"), "zh_Hans", "US$5.50"),
        (Money(100_000, "USD"), "zh_Hans", "US$1,000.00"),
        (Money(2_000_000, "KHR"), "en", "20,000៛"),
        (Money(2_000_000, "KHR"), "km", "20,000៛"),
        (Money(2_000_000, "KHR"), "zh_Hans", "20,000៛"),
        (Money(400_000_000, "KHR"), "en", "4,000,000៛"),
        (Money(1234, "XTR"), "en", "1,234 ⭐"),
    ],
)
def test_format_money(money: Money, locale: str, text: str) -> None:
    assert format_money(money, locale) == text


def test_format_money_defaults_to_english() -> None:
    assert format_money(Money(550, "USD")) == "$5.50"


@pytest.mark.parametrize("locale", ["en", "km", "zh_Hans"])
def test_format_money_shows_digits_and_sign(locale: str) -> None:
    usd = format_money(Money(1234, "USD"), locale)
    khr = format_money(Money(2_500_000, "KHR"), locale)
    assert "12.34" in usd
    assert "$" in usd
    assert "25,000" in khr
    assert khr.endswith("៛")


# --- properties ------------------------------------------------------------------------


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=USD_MAX))
def test_plain_number_round_trips(cents: int) -> None:
    money = Money(cents, "USD")
    assert parse_money(money.plain().removesuffix(" USD")) == money
    assert parse_money(money.plain()) == money


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=USD_MAX))
def test_english_usd_format_round_trips(cents: int) -> None:
    money = Money(cents, "USD")
    assert parse_money(format_money(money, "en")) == money


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=KHR_MAX_RIELS))
def test_english_khr_format_round_trips(riels: int) -> None:
    money = Money.of_major(riels, "KHR")
    assert parse_money(format_money(money, "en")) == money
    assert parse_money(format_money(money, "en"), default_currency="USD").currency == "KHR"


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=USD_MAX), st.sampled_from(["km", "zh_Hans"]))
def test_other_locales_usd_format_round_trips(cents: int, locale: str) -> None:
    money = Money(cents, "USD")
    assert parse_money(format_money(money, locale)) == money


@settings(deadline=None)
@given(st.text())
def test_parse_money_raises_only_money_error(text: str) -> None:
    try:
        money = parse_money(text)
    except MoneyError:
        return
    assert money.is_positive
    assert money.minor <= CURRENCIES[money.currency].max_minor


@settings(deadline=None)
@given(st.text(alphabet="0123456789 ,.$-−៛⭐USDKHRXTRusd\u00a0", max_size=45))
def test_parse_money_on_money_like_text_raises_only_money_error(text: str) -> None:
    try:
        money = parse_money(text)
    except MoneyError:
        return
    assert money.is_positive
    assert money.minor <= CURRENCIES[money.currency].max_minor
