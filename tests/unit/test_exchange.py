"""Riel and dollars at a fixed rate: a QR's price rounds up, what a payment is worth rounds
down, riel are whole, and the bot never credits more than it was paid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.exchange import RIEL, price_in, worth_in
from bot.domain.money import Money

rates = st.integers(min_value=1_000, max_value=10_000)
cents = st.integers(min_value=1, max_value=1_000_00).map(lambda c: Money(c, "USD"))
riel = st.integers(min_value=1, max_value=4_000_000).map(lambda r: Money(r * RIEL, "KHR"))


def test_the_figures_a_user_sees() -> None:
    assert price_in(Money(500, "USD"), "KHR", 4100) == Money.of_major(20_500, "KHR")
    assert price_in(Money.of_major(20_000, "KHR"), "USD", 4100) == Money(488, "USD")  # 4.878
    assert worth_in(Money.of_major(20_500, "KHR"), "USD", 4100) == Money(500, "USD")
    assert worth_in(Money(488, "USD"), "KHR", 4100) == Money.of_major(20_008, "KHR")
    assert worth_in(Money.of_major(40, "KHR"), "USD", 4100) == Money(0, "USD")  # < 1 cent
    assert price_in(Money(499, "USD"), "KHR", 4105) == Money.of_major(20_484, "KHR")  # .4 up


@given(cents, rates)
def test_a_dollar_amount_asked_in_riel_is_worth_at_least_that_amount(
        amount: Money, rate: int) -> None:
    asked = price_in(amount, "KHR", rate)
    assert asked.minor % RIEL == 0  # whole riel
    assert worth_in(asked, "USD", rate) == amount  # paying what was asked adds what was offered
    assert worth_in(Money(asked.minor - RIEL, "KHR"), "USD", rate) <= amount


@given(riel, rates)
def test_a_riel_amount_asked_in_dollars_is_worth_at_least_that_amount(
        amount: Money, rate: int) -> None:
    asked = price_in(amount, "USD", rate)
    assert worth_in(asked, "KHR", rate) >= amount
    assert worth_in(Money(asked.minor - 1, "USD"), "KHR", rate) < amount  # one cent less is short


@given(st.one_of(cents, riel), st.sampled_from(["USD", "KHR"]), rates)
def test_a_payment_is_never_worth_more_than_it_is(paid: Money, currency: str,
                                                  rate: int) -> None:
    worth = worth_in(paid, currency, rate)
    assert worth.minor >= 0 and worth.currency == currency
    back = price_in(worth, paid.currency, rate) if worth.is_positive else Money(0, paid.currency)
    assert back <= paid


@given(st.one_of(cents, riel), rates)
def test_the_same_currency_passes_through(amount: Money, rate: int) -> None:
    assert price_in(amount, amount.currency, rate) == amount
    assert worth_in(amount, amount.currency, rate) == amount


def test_other_currencies_and_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="only riel and US dollars"):
        price_in(Money(5, "XTR"), "USD", 4100)
    with pytest.raises(ValueError, match="above zero"):
        worth_in(Money(500, "USD"), "KHR", 0)
