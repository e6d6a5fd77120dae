"""`topup-bot wallet credit TELEGRAM_USER_ID AMOUNT --reference TEXT`: an operator credits
cash or a bank transfer. The argument parsing is in ``bot.__main__``; the work is here.

Idempotent per reference: running the same command again prints "already credited" and
changes nothing; reusing a reference for another user or amount is refused.
"""

from __future__ import annotations

from datetime import datetime

from bot.domain.money import Money, MoneyError, parse_money
from bot.domain.numbers import whole_number
from bot.services.wallet import (
    MAX_TELEGRAM_USER_ID,
    AlreadyCredited,
    OperatorCreditError,
)
from bot.wiring import Components


class WalletCliError(ValueError):
    """Bad input for a wallet command: one line for the operator, exit status 2."""


def parse_user_id(value: int | str) -> int:
    text = str(value).strip()
    number = whole_number(text)
    if number is None or not 0 < number <= MAX_TELEGRAM_USER_ID:
        raise WalletCliError(f"{text[:40]!r} is not a Telegram user id (a positive number, "
                             "as @userinfobot shows it)")
    return number


def parse_amount(text: str, default_currency: str) -> Money:
    try:
        return parse_money(text, default_currency)
    except MoneyError as exc:
        raise WalletCliError(f"{text[:40]!r} is not an amount ({exc}); write it like 10, "
                             f"10.50 or 40000 KHR") from None


async def wallet_credit(components: Components, user_id: int | str, amount_text: str,
                        reference: str, *, actor: str = "cli") -> str:
    """Credits the wallet once per reference; the line to print. WalletCliError for bad input
    or a reference already used for a different credit."""
    target = parse_user_id(user_id)
    service = components.wallet
    amount = parse_amount(amount_text, components.settings.locale.default_currency)
    try:
        result = await service.credit_operator(target, amount, reference, actor=actor)
    except OperatorCreditError as exc:
        raise WalletCliError(str(exc)) from None
    clean = " ".join(reference.split())
    if isinstance(result, AlreadyCredited):
        when = _when(components, result.created_at)
        if not result.matches(target, amount):
            raise WalletCliError(
                f"reference {clean!r} was already used on {when} to credit "
                f"{result.amount.plain()} to user {result.user_id}: nothing was changed; "
                "use a new reference for a new payment")
        return (f"Already credited on {when}: {result.amount.plain()} to user {target} "
                f"(reference {clean!r}). Nothing was changed.")
    return (f"Credited {result.amount.plain()} to user {target} (reference {clean!r}, payment "
            f"#{result.payment_id}). Wallet balance: {result.balance.plain()}. A receipt is "
            "queued for the user.")


def _when(components: Components, moment: datetime) -> str:
    return moment.astimezone(components.settings.locale.zone).strftime("%Y-%m-%d %H:%M %Z")
