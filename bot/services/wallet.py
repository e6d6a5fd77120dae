"""The wallet: a balance derived from the ledger, funded through Telegram Payments or by an
operator (cash, bank transfer), and refunds of Telegram Stars payments.

Every credit is one transaction: the payment row (its external id is UNIQUE, so a replayed
update or a repeated operator reference credits nothing), the ledger entry, the audit row
and the receipt in the notifications outbox. Invoice payloads are signed with a key derived
from the blind-index key, so a payload we did not make is refused before anyone pays.
"""

from __future__ import annotations

import enum
import hmac
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.money import CURRENCIES, Money
from bot.settings import PaymentsSettings
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.notifications import NotificationsRepository
from storage.payments import PaymentRecord, PaymentsRepository
from storage.users import UsersRepository
from storage.wallet import Entry, WalletRepository

log = logging.getLogger(__name__)

STARS = "XTR"
PAYLOAD_VERSION = "w1"
_PAYLOAD = re.compile(
    r"(?P<body>w1:(?P<user>[1-9][0-9]{0,17}):(?P<minor>[1-9][0-9]{0,11}):(?P<currency>[A-Z]{3}))"
    r":(?P<mac>[0-9a-f]{16})")
_MAC_LABEL = "wallet-invoice"
MAX_REFERENCE_CHARS = 64
MAX_TELEGRAM_USER_ID = 2**52  # Telegram's ids fit in 52 bits
MAX_CHARGE_ID_CHARS = 150
MOVEMENTS_SHOWN = 5
# What /wallet offers, in whole units of the wallet currency.
OFFERED_MAJOR: dict[str, tuple[int, ...]] = {
    "USD": (5, 10, 20, 50),
    "KHR": (20_000, 40_000, 80_000, 200_000),
}
CREDIT_NOTIFICATION = "wallet_credit"
REFUND_NOTIFICATION = "wallet_refund"
SOURCE_TELEGRAM = "telegram"
SOURCE_OPERATOR = "operator"


@dataclass(frozen=True)
class WalletSummary:
    available: Money  # the ledger's sum: what can be spent now
    held: Money  # set aside for charges in progress (already out of ``available``)
    movements: list[Entry]  # newest first


@dataclass(frozen=True)
class Invoice:
    """What the invoice asks for, and what paying it adds to the wallet."""

    amount: Money  # credited to the wallet
    currency: str  # what Telegram charges: XTR (Stars) or the provider currency
    total_amount: int  # in ``currency`` minor units (whole Stars for XTR)
    payload: str  # signed: w1:<user>:<amount minor>:<currency>:<mac>
    provider_token: str | None  # None for Telegram Stars

    @property
    def price(self) -> Money:
        return Money(self.total_amount, self.currency)


class PaymentProblem(enum.StrEnum):
    """Why a pre-checkout query (or a payment) is refused."""

    FORGED = "forged"  # not a payload this bot signed
    WRONG_USER = "wrong_user"  # signed for another user
    PRICE_CHANGED = "price_changed"  # the invoice's price is not today's price
    UNAVAILABLE = "unavailable"  # payments are not set up for this wallet currency


class PaymentsUnavailable(ValueError):
    """No way to take this payment with the current settings."""


class PaymentNotRecognised(ValueError):
    """A successful payment whose payload we cannot credit (money taken, nothing credited)."""

    def __init__(self, problem: PaymentProblem, detail: str = "") -> None:
        super().__init__(f"{problem.value}{': ' + detail if detail else ''}")
        self.problem = problem


class OperatorCreditError(ValueError):
    """An operator credit refused before anything was written; the message says why."""

    class Reason(enum.Enum):
        BAD_USER = "bad_user"
        BAD_AMOUNT = "bad_amount"
        BAD_CURRENCY = "bad_currency"
        BAD_REFERENCE = "bad_reference"

    def __init__(self, reason: OperatorCreditError.Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Credited:
    payment_id: int
    user_id: int
    amount: Money
    balance: Money  # available right after the credit


@dataclass(frozen=True)
class AlreadyCredited:
    """The reference was credited before; nothing was written this time."""

    payment_id: int
    user_id: int
    amount: Money
    created_at: datetime
    actor: str

    def matches(self, user_id: int, amount: Money) -> bool:
        """True when this is the same credit again (a retry), not a reused reference."""
        return self.user_id == user_id and self.amount == amount


class RefundStatus(enum.StrEnum):
    REFUNDED = "refunded"
    ALREADY_REFUNDED = "already_refunded"
    NOT_FOUND = "not_found"  # no Telegram payment with that charge id
    NOT_STARS = "not_stars"  # paid through a provider: refund it there
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the credited money is spent or held
    REJECTED = "rejected"  # Telegram refused the refund


@dataclass(frozen=True)
class RefundResult:
    status: RefundStatus
    user_id: int | None = None
    amount: Money | None = None  # taken from the wallet
    paid: Money | None = None  # returned to the user by Telegram
    available: Money | None = None  # the wallet after the refund (or when refused)
    detail: str = ""  # Telegram's words when it refused


class RefundRejected(Exception):
    """Telegram refused the refund (not "already refunded", which counts as done)."""


# Returns Stars to the user (Bot API refundStarPayment): raises RefundRejected when Telegram
# refuses, returns normally when the charge was refunded already; (user id, charge id).
StarRefunder = Callable[[int, str], Awaitable[None]]


class WalletService:
    def __init__(self, db: Database, clock: Clock, payments: PaymentsSettings,
                 cipher: FieldCipher, *, currency: str = "USD") -> None:
        if currency not in OFFERED_MAJOR:
            raise ValueError(f"a wallet is kept in USD or KHR, not {currency}")
        self._db = db
        self._clock = clock
        self._payments = payments
        self._cipher = cipher
        self.currency = currency

    # --- reading ------------------------------------------------------------------------

    async def summary(self, user_id: int, *, limit: int = MOVEMENTS_SHOWN) -> WalletSummary:
        async with self._db.read() as conn:
            wallet = WalletRepository(conn)
            return WalletSummary(available=await wallet.available(user_id, self.currency),
                                 held=await wallet.held(user_id, self.currency),
                                 movements=await wallet.entries(user_id, self.currency, limit))

    async def available(self, user_id: int) -> Money:
        async with self._db.read() as conn:
            return await WalletRepository(conn).available(user_id, self.currency)

    # --- Telegram Payments --------------------------------------------------------------

    @property
    def uses_stars(self) -> bool:
        return self._payments.uses_stars

    @property
    def funding_available(self) -> bool:
        """Whether invoices can fund this wallet: Stars are priced per US dollar, and a
        provider charges in PAYMENTS_CURRENCY, which must be the wallet's currency."""
        if self._payments.uses_stars:
            return self.currency == "USD"
        return self._payments.provider_currency == self.currency

    def offered_amounts(self) -> list[Money]:
        return [Money.of_major(major, self.currency) for major in OFFERED_MAJOR[self.currency]]

    def price_of(self, amount: Money) -> Money:
        """What Telegram charges for adding ``amount``: whole Stars rounded up, or the same
        amount through the payment provider."""
        if not self.funding_available or amount.currency != self.currency:
            raise PaymentsUnavailable(f"cannot take payments for a {amount.currency} wallet "
                                      "with the current payment settings")
        if self._payments.uses_stars:
            exponent = CURRENCIES[amount.currency].exponent
            stars = -(-amount.minor * self._payments.stars_per_usd // 10**exponent)
            if stars > CURRENCIES[STARS].max_minor:
                raise PaymentsUnavailable(f"{amount.plain()} would cost {stars} Stars, more "
                                          "than an invoice can ask")
            return Money(stars, STARS)
        return amount

    def invoice_for(self, user_id: int, amount: Money) -> Invoice:
        """The invoice that adds ``amount`` to ``user_id``'s wallet, with a signed payload."""
        if not 0 < amount.minor <= CURRENCIES[amount.currency].max_minor:
            raise PaymentsUnavailable(f"{amount.plain()} is not an amount the wallet takes")
        price = self.price_of(amount)
        body = f"{PAYLOAD_VERSION}:{user_id}:{amount.minor}:{amount.currency}"
        token = self._payments.provider_token
        return Invoice(amount=amount, currency=price.currency, total_amount=price.minor,
                       payload=f"{body}:{self._mac(body)}",
                       provider_token=None if token is None else token.get_secret_value())

    def validate_pre_checkout(self, user_id: int, payload: str, currency: str,
                              total_amount: int) -> PaymentProblem | None:
        """None when the query may be answered ok; otherwise why it must be refused."""
        parsed = self._read_payload(payload)
        if parsed is None:
            return PaymentProblem.FORGED
        owner, amount = parsed
        if owner != user_id:
            return PaymentProblem.WRONG_USER
        try:
            price = self.price_of(amount)
        except PaymentsUnavailable:
            return PaymentProblem.UNAVAILABLE
        if (currency, total_amount) != (price.currency, price.minor):
            return PaymentProblem.PRICE_CHANGED
        return None

    async def credit_telegram_payment(self, user_id: int, telegram_charge_id: str,
                                      provider_charge_id: str | None, currency: str,
                                      total_amount: int, payload: str) -> Credited | None:
        """Credits the amount the signed payload names; None (nothing credited) when this
        charge id was credited before - a replayed update.

        Raises PaymentNotRecognised for a payload we did not sign for this user; Telegram
        only sends successful_payment after our pre-checkout answer, so that means a bug or
        a forged update, and nothing is credited.
        """
        parsed = self._read_payload(payload)
        if parsed is None:
            raise PaymentNotRecognised(PaymentProblem.FORGED)
        owner, amount = parsed
        if owner != user_id:
            raise PaymentNotRecognised(PaymentProblem.WRONG_USER, f"payload is for {owner}")
        if not telegram_charge_id or len(telegram_charge_id) > MAX_CHARGE_ID_CHARS:
            raise PaymentNotRecognised(PaymentProblem.FORGED, "no usable charge id")
        if self.validate_pre_checkout(user_id, payload, currency, total_amount) is not None:
            # Paid at the invoice's price, which pre-checkout accepted moments ago (the
            # rate may have changed since): the payload's amount is what was bought.
            log.warning("Payment %s: %s %s paid for %s, today's price differs",
                        telegram_charge_id, total_amount, currency, amount.plain())
        now = self._clock.now()
        paid = {"paid_minor": int(total_amount), "paid_currency": currency[:3]}
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            wallet = WalletRepository(conn)
            payment_id = await wallet.record_payment(
                user_id=user_id, source=SOURCE_TELEGRAM, external_id=telegram_charge_id,
                amount=amount, now=now, actor=f"user:{user_id}",
                provider_charge_id=(provider_charge_id or None), payload=payload,
                memo=f"{int(total_amount)} {currency[:3]}")
            if payment_id is None:
                return None
            balance = await wallet.available(user_id, amount.currency)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="wallet.payment",
                subject=f"payment:{payment_id}",
                details={"user_id": user_id, "amount_minor": amount.minor,
                         "currency": amount.currency, **paid})
            await self._notify(conn, CREDIT_NOTIFICATION, payment_id, user_id, now, {
                "source": SOURCE_TELEGRAM, "amount_minor": amount.minor,
                "currency": amount.currency, "balance_minor": balance.minor,
                "charge_id": telegram_charge_id, **paid})
        return Credited(payment_id=payment_id, user_id=user_id, amount=amount, balance=balance)

    # --- operator credits ---------------------------------------------------------------

    async def credit_operator(self, user_id: int, amount: Money, reference: str,
                              actor: str) -> Credited | AlreadyCredited:
        """Credits cash or a bank transfer once per ``reference``; the user's row is made
        if they never wrote to the bot. Raises OperatorCreditError for bad input."""
        if isinstance(user_id, bool) or not 0 < user_id <= MAX_TELEGRAM_USER_ID:
            raise OperatorCreditError(OperatorCreditError.Reason.BAD_USER,
                                      f"{user_id} is not a Telegram user id")
        if amount.currency not in OFFERED_MAJOR:
            raise OperatorCreditError(OperatorCreditError.Reason.BAD_CURRENCY,
                                      "wallets are kept in USD or KHR, not "
                                      f"{amount.currency}")
        if not 0 < amount.minor <= CURRENCIES[amount.currency].max_minor:
            raise OperatorCreditError(
                OperatorCreditError.Reason.BAD_AMOUNT,
                f"the amount must be above zero and at most "
                f"{Money(CURRENCIES[amount.currency].max_minor, amount.currency).plain()}")
        reference = clean_reference(reference)
        external_id = f"{SOURCE_OPERATOR}:{reference}"
        actor = actor[:64]
        now = self._clock.now()
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            wallet = WalletRepository(conn)
            payment_id = await wallet.record_payment(
                user_id=user_id, source=SOURCE_OPERATOR, external_id=external_id,
                amount=amount, now=now, actor=actor, memo=reference)
            if payment_id is None:
                earlier = await PaymentsRepository(conn).by_external_id(external_id)
                assert earlier is not None  # the conflicting row is committed and visible
                return AlreadyCredited(payment_id=earlier.id, user_id=earlier.user_id,
                                       amount=earlier.amount, created_at=earlier.created_at,
                                       actor=earlier.actor)
            balance = await wallet.available(user_id, amount.currency)
            await AuditRepository(conn).record(
                at=now, actor=actor, action="wallet.credit", subject=f"payment:{payment_id}",
                details={"user_id": user_id, "amount_minor": amount.minor,
                         "currency": amount.currency, "reference": reference})
            await self._notify(conn, CREDIT_NOTIFICATION, payment_id, user_id, now, {
                "source": SOURCE_OPERATOR, "amount_minor": amount.minor,
                "currency": amount.currency, "balance_minor": balance.minor,
                "reference": reference})
        return Credited(payment_id=payment_id, user_id=user_id, amount=amount, balance=balance)

    # --- refunds ------------------------------------------------------------------------

    async def refund_stars(self, telegram_charge_id: str, *, actor: str,
                           refunder: StarRefunder) -> RefundResult:
        """Returns a Stars payment to the user and takes its credit out of the wallet, once.

        Refused when the credited money was already spent or is held for a charge (the
        wallet would go negative). Telegram is asked first and the refund recorded after, so
        a refusal by Telegram changes nothing; if the process dies in between, the
        ``refunded_payment`` message Telegram sends (see ``note_refunded``) or running the
        refund again (Telegram answers "already refunded") records it.
        """
        charge_id = telegram_charge_id.strip()
        async with self._db.read() as conn:
            payment = await PaymentsRepository(conn).by_external_id(charge_id)
            if payment is None or payment.source != SOURCE_TELEGRAM:
                return RefundResult(RefundStatus.NOT_FOUND)
            paid = _paid(payment)
            available = await WalletRepository(conn).available(payment.user_id,
                                                               payment.amount.currency)
        base = RefundResult(RefundStatus.NOT_FOUND, user_id=payment.user_id,
                            amount=payment.amount, paid=paid, available=available)
        if payment.refunded_at is not None:
            return replace(base, status=RefundStatus.ALREADY_REFUNDED)
        if paid is None or paid.currency != STARS:
            return replace(base, status=RefundStatus.NOT_STARS)
        if available < payment.amount:
            return replace(base, status=RefundStatus.INSUFFICIENT_FUNDS)
        try:
            await refunder(payment.user_id, charge_id)
        except RefundRejected as exc:
            return replace(base, status=RefundStatus.REJECTED, detail=str(exc))
        recorded, balance = await self._record_refund(payment, paid, actor)
        return replace(base, available=balance, status=RefundStatus.REFUNDED if recorded
                       else RefundStatus.ALREADY_REFUNDED)

    async def note_refunded(self, user_id: int, telegram_charge_id: str) -> bool:
        """Telegram says this payment was refunded (a ``refunded_payment`` message): records
        the refund unless it is recorded already. True when it was recorded now."""
        async with self._db.read() as conn:
            payment = await PaymentsRepository(conn).by_external_id(telegram_charge_id)
        if (payment is None or payment.source != SOURCE_TELEGRAM
                or payment.user_id != user_id or payment.refunded_at is not None):
            return False
        recorded, _ = await self._record_refund(payment, _paid(payment), "telegram")
        return recorded

    async def _record_refund(self, payment: PaymentRecord, paid: Money | None,
                             actor: str) -> tuple[bool, Money]:
        now = self._clock.now()
        async with self._db.write() as conn:
            recorded = await PaymentsRepository(conn).record_refund(
                payment, now=now, memo=payment.credit_memo)
            balance = await WalletRepository(conn).available(payment.user_id,
                                                             payment.amount.currency)
            if recorded:
                if balance.minor < 0:
                    log.warning("Refund of payment %s left user %s's wallet at %s",
                                payment.id, payment.user_id, balance.plain())
                await AuditRepository(conn).record(
                    at=now, actor=actor[:64], action="wallet.refund",
                    subject=f"payment:{payment.id}",
                    details={"user_id": payment.user_id, "amount_minor": payment.amount.minor,
                             "currency": payment.amount.currency,
                             "paid_minor": paid.minor if paid else None,
                             "paid_currency": paid.currency if paid else None})
                await self._notify(conn, REFUND_NOTIFICATION, payment.id, payment.user_id,
                                   now, {
                    "amount_minor": payment.amount.minor, "currency": payment.amount.currency,
                    "balance_minor": balance.minor,
                    "paid_minor": paid.minor if paid else None,
                    "paid_currency": paid.currency if paid else None})
        return recorded, balance

    # --- helpers ------------------------------------------------------------------------

    async def _notify(self, conn: AsyncConnection, kind: str, payment_id: int, user_id: int,
                      now: datetime, params: dict[str, Any]) -> None:
        await NotificationsRepository(conn).enqueue(
            user_id=user_id, chat_id=user_id, dedupe_key=f"{kind}:{payment_id}", kind=kind,
            params={**params, "payment_id": payment_id, "at": now.isoformat()}, now=now)

    def _mac(self, body: str) -> str:
        return self._cipher.blind_index(f"{_MAC_LABEL}|{body}")[:16]

    def _read_payload(self, payload: str | None) -> tuple[int, Money] | None:
        """(user id, amount) from a payload this bot signed; None for anything else."""
        match = _PAYLOAD.fullmatch(payload or "")
        if match is None or not hmac.compare_digest(self._mac(match["body"]), match["mac"]):
            return None
        currency = match["currency"]
        minor = int(match["minor"])
        if currency not in OFFERED_MAJOR or minor > CURRENCIES[currency].max_minor:
            return None
        return int(match["user"]), Money(minor, currency)


def clean_reference(reference: str) -> str:
    """An operator's reference with its spaces tidied; OperatorCreditError when unusable."""
    text = " ".join((reference or "").split())
    if not text:
        raise OperatorCreditError(OperatorCreditError.Reason.BAD_REFERENCE,
                                  "a reference is needed (a receipt or transfer number)")
    if len(text) > MAX_REFERENCE_CHARS:
        raise OperatorCreditError(OperatorCreditError.Reason.BAD_REFERENCE,
                                  f"the reference is longer than {MAX_REFERENCE_CHARS} "
                                  "characters")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise OperatorCreditError(OperatorCreditError.Reason.BAD_REFERENCE,
                                  "the reference contains control characters")
    return text


def _paid(payment: PaymentRecord) -> Money | None:
    """What the user paid through Telegram, kept in the credit's memo as "<minor> <CUR>"."""
    amount, _, currency = (payment.credit_memo or "").partition(" ")
    if not amount.isdigit() or currency not in CURRENCIES:
        return None
    return Money(int(amount), currency)
