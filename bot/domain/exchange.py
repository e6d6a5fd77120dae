"""Riel and US dollars at a fixed rate (KHR_PER_USD riel for one dollar), in integer minor
units, never a float.

Two directions, rounded against each other so the bot never gives more than it got:
``price_in`` (what a QR asks for a wallet amount) rounds up, ``worth_in`` (what a payment
that arrived adds to the wallet) rounds down. A riel amount is always whole riel: no bank
app pays a fraction of one.
"""

from __future__ import annotations

from bot.domain.money import CURRENCIES, Money

RIEL: int = 10 ** CURRENCIES["KHR"].exponent  # minor units in one riel
CENT_PER_USD: int = 10 ** CURRENCIES["USD"].exponent
CONVERTIBLE = frozenset({"USD", "KHR"})


def _check(amount: Money, currency: str, khr_per_usd: int) -> None:
    if amount.currency not in CONVERTIBLE or currency not in CONVERTIBLE:
        raise ValueError(f"only riel and US dollars convert, not {amount.currency}->{currency}")
    if khr_per_usd <= 0:
        raise ValueError(f"a rate must be above zero, not {khr_per_usd}")


def _whole_riel_up(minor: int) -> int:
    return -(-minor // RIEL) * RIEL


def price_in(amount: Money, currency: str, khr_per_usd: int) -> Money:
    """What to ask in ``currency`` for ``amount``: rounded up (to the cent, or to whole
    riel)."""
    _check(amount, currency, khr_per_usd)
    if amount.currency == currency:
        return Money(_whole_riel_up(amount.minor), currency) if currency == "KHR" else amount
    if currency == "KHR":  # cents -> riel: riel minor = cents * rate * RIEL / CENT_PER_USD
        return Money(_whole_riel_up(-(-amount.minor * khr_per_usd * RIEL // CENT_PER_USD)),
                     "KHR")
    # riel minor -> cents: cents = riel minor * CENT_PER_USD / (rate * RIEL)
    return Money(-(-amount.minor * CENT_PER_USD // (khr_per_usd * RIEL)), "USD")


def worth_in(amount: Money, currency: str, khr_per_usd: int) -> Money:
    """What ``amount`` is worth in ``currency``: rounded down (to the cent, or to whole
    riel). May be zero for a tiny amount."""
    _check(amount, currency, khr_per_usd)
    if amount.currency == currency:
        return Money(amount.minor // RIEL * RIEL, currency) if currency == "KHR" else amount
    if currency == "KHR":
        riel = amount.minor * khr_per_usd // CENT_PER_USD  # whole riel, rounded down
        return Money(riel * RIEL, "KHR")
    return Money(amount.minor * CENT_PER_USD // (khr_per_usd * RIEL), "USD")
