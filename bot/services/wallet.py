"""The wallet: a balance derived from the ledger, funded through Telegram Payments or by an
operator (cash, bank transfer), and refunds of Telegram Stars payments.

Every credit is one transaction: the payment row (its external id is UNIQUE, so a replayed
update or a repeated operator reference credits nothing), the ledger entry, the audit row
and the receipt in the notifications outbox.

Every invoice is a row (``wallet_invoices``) and its payload names that row, signed with a
key derived from the blind-index key, so a payload we did not make is refused before anyone
pays. A Telegram payment is credited only as the invoice it pays: once, and only when it
paid the invoice's price in the invoice's currency. Any other payment (forged or unknown
payload, another user's invoice, an invoice paid before, a different total or currency) is
not credited: it is recorded as disputed, the admins are told, and Stars are refunded
(refundStarPayment); what cannot be refunded here is held for an admin.
"""

from __future__ import annotations

import enum
import hmac
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.invariants import present
from bot.domain.money import CURRENCIES, Money
from bot.domain.numbers import whole_number
from bot.domain.references import masked_reference
from bot.domain.wallet import EntryKind
from bot.services.notices import Audience, Notice, NoticePart, money_keys, queue, stored
from bot.settings import PaymentsSettings
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.invoices import DisputeRecord, InvoiceRecord, InvoicesRepository
from storage.notifications import NotificationsRepository
from storage.payments import PaymentRecord, PaymentsRepository
from storage.users import UsersRepository
from storage.wallet import Entry, WalletRepository

log = logging.getLogger(__name__)

STARS = "XTR"
# w2:<invoice id>:<mac>. (w1 payloads carried the amount and were not tracked: one could be
# paid any number of times; they are refused now, and a payment of one is disputed.)
PAYLOAD_VERSION = "w2"
_PAYLOAD = re.compile(r"(?P<body>w2:(?P<invoice>[1-9][0-9]{0,17})):(?P<mac>[0-9a-f]{16})")
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
DISPUTE_NOTIFICATION = "payment_disputed"  # admins: a payment was not credited
DISPUTE_HELD_NOTIFICATION = "payment_dispute_held"  # admins: its Stars refund failed
SOURCE_TELEGRAM = "telegram"
SOURCE_OPERATOR = "operator"


@dataclass(frozen=True)
class Movement:
    """One line of the wallet's history as the user sees it."""

    amount: Money  # negative when money left the wallet
    kind: EntryKind
    reference: str | None  # an operator credit's reference
    at: datetime

    @classmethod
    def of(cls, entry: Entry) -> Movement:
        return cls(amount=entry.amount, kind=entry.kind, reference=entry.reference,
                   at=entry.created_at)


@dataclass(frozen=True)
class WalletSummary:
    available: Money  # the ledger's sum: what can be spent now
    held: Money  # set aside for charges in progress (already out of ``available``)
    movements: list[Movement]  # newest first


@dataclass(frozen=True)
class Invoice:
    """What the invoice asks for, and what paying it adds to the wallet."""

    amount: Money  # credited to the wallet
    currency: str  # what Telegram charges: XTR (Stars) or the provider currency
    total_amount: int  # in ``currency`` minor units (whole Stars for XTR)
    invoice_id: int
    payload: str  # signed: w2:<invoice id>:<mac>
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
    ALREADY_PAID = "already_paid"  # this invoice was paid before


class DisputeReason(enum.StrEnum):
    """Why a successful Telegram payment was not credited."""

    FORGED = "forged"  # not an invoice this bot issued
    WRONG_USER = "wrong_user"  # another user's invoice
    ALREADY_PAID = "already_paid"  # the invoice was credited before, by another payment
    MISMATCH = "mismatch"  # paid a total or currency that is not the invoice's


# --- the notifications (rendered by handlers/wallet.py) -----------------------------------

_AMOUNT = money_keys("amount_minor", "currency")
_BALANCE = money_keys("balance_minor", "currency")  # the wallet's, after the change


@dataclass(frozen=True, kw_only=True)
class WalletCredit(Notice):
    """The receipt of a credit: a Telegram payment (what was paid, the end of its charge
    id: the outbox is plain text) or an operator's credit (the end of its reference)."""

    KIND: ClassVar[str] = CREDIT_NOTIFICATION
    source: str  # SOURCE_TELEGRAM or SOURCE_OPERATOR
    amount: Money = field(metadata=_AMOUNT)
    balance: Money = field(metadata=_BALANCE)
    paid: Money | None = field(
        default=None, metadata=money_keys("paid_minor", "paid_currency", omit_none=True))
    charge_shown: str | None = field(default=None, metadata=stored(omit_none=True))
    reference_shown: str | None = field(default=None, metadata=stored(omit_none=True))
    payment_id: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class WalletRefund(Notice):
    """A Stars payment was returned: the Stars go back, the credit leaves the wallet."""

    KIND: ClassVar[str] = REFUND_NOTIFICATION
    amount: Money = field(metadata=_AMOUNT)
    balance: Money = field(metadata=_BALANCE)
    paid: Money | None = field(metadata=money_keys("paid_minor", "paid_currency"))
    payment_id: int
    at: datetime


@dataclass(frozen=True, kw_only=True)
class DisputedPayment(NoticePart):
    """A payment that was not credited, as the admins are told of it."""

    dispute_id: int
    user_id: int
    reason: DisputeReason
    # As Telegram said: the currency may be none we know, so it is no Money.
    paid_minor: int
    paid_currency: str
    invoice_id: int | None
    invoice_price: Money | None = field(
        metadata=money_keys("invoice_price_minor", "invoice_price_currency"))


@dataclass(frozen=True, kw_only=True)
class PaymentDisputed(Notice):
    """Admins: a Telegram payment was taken but not credited."""

    KIND: ClassVar[str] = DISPUTE_NOTIFICATION
    dispute: DisputedPayment
    refunding: bool  # its Stars are being refunded
    audience: Audience = Audience.ADMIN
    at: datetime


@dataclass(frozen=True, kw_only=True)
class PaymentDisputeHeld(Notice):
    """Admins: the automatic Stars refund of a disputed payment failed."""

    KIND: ClassVar[str] = DISPUTE_HELD_NOTIFICATION
    dispute: DisputedPayment
    audience: Audience = Audience.ADMIN
    at: datetime


class PaymentsUnavailable(ValueError):
    """No way to take this payment with the current settings."""


class PaymentNotRecognised(ValueError):
    """A successful payment with no usable charge id: nothing to credit or refund by."""

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
class Disputed:
    """A payment that was not credited (see DisputeReason)."""

    dispute_id: int
    user_id: int
    reason: DisputeReason
    paid_minor: int  # as Telegram said, in ``paid_currency`` minor units
    paid_currency: str
    refunded: bool  # Stars returned to the user; False: held for an admin


class InvoiceAlreadyPaid(RuntimeError):
    """An invoice locked as unpaid turned out paid: the credit is rolled back (a bug)."""


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
    DISPUTE_REFUNDED = "dispute_refunded"  # a payment never credited was returned


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
                 cipher: FieldCipher, *, currency: str = "USD",
                 admin_chat_ids: Sequence[int] = ()) -> None:
        if currency not in OFFERED_MAJOR:
            raise ValueError(f"a wallet is kept in USD or KHR, not {currency}")
        self._db = db
        self._clock = clock
        self._payments = payments
        self._cipher = cipher
        self._admins = tuple(dict.fromkeys(admin_chat_ids))
        self.currency = currency

    # --- reading ------------------------------------------------------------------------

    async def summary(self, user_id: int, *, limit: int = MOVEMENTS_SHOWN) -> WalletSummary:
        async with self._db.read() as conn:
            wallet = WalletRepository(conn)
            return WalletSummary(available=await wallet.available(user_id, self.currency),
                                 held=await wallet.held(user_id, self.currency),
                                 movements=[Movement.of(entry) for entry in
                                            await wallet.entries(user_id, self.currency,
                                                                 self._cipher, limit)])

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

    async def issue_invoice(self, user_id: int, amount: Money) -> Invoice:
        """Records the invoice that adds ``amount`` to ``user_id``'s wallet at today's price;
        its payload names the record and is signed."""
        if not 0 < amount.minor <= CURRENCIES[amount.currency].max_minor:
            raise PaymentsUnavailable(f"{amount.plain()} is not an amount the wallet takes")
        price = self.price_of(amount)
        now = self._clock.now()
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            invoice_id = await InvoicesRepository(conn, self._cipher).create(
                user_id=user_id, amount=amount, price=price, now=now)
        body = f"{PAYLOAD_VERSION}:{invoice_id}"
        token = self._payments.provider_token
        return Invoice(amount=amount, currency=price.currency, total_amount=price.minor,
                       invoice_id=invoice_id, payload=f"{body}:{self._mac(body)}",
                       provider_token=None if token is None else token.get_secret_value())

    async def validate_pre_checkout(self, user_id: int, payload: str, currency: str,
                                    total_amount: int) -> PaymentProblem | None:
        """None when the query may be answered ok; otherwise why it must be refused."""
        invoice_id = self._read_payload(payload)
        invoice = None
        if invoice_id is not None:
            async with self._db.read() as conn:
                invoice = await InvoicesRepository(conn, self._cipher).get(invoice_id)
        # The same rules that dispute a payment refuse its pre-checkout.
        reason = _dispute_reason(invoice, user_id, currency, total_amount)
        if reason is not None:
            return _REFUSAL_OF[reason]
        invoice = present(invoice, "an invoice when nothing is disputed")
        try:
            today = self.price_of(invoice.amount)
        except PaymentsUnavailable:
            return PaymentProblem.UNAVAILABLE
        return PaymentProblem.PRICE_CHANGED if today != invoice.price else None

    async def credit_telegram_payment(self, user_id: int, telegram_charge_id: str,
                                      provider_charge_id: str | None, currency: str,
                                      total_amount: int, payload: str, *,
                                      refunder: StarRefunder | None = None,
                                      ) -> Credited | Disputed | None:
        """Credits the invoice this payment paid, once; None (nothing written) when this
        charge id was seen before - a replayed update.

        A payment that does not pay its invoice exactly (see DisputeReason) is Disputed:
        recorded, the admins told, and - for Stars, with a ``refunder`` - refunded.
        Raises PaymentNotRecognised when there is no usable charge id.
        """
        if not telegram_charge_id or len(telegram_charge_id) > MAX_CHARGE_ID_CHARS:
            raise PaymentNotRecognised(PaymentProblem.FORGED, "no usable charge id")
        invoice_id = self._read_payload(payload)
        paid_currency = currency[:3]
        now = self._clock.now()
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            invoices = InvoicesRepository(conn, self._cipher)
            payments = PaymentsRepository(conn, self._cipher)
            # The invoice's lock first, then the replay check: a concurrent delivery of this
            # same update may have credited it while we waited (READ COMMITTED sees it).
            invoice = (await invoices.get(invoice_id, lock=True)
                       if invoice_id is not None else None)
            if (await payments.by_external_id(telegram_charge_id) is not None
                    or await invoices.dispute_by_charge(telegram_charge_id) is not None):
                return None
            reason = _dispute_reason(invoice, user_id, paid_currency, total_amount)
            if reason is None:
                assert invoice is not None  # narrowing: no reason means an invoice
                return await self._credit_invoice(
                    conn, invoice, telegram_charge_id, provider_charge_id, total_amount,
                    payload, now)
            dispute_id = await invoices.record_dispute(
                user_id=user_id, charge_id=telegram_charge_id,
                provider_charge_id=provider_charge_id or None,
                invoice_id=invoice.id if invoice is not None else None,
                paid_minor=int(total_amount), paid_currency=paid_currency,
                reason=reason.value, now=now)
            if dispute_id is None:
                return None  # disputed by a concurrent delivery of the same update
            refundable = paid_currency == STARS and total_amount > 0 and refunder is not None
            details = {"user_id": user_id, "reason": reason.value,
                       "paid_minor": int(total_amount), "paid_currency": paid_currency,
                       "invoice_id": invoice.id if invoice is not None else None,
                       "invoice_price_minor": invoice.price.minor if invoice else None,
                       "invoice_price_currency": invoice.price.currency if invoice else None}
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="wallet.payment_disputed",
                subject=f"dispute:{dispute_id}", details=details)
            disputed = DisputedPayment(
                dispute_id=dispute_id, user_id=user_id, reason=reason,
                paid_minor=int(total_amount), paid_currency=paid_currency,
                invoice_id=invoice.id if invoice is not None else None,
                invoice_price=invoice.price if invoice is not None else None)
            await self._tell_admins(conn, PaymentDisputed(dispute=disputed,
                                                          refunding=refundable, at=now),
                                    user_id, now)
        log.warning("Payment by user %s not credited (%s): dispute %s", user_id,
                    reason.value, dispute_id)
        refunded = refundable and refunder is not None and await self._refund_dispute(
            dispute_id, user_id, telegram_charge_id, refunder, actor="system")
        if refundable and not refunded:
            async with self._db.write() as conn:
                held_at = self._clock.now()
                await self._tell_admins(conn, PaymentDisputeHeld(dispute=disputed, at=held_at),
                                        user_id, held_at)
        return Disputed(dispute_id=dispute_id, user_id=user_id, reason=reason,
                        paid_minor=int(total_amount), paid_currency=paid_currency,
                        refunded=refunded)

    async def _credit_invoice(self, conn: AsyncConnection, invoice: InvoiceRecord,
                              charge_id: str, provider_charge_id: str | None,
                              total_amount: int, payload: str, now: datetime) -> Credited:
        user_id, amount = invoice.user_id, invoice.amount
        paid = Money(int(total_amount), invoice.price.currency)
        wallet = WalletRepository(conn)
        payment_id = await PaymentsRepository(conn, self._cipher).record_payment(
            user_id=user_id, source=SOURCE_TELEGRAM, external_id=charge_id,
            amount=amount, now=now, actor=f"user:{user_id}",
            provider_charge_id=(provider_charge_id or None), payload=payload,
            memo=f"{int(total_amount)} {invoice.price.currency}")
        if payment_id is None or not await InvoicesRepository(conn, self._cipher).mark_paid(
                invoice.id, payment_id=payment_id, now=now):
            raise InvoiceAlreadyPaid(f"invoice {invoice.id} or charge {charge_id} was "
                                     "recorded while locked")
        balance = await wallet.available(user_id, amount.currency)
        await AuditRepository(conn).record(
            at=now, actor=f"user:{user_id}", action="wallet.payment",
            subject=f"payment:{payment_id}",
            details={"user_id": user_id, "amount_minor": amount.minor,
                     "currency": amount.currency, "invoice_id": invoice.id,
                     "paid_minor": paid.minor, "paid_currency": paid.currency})
        await self._notify(conn, user_id, WalletCredit(
            source=SOURCE_TELEGRAM, amount=amount, balance=balance, paid=paid,
            charge_shown=masked_reference(charge_id), payment_id=payment_id, at=now), now)
        return Credited(payment_id=payment_id, user_id=user_id, amount=amount, balance=balance)

    async def _refund_dispute(self, dispute_id: int, user_id: int, charge_id: str,
                              refunder: StarRefunder, *, actor: str) -> bool:
        """Returns a disputed Stars payment; False (still held) when Telegram did not."""
        try:
            await refunder(user_id, charge_id)
        except Exception:  # refused, or Telegram unreachable: an admin takes it from here
            log.warning("Refund of disputed payment %s failed; held for an admin",
                        dispute_id, exc_info=True)
            return False
        await self._mark_dispute_refunded(dispute_id, user_id, actor)
        return True

    async def _mark_dispute_refunded(self, dispute_id: int, user_id: int, actor: str) -> bool:
        """Records the refund of a held dispute; False when it was recorded before."""
        now = self._clock.now()
        async with self._db.write() as conn:
            recorded = await InvoicesRepository(conn, self._cipher).resolve_dispute(
                dispute_id, status="refunded", actor=actor, now=now)
            if recorded:
                await AuditRepository(conn).record(
                    at=now, actor=actor[:64], action="wallet.dispute_refunded",
                    subject=f"dispute:{dispute_id}", details={"user_id": user_id})
        return recorded

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
            payment_id = await PaymentsRepository(conn, self._cipher).record_payment(
                user_id=user_id, source=SOURCE_OPERATOR, external_id=external_id,
                amount=amount, now=now, actor=actor)
            if payment_id is None:
                # The conflicting row is committed and visible.
                earlier = present(
                    await PaymentsRepository(conn, self._cipher).by_external_id(external_id),
                    f"payment {external_id} that conflicted exists")
                return AlreadyCredited(payment_id=earlier.id, user_id=earlier.user_id,
                                       amount=earlier.amount, created_at=earlier.created_at,
                                       actor=earlier.actor)
            balance = await wallet.available(user_id, amount.currency)
            await AuditRepository(conn).record(
                at=now, actor=actor, action="wallet.credit", subject=f"payment:{payment_id}",
                details={"user_id": user_id, "amount_minor": amount.minor,
                         "currency": amount.currency})  # the reference is in the payment
            await self._notify(conn, user_id, WalletCredit(
                source=SOURCE_OPERATOR, amount=amount, balance=balance,
                reference_shown=masked_reference(reference), payment_id=payment_id, at=now),
                now)
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
            payment = await PaymentsRepository(conn, self._cipher).by_external_id(charge_id)
            if payment is None or payment.source != SOURCE_TELEGRAM:
                dispute = await InvoicesRepository(conn, self._cipher).dispute_by_charge(
                    charge_id)
                if dispute is None:
                    return RefundResult(RefundStatus.NOT_FOUND)
                return await self._refund_held(dispute, refunder, actor)
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

    async def _refund_held(self, dispute: DisputeRecord, refunder: StarRefunder,
                           actor: str) -> RefundResult:
        """An admin's /refund of a disputed payment (it was never credited: the wallet is not
        touched)."""
        base = RefundResult(RefundStatus.NOT_FOUND, user_id=dispute.user_id)
        if dispute.status == "refunded":
            return replace(base, status=RefundStatus.ALREADY_REFUNDED)
        if dispute.paid_currency != STARS or dispute.paid_minor <= 0:
            return replace(base, status=RefundStatus.NOT_STARS)
        base = replace(base, paid=Money(dispute.paid_minor, STARS))
        try:
            await refunder(dispute.user_id, dispute.charge_id)
        except RefundRejected as exc:
            return replace(base, status=RefundStatus.REJECTED, detail=str(exc))
        recorded = await self._mark_dispute_refunded(dispute.id, dispute.user_id, actor)
        return replace(base, status=RefundStatus.DISPUTE_REFUNDED if recorded
                       else RefundStatus.ALREADY_REFUNDED)

    async def note_refunded(self, user_id: int, telegram_charge_id: str) -> bool:
        """Telegram says this payment was refunded (a ``refunded_payment`` message): records
        the refund unless it is recorded already. True when it was recorded now."""
        async with self._db.read() as conn:
            payments = PaymentsRepository(conn, self._cipher)
            payment = await payments.by_external_id(telegram_charge_id)
        if (payment is None or payment.source != SOURCE_TELEGRAM
                or payment.user_id != user_id or payment.refunded_at is not None):
            return False
        recorded, _ = await self._record_refund(payment, _paid(payment), "telegram")
        return recorded

    async def _record_refund(self, payment: PaymentRecord, paid: Money | None,
                             actor: str) -> tuple[bool, Money]:
        now = self._clock.now()
        async with self._db.write() as conn:
            recorded = await PaymentsRepository(conn, self._cipher).record_refund(
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
                await self._notify(conn, payment.user_id, WalletRefund(
                    amount=payment.amount, balance=balance, paid=paid, payment_id=payment.id,
                    at=now), now)
        return recorded, balance

    # --- helpers ------------------------------------------------------------------------

    @staticmethod
    async def _notify(conn: AsyncConnection, user_id: int,
                      notice: WalletCredit | WalletRefund, now: datetime) -> None:
        await queue(NotificationsRepository(conn), notice, user_id=user_id, chat_id=user_id,
                    dedupe_key=f"{notice.KIND}:{notice.payment_id}", now=now)

    def _mac(self, body: str) -> str:
        return self._cipher.blind_index(f"{_MAC_LABEL}|{body}")[:16]

    def _read_payload(self, payload: str | None) -> int | None:
        """The invoice id of a payload this bot signed; None for anything else."""
        match = _PAYLOAD.fullmatch(payload or "")
        if match is None or not hmac.compare_digest(self._mac(match["body"]), match["mac"]):
            return None
        return int(match["invoice"])

    async def _tell_admins(self, conn: AsyncConnection,
                           notice: PaymentDisputed | PaymentDisputeHeld, user_id: int,
                           now: datetime) -> None:
        # notifications.user_id must be a user: the payer is the subject; the message goes
        # to each admin chat.
        for chat_id in self._admins:
            await queue(NotificationsRepository(conn), notice, user_id=user_id,
                        chat_id=chat_id,
                        dedupe_key=f"{notice.KIND}:{notice.dispute.dispute_id}:admin:{chat_id}",
                        now=now)


# A pre-checkout refused for what would make its payment disputed.
_REFUSAL_OF = {DisputeReason.FORGED: PaymentProblem.FORGED,
               DisputeReason.WRONG_USER: PaymentProblem.WRONG_USER,
               DisputeReason.ALREADY_PAID: PaymentProblem.ALREADY_PAID,
               DisputeReason.MISMATCH: PaymentProblem.PRICE_CHANGED}


def _dispute_reason(invoice: InvoiceRecord | None, user_id: int, currency: str,
                    total_amount: int) -> DisputeReason | None:
    """Why a payment does not pay ``invoice`` exactly; None when it does."""
    if invoice is None:
        return DisputeReason.FORGED
    if invoice.user_id != user_id:
        return DisputeReason.WRONG_USER
    if invoice.paid_at is not None:
        return DisputeReason.ALREADY_PAID
    if (currency, total_amount) != (invoice.price.currency, invoice.price.minor):
        return DisputeReason.MISMATCH
    return None


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
    minor = whole_number(amount)
    if minor is None or currency not in CURRENCIES:
        return None
    return Money(minor, currency)
