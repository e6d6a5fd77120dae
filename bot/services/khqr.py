"""Wallet funding by Bakong KHQR: issue a QR, find out that it was paid, credit it once.

A KHQR is made here (bot.domain.khqr) for one wallet amount, with our reference as its bill
number and a 15-minute expiry, and sent as a photo through the outbox. Bakong has no
webhook, so the scheduler's poller (``poll``) asks it, by the MD5 of each open QR, in bulk
calls of 50, with a back-off that grows with the QR's age; "I have paid" (``check_now``)
asks at once. Everything the poller needs lives in ``khqr_invoices`` (``next_check_at``,
leased per worker), so a restart or a second worker carries on where the last one stopped.

A paid KHQR is credited in one transaction: the payment (its external id ``khqr:<md5>`` is
UNIQUE), the ledger entry, the audit row, the receipt and the edit of the QR's message. The
transaction hash's blind index is UNIQUE too, so one Bakong transaction pays one QR. What
arrived is credited, never what the QR asked: an amount that differs is converted at the
QR's rate, rounded down, and the admins are told. A QR is polled past its expiry for a grace
period (a payment made at the last second lands late) and, when paid then, still credited
and said so. A cancelled QR is polled the same way: whoever scanned it may still pay.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.exchange import price_in, worth_in
from bot.domain.invariants import present
from bot.domain.khqr import KhqrRecipient, KhqrRequest, build_payload, payload_md5
from bot.domain.money import Money
from bot.domain.wallet import KhqrState
from bot.gateways.bakong import BULK_LIMIT, BakongTransaction, KhqrChecks
from bot.gateways.http import ProviderRefused, RateLimited
from bot.gateways.topup import GatewayError
from bot.services.charging import Checkpoint
from bot.services.notices import Audience, Notice, money_keys, queue, stored
from bot.services.wallet import OFFERED_MAJOR
from bot.settings import BakongSettings
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.khqr import KhqrRecord, KhqrRepository, PaidRecord
from storage.notifications import NotificationsRepository
from storage.payments import PaymentsRepository
from storage.users import UsersRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)

SOURCE_KHQR = "khqr"
MAX_OPEN_PER_USER = 3  # QRs one user may have open at once (each is polled)
POLL_BATCH = 1_000  # QRs leased per poll run
LEASE = timedelta(minutes=2)
CHECK_NOW_SPACING = timedelta(seconds=3)  # "I have paid" tapped again sooner asks nobody
REFUSED_PAUSE = timedelta(minutes=5)  # after a 401/403: the operator has to act
BUSY_PAUSE = timedelta(seconds=30)  # after a 5xx or no answer
ADMIN_ALERT_EVERY = timedelta(hours=6)

ISSUED_NOTIFICATION = "khqr_issued"
CLOSED_NOTIFICATION = "khqr_closed"
RECEIPT_NOTIFICATION = "khqr_receipt"
DIFFERS_NOTIFICATION = "khqr_amount_differs"
REFUSED_NOTIFICATION = "khqr_checks_refused"


# --- the notifications (rendered by handlers/khqr.py) -------------------------------------

_AMOUNT = money_keys("amount_minor", "currency")
_CREDIT = money_keys("credit_minor", "credit_currency")


@dataclass(frozen=True, kw_only=True)
class KhqrIssued(Notice):
    """The QR itself, as a photo with its amount, recipient and expiry under it."""

    KIND: ClassVar[str] = ISSUED_NOTIFICATION
    khqr_id: int
    payload: str  # the KHQR string the photo encodes (our account and the amount)
    amount: Money = field(metadata=_AMOUNT)  # what the QR asks
    credit: Money = field(metadata=_CREDIT)  # what paying it adds to the wallet
    khr_per_usd: int | None = field(default=None, metadata=stored(omit_none=True))
    recipient: str
    expires_at: datetime
    at: datetime


@dataclass(frozen=True, kw_only=True)
class KhqrClosed(Notice):
    """The QR's message edited: paid, expired ("make a new one") or cancelled."""

    KIND: ClassVar[str] = CLOSED_NOTIFICATION
    khqr_id: int
    state: KhqrState
    amount: Money = field(metadata=_AMOUNT)
    expires_at: datetime
    at: datetime


@dataclass(frozen=True, kw_only=True)
class KhqrReceipt(Notice):
    """The receipt of a paid KHQR: what arrived, what was added, from which bank."""

    KIND: ClassVar[str] = RECEIPT_NOTIFICATION
    khqr_id: int
    payment_id: int | None  # None: the amount was too small to add anything
    asked: Money = field(metadata=money_keys("asked_minor", "asked_currency"))
    paid: Money = field(metadata=money_keys("paid_minor", "paid_currency"))
    credited: Money = field(metadata=money_keys("credited_minor", "currency"))
    balance: Money = field(metadata=money_keys("balance_minor", "currency"))
    khr_per_usd: int | None = field(default=None, metadata=stored(omit_none=True))
    payer_bank: str
    transaction_shown: str  # the short hash: the transaction's first 8 characters
    # Paid after the QR expired or was cancelled (the money arrived: it counts); None: in time.
    paid_after: KhqrState | None = field(default=None, metadata=stored(omit_none=True))
    at: datetime


@dataclass(frozen=True, kw_only=True)
class KhqrAmountDiffers(Notice):
    """Admins: a KHQR was paid with another amount than it asked; what arrived was
    credited."""

    KIND: ClassVar[str] = DIFFERS_NOTIFICATION
    khqr_id: int
    user_id: int
    asked: Money = field(metadata=money_keys("asked_minor", "asked_currency"))
    paid: Money = field(metadata=money_keys("paid_minor", "paid_currency"))
    credited: Money = field(metadata=money_keys("credited_minor", "credited_currency"))
    transaction_shown: str
    audience: Audience = Audience.ADMIN
    at: datetime


@dataclass(frozen=True, kw_only=True)
class KhqrChecksRefused(Notice):
    """Admins: Bakong refuses our checks (the token, or a host outside Cambodia)."""

    KIND: ClassVar[str] = REFUSED_NOTIFICATION
    detail: str
    open_count: int
    audience: Audience = Audience.ADMIN
    at: datetime


# --- what callers get back ------------------------------------------------------------------

class KhqrUnavailable(Exception):
    """KHQR cannot be issued with these settings or for this amount."""


class TooManyOpen(Exception):
    """The user has MAX_OPEN_PER_USER QRs that can still be paid."""


@dataclass(frozen=True)
class KhqrQuote:
    credit: Money  # added to the wallet
    asked: Money  # what the QR asks, in KHQR_CURRENCY
    khr_per_usd: int | None  # shown when the two currencies differ


@dataclass(frozen=True)
class KhqrIssuedTo:
    khqr_id: int
    quote: KhqrQuote
    expires_at: datetime


class CheckOutcome(enum.StrEnum):
    PAID = "paid"  # credited now, by this check
    ALREADY_PAID = "already_paid"
    PENDING = "pending"  # nothing arrived yet; it is still polled
    NO_LONGER_CHECKED = "no_longer_checked"  # past expiry and grace, nothing arrived
    UNAVAILABLE = "unavailable"  # Bakong did not answer; the poller goes on
    NOT_FOUND = "not_found"  # not this user's QR
    CANCELLED = "cancelled"  # cancelled now (``cancel``)


@dataclass(frozen=True)
class KhqrStatus:
    outcome: CheckOutcome
    state: KhqrState | None = None
    expires_at: datetime | None = None
    credited: Money | None = None


@dataclass
class PollReport:
    checked: int = 0
    paid: int = 0
    expired: int = 0
    calls: int = 0
    stopped: int = 0  # past expiry and grace: no longer polled
    paused: bool = False  # a 429 or a refusal's pause was on: Bakong was not asked
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def processed(self) -> int:
        return self.checked


# --- the service --------------------------------------------------------------------------

class KhqrService:
    def __init__(self, db: Database, clock: Clock, settings: BakongSettings,
                 cipher: FieldCipher, checks: KhqrChecks, *, wallet_currency: str,
                 admin_chat_ids: Sequence[int] = (),
                 checkpoint: Checkpoint | None = None) -> None:
        if settings.account_id is None or settings.merchant_name is None:
            raise KhqrUnavailable("KHQR needs BAKONG_ACCOUNT_ID and BAKONG_MERCHANT_NAME")
        self._db = db
        self._clock = clock
        self._settings = settings
        self._cipher = cipher
        self._checks = checks
        self._admins = tuple(dict.fromkeys(admin_chat_ids))
        self.wallet_currency = wallet_currency
        self._recipient = KhqrRecipient(
            account_id=settings.account_id, name=settings.merchant_name,
            city=settings.merchant_city, merchant_id=settings.merchant_id,
            acquiring_bank=settings.acquiring_bank)
        self._paused_until: datetime | None = None  # after a 429 or a refusal
        # Called at the points a crash is tested at (tests/providers/test_khqr_payments.py).
        self._checkpoint = checkpoint

    async def _reached(self, point: str, khqr_id: int) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(point, khqr_id)

    @property
    def recipient_name(self) -> str:
        return self._recipient.name

    @property
    def expiry(self) -> timedelta:
        return timedelta(minutes=self._settings.expiry_minutes)

    # --- issuing ------------------------------------------------------------------------

    def quotes(self) -> list[KhqrQuote]:
        """What /wallet offers to add, and what each QR would ask."""
        return [self.quote(Money.of_major(major, self.wallet_currency))
                for major in OFFERED_MAJOR[self.wallet_currency]]

    def quote(self, credit: Money) -> KhqrQuote:
        currency, rate = self._settings.currency, self._settings.khr_per_usd
        asked = price_in(credit, currency, rate)
        return KhqrQuote(credit=credit, asked=asked,
                         khr_per_usd=rate if currency != credit.currency else None)

    async def issue(self, user_id: int, credit: Money) -> KhqrIssuedTo:
        """A new KHQR that adds ``credit`` (one of ``quotes``) when paid: recorded, polled,
        and its photo queued. TooManyOpen when the user has enough open ones."""
        if credit not in {quote.credit for quote in self.quotes()}:
            raise KhqrUnavailable(f"{credit.plain()} is not an amount KHQR offers")
        quote = self.quote(credit)
        now = self._clock.now()
        expires_at = now + self.expiry
        bill_number = "TB" + secrets.token_hex(6).upper()
        payload = build_payload(KhqrRequest(recipient=self._recipient, amount=quote.asked,
                                            bill_number=bill_number, created_at=now,
                                            expires_at=expires_at))
        async with self._db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            khqrs = KhqrRepository(conn, self._cipher)
            if await khqrs.open_count(user_id, now) >= MAX_OPEN_PER_USER:
                raise TooManyOpen(f"user {user_id} has {MAX_OPEN_PER_USER} open KHQRs")
            khqr_id = await khqrs.create(
                user_id=user_id, md5=payload_md5(payload), bill_number=bill_number,
                payload=payload, amount=quote.asked, credit=quote.credit,
                khr_per_usd=quote.khr_per_usd, now=now, expires_at=expires_at,
                first_check_at=now + self._interval(timedelta(0)))
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="wallet.khqr_issued",
                subject=f"khqr:{khqr_id}",
                details={"user_id": user_id, "asked_minor": quote.asked.minor,
                         "asked_currency": quote.asked.currency,
                         "credit_minor": quote.credit.minor, "currency": quote.credit.currency,
                         "khr_per_usd": quote.khr_per_usd, "bill_number": bill_number})
            await queue(NotificationsRepository(conn), KhqrIssued(
                khqr_id=khqr_id, payload=payload, amount=quote.asked, credit=quote.credit,
                khr_per_usd=quote.khr_per_usd, recipient=self._recipient.name,
                expires_at=expires_at, at=now),
                user_id=user_id, chat_id=user_id, dedupe_key=_issued_key(khqr_id), now=now)
        return KhqrIssuedTo(khqr_id=khqr_id, quote=quote, expires_at=expires_at)

    # --- the user's buttons -------------------------------------------------------------

    async def check_now(self, user_id: int, khqr_id: int) -> KhqrStatus:
        """"I have paid": asks Bakong at once (unless asked a moment ago) and credits what
        arrived."""
        async with self._db.read() as conn:
            record = await KhqrRepository(conn, self._cipher).get(khqr_id)
        if record is None or record.user_id != user_id:
            return KhqrStatus(CheckOutcome.NOT_FOUND)
        if record.state is KhqrState.PAID:
            return _status(CheckOutcome.ALREADY_PAID, record)
        if not record.polled:
            return _status(CheckOutcome.NO_LONGER_CHECKED, record)
        now = self._clock.now()
        if record.last_checked_at is not None and now - record.last_checked_at \
                < CHECK_NOW_SPACING:
            return _status(CheckOutcome.PENDING, record)
        try:
            transaction = await self._checks.transaction(record.md5)
        except GatewayError as error:
            log.warning("KHQR %s: check failed: %s", khqr_id, error)
            return _status(CheckOutcome.UNAVAILABLE, record)
        if transaction is None:
            async with self._db.write() as conn:
                await KhqrRepository(conn, self._cipher).checked(
                    khqr_id, now=now, next_check_at=record.next_check_at)
            return _status(CheckOutcome.PENDING, record)
        credited = await self._settle(record.id, transaction)
        async with self._db.read() as conn:
            after = present(await KhqrRepository(conn, self._cipher).get(khqr_id),
                            f"KHQR {khqr_id}, just settled")
        return KhqrStatus(CheckOutcome.PAID if credited else CheckOutcome.ALREADY_PAID,
                          after.state, after.expires_at, credited)

    async def cancel(self, user_id: int, khqr_id: int) -> KhqrStatus:
        """The user gives the QR up: its message says so. It is still polled until its
        expiry and grace, in case someone pays it anyway."""
        now = self._clock.now()
        async with self._db.write() as conn:
            khqrs = KhqrRepository(conn, self._cipher)
            record = await khqrs.get(khqr_id, lock=True)
            if record is None or record.user_id != user_id:
                return KhqrStatus(CheckOutcome.NOT_FOUND)
            if not await khqrs.close(khqr_id, KhqrState.CANCELLED, now):
                return _status(CheckOutcome.ALREADY_PAID if record.state is KhqrState.PAID
                               else CheckOutcome.NO_LONGER_CHECKED
                               if not record.polled else CheckOutcome.CANCELLED, record)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="wallet.khqr_cancelled",
                subject=f"khqr:{khqr_id}", details={"user_id": user_id})
            await self._queue_closed(conn, record, KhqrState.CANCELLED, now)
        return KhqrStatus(CheckOutcome.CANCELLED, KhqrState.CANCELLED, record.expires_at)

    # --- the poller ---------------------------------------------------------------------

    async def poll(self) -> PollReport:
        """One round: check every QR whose check falls due before the next round, 50 to a
        call, credit the paid ones, then expire what is due. After a 429 (or a refusal) the
        rounds pause (expiry goes on)."""
        report = PollReport()
        now = self._clock.now()
        if self._paused_until is not None and now < self._paused_until:
            report.paused = True
            report.expired = await self._expire_due(now)
            return report
        self._paused_until = None
        # Due within half a round counts as due now: rounds start a little late or early
        # (the scheduler's jitter, the last round's length), and a QR due just after this
        # round began would otherwise wait a whole round more (bench/khqr.py: 40-50 % did).
        due_by = now + timedelta(seconds=self._settings.poll_seconds) / 2
        async with self._db.write() as conn:
            due = await KhqrRepository(conn, self._cipher).claim_due(
                now, due_by, now + LEASE, POLL_BATCH)
        for start in range(0, len(due), BULK_LIMIT):
            chunk = due[start:start + BULK_LIMIT]
            if self._paused_until is not None:
                await self._postpone(chunk, self._paused_until)
                continue
            await self._check_chunk(chunk, report, now)
        # After the checks: a QR paid in its last seconds is credited as paid in time, and
        # its message is not first edited to "expired".
        report.expired = await self._expire_due(self._clock.now())
        return report

    async def _check_chunk(self, chunk: list[KhqrRecord], report: PollReport,
                           round_start: datetime) -> None:
        report.calls += 1
        try:
            paid = await self._checks.paid_among([record.md5 for record in chunk])
        except RateLimited as error:
            self._paused_until = self._clock.now() + error.retry_after
            report.failures["rate_limited"] = report.failures.get("rate_limited", 0) + 1
            log.warning("Bakong: rate limited; polling pauses until %s", self._paused_until)
            await self._postpone(chunk, self._paused_until)
            return
        except ProviderRefused as error:
            self._paused_until = self._clock.now() + REFUSED_PAUSE
            report.failures["refused"] = report.failures.get("refused", 0) + 1
            log.error("Bakong refused the checks: %s", error)
            await self._postpone(chunk, self._paused_until)
            await self._tell_refused(str(error))
            return
        except GatewayError as error:
            report.failures["unavailable"] = report.failures.get("unavailable", 0) + 1
            log.warning("Bakong: checks failed: %s", error)
            await self._postpone(chunk, self._clock.now() + BUSY_PAUSE)
            return
        report.checked += len(chunk)
        for record in chunk:
            if record.md5 not in paid:
                await self._not_yet(record, report, round_start)
                continue
            transaction = paid[record.md5]
            if transaction is None:
                report.calls += 1
                try:
                    transaction = await self._checks.transaction(record.md5)
                except GatewayError as error:
                    log.warning("KHQR %s paid, details not read: %s", record.id, error)
                    await self._postpone([record], self._clock.now() + BUSY_PAUSE)
                    continue
            if transaction is None:  # listed as paid, yet not found: ask again soon
                await self._postpone([record], self._clock.now() + BUSY_PAUSE)
                continue
            if await self._settle(record.id, transaction) is not None:
                report.paid += 1

    async def _not_yet(self, record: KhqrRecord, report: PollReport,
                       round_start: datetime) -> None:
        now = self._clock.now()
        stop_at = record.expires_at + timedelta(minutes=self._settings.grace_minutes)
        # Counted from the round's start, not from this check: the round takes time (the
        # claim, the calls), and "now + interval" would miss the next round by that much and
        # wait a whole round more (bench/khqr.py measured 10 s instead of 5).
        following: datetime | None = round_start + self._interval(
            now - record.created_at, expired=now >= record.expires_at)
        if now >= stop_at:
            following = None
            report.stopped += 1
        elif following is not None and following > stop_at:
            following = stop_at  # one last look at the end of the grace period
        await self._reached("not_yet", record.id)
        async with self._db.write() as conn:
            await KhqrRepository(conn, self._cipher).checked(record.id, now=now,
                                                             next_check_at=following)

    def _interval(self, age: timedelta, *, expired: bool = False) -> timedelta:
        """How long until the next check: often while the payer is likely at it, less often
        as the QR ages, rarely once it has expired."""
        base = timedelta(seconds=self._settings.poll_seconds)
        if expired:
            return base * 12
        if age < timedelta(minutes=3):
            return base
        return base * 2 if age < timedelta(minutes=15) else base * 6

    async def _postpone(self, records: Sequence[KhqrRecord], until: datetime) -> None:
        async with self._db.write() as conn:
            khqrs = KhqrRepository(conn, self._cipher)
            for record in records:
                await khqrs.postpone(record.id, until)

    async def _expire_due(self, now: datetime) -> int:
        async with self._db.write() as conn:
            khqrs = KhqrRepository(conn, self._cipher)
            expired = 0
            for record in await khqrs.expired_open(now, POLL_BATCH):
                if await khqrs.close(record.id, KhqrState.EXPIRED, now):
                    await self._queue_closed(conn, record, KhqrState.EXPIRED, now)
                    expired += 1
        return expired

    # --- crediting ----------------------------------------------------------------------

    async def _settle(self, khqr_id: int, transaction: BakongTransaction) -> Money | None:
        """Credits the transaction that paid this KHQR, once; what was credited, or None
        when it was recorded before (or could not be: the admins are told)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            khqrs = KhqrRepository(conn, self._cipher)
            record = await khqrs.get(khqr_id, lock=True)
            if record is None or record.state is KhqrState.PAID:
                return None
            other = await khqrs.hash_used(transaction.hash)
            if other is not None:
                # Bakong gave a transaction that already paid another QR: never twice.
                log.error("KHQR %s: Bakong transaction %s… already paid KHQR %s; not "
                          "credited again", khqr_id, transaction.hash[:8], other)
                await khqrs.stop_polling(khqr_id)
                await AuditRepository(conn).record(
                    at=now, actor="bakong", action="wallet.khqr_hash_reused",
                    subject=f"khqr:{khqr_id}", details={"other_khqr": other})
                return None
            rate = record.khr_per_usd or self._settings.khr_per_usd
            differs = transaction.amount != record.amount
            credited = record.credit if not differs else worth_in(
                transaction.amount, record.credit.currency, rate)
            payment_id = None
            if credited.is_positive:
                payment_id = await PaymentsRepository(conn, self._cipher).record_payment(
                    user_id=record.user_id, source=SOURCE_KHQR,
                    external_id=f"{SOURCE_KHQR}:{record.md5}", amount=credited, now=now,
                    actor="bakong", provider_charge_id=transaction.hash,
                    memo=f"{transaction.amount.minor} {transaction.amount.currency}")
                if payment_id is None:
                    raise KhqrAlreadyCredited(f"KHQR {khqr_id} was credited while locked")
            paid_after = _paid_after(record, transaction.created_at or now)
            await self._reached("credited", khqr_id)  # inside the transaction
            if not await khqrs.mark_paid(khqr_id, PaidRecord(
                    paid_at=now, transaction_hash=transaction.hash, paid=transaction.amount,
                    payer_bank=transaction.payer_bank, payer_account=transaction.from_account,
                    amount_differs=differs, payment_id=payment_id)):
                raise KhqrAlreadyCredited(f"KHQR {khqr_id} was marked paid while locked")
            balance = await WalletRepository(conn).available(record.user_id, credited.currency)
            await AuditRepository(conn).record(
                at=now, actor="bakong", action="wallet.khqr_paid", subject=f"khqr:{khqr_id}",
                details={"user_id": record.user_id, "payment_id": payment_id,
                         "asked_minor": record.amount.minor,
                         "asked_currency": record.amount.currency,
                         "paid_minor": transaction.amount.minor,
                         "paid_currency": transaction.amount.currency,
                         "credited_minor": credited.minor, "currency": credited.currency,
                         "paid_after": paid_after.value if paid_after else None,
                         "amount_differs": differs})
            shown = transaction.hash[:8]
            notices = NotificationsRepository(conn)
            await queue(notices, KhqrReceipt(
                khqr_id=khqr_id, payment_id=payment_id, asked=record.amount,
                paid=transaction.amount, credited=credited, balance=balance,
                khr_per_usd=record.khr_per_usd, payer_bank=transaction.payer_bank or "?",
                transaction_shown=shown, paid_after=paid_after, at=now),
                user_id=record.user_id, chat_id=record.user_id,
                dedupe_key=f"{RECEIPT_NOTIFICATION}:{khqr_id}", now=now)
            await self._queue_closed(conn, record, KhqrState.PAID, now)
            if differs:
                for chat_id in self._admins:
                    await queue(notices, KhqrAmountDiffers(
                        khqr_id=khqr_id, user_id=record.user_id, asked=record.amount,
                        paid=transaction.amount, credited=credited, transaction_shown=shown,
                        at=now), user_id=record.user_id, chat_id=chat_id,
                        dedupe_key=f"{DIFFERS_NOTIFICATION}:{khqr_id}:admin:{chat_id}",
                        now=now)
        await self._reached("settled", khqr_id)  # committed
        if differs:
            log.warning("KHQR %s asked %s and was paid %s: %s credited, admins told",
                        khqr_id, record.amount.plain(), transaction.amount.plain(),
                        credited.plain())
        return credited

    async def _queue_closed(self, conn: AsyncConnection, record: KhqrRecord,
                            state: KhqrState, now: datetime) -> None:
        await queue(NotificationsRepository(conn), KhqrClosed(
            khqr_id=record.id, state=state, amount=record.amount,
            expires_at=record.expires_at, at=now),
            user_id=record.user_id, chat_id=record.user_id,
            dedupe_key=f"{CLOSED_NOTIFICATION}:{record.id}:{state.value}", now=now,
            replaces=_issued_key(record.id))

    async def _tell_refused(self, detail: str) -> None:
        """Admins hear of a refusal once per ADMIN_ALERT_EVERY (every round would spam)."""
        if not self._admins:
            return
        now = self._clock.now()
        window = int(now.timestamp() // ADMIN_ALERT_EVERY.total_seconds())
        async with self._db.write() as conn:
            count = await KhqrRepository(conn, self._cipher).polled_count()
            for chat_id in self._admins:
                # An admin chat is the outbox row's user (notifications.user_id is a user).
                await UsersRepository(conn).ensure(chat_id, language=None, now=now)
                await queue(NotificationsRepository(conn), KhqrChecksRefused(
                    detail=detail[:300], open_count=count, at=now), user_id=chat_id,
                    chat_id=chat_id, dedupe_key=f"{REFUSED_NOTIFICATION}:{window}:{chat_id}",
                    now=now)


class KhqrAlreadyCredited(RuntimeError):
    """A KHQR locked as unpaid turned out credited: the transaction is rolled back (a bug)."""


def _issued_key(khqr_id: int) -> str:
    return f"{ISSUED_NOTIFICATION}:{khqr_id}"


def _paid_after(record: KhqrRecord, paid_at: datetime) -> KhqrState | None:
    """Expired or cancelled if the payment was made after that, by the transaction's own
    time: a QR marked expired by the round that then finds it paid in its last second was
    paid in time."""
    if paid_at > record.expires_at:
        return KhqrState.EXPIRED
    if record.state is KhqrState.CANCELLED and (record.closed_at is None
                                                or paid_at >= record.closed_at):
        return KhqrState.CANCELLED
    return None


def _status(outcome: CheckOutcome, record: KhqrRecord) -> KhqrStatus:
    credited = None
    if record.state is KhqrState.PAID and record.paid is not None:
        credited = record.credit if not record.amount_differs else None
    return KhqrStatus(outcome, record.state, record.expires_at, credited)
