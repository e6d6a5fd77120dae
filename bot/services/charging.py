"""Charging: approval requests, approvals, holds, submission to the provider, recovery.

A charge is created once per cause (its UNIQUE idempotency key) and moves through the state
machine of ``bot.domain.charges``; every move is one transaction with its audit row and the
message it causes (the notifications outbox), and is a compare-and-set on the state read,
so a second tap, a second worker or a replayed update finds the move already made.

A line has at most one open charge (awaiting approval, approved or submitted): a second
trigger - "Top up now" while a rule's request waits, a rule while a top-up is in flight -
writes nothing and is pointed at the open one (``ChargesRepository.create`` checks; a
partial unique index is the backstop for concurrent creations).

The provider is never called inside a transaction, and never blind:

* ``approved -> submitted`` (attempts + 1) is committed *before* the provider is called, so
  a crash after it is recovered by looking the reference up, not by sending again;
* an unknown outcome (timeout, a refused duplicate reference, a crash) is looked up by our
  reference; only when the provider says it never saw the reference is it sent again,
  with exponential back-off, at most ``RetryPolicy.max_attempts`` times; then it fails and
  the hold is released, and the user and the admins are told why;
* a pending top-up is looked up every ``poll_interval`` until it settles.

Nothing here sleeps: what is due next is a ``next_attempt_at`` in the database, worked by
``process_due`` (a repeating job) under a lease, so several workers never work one charge.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.invariants import holds, present
from bot.domain.money import CURRENCIES, Money, MoneyError
from bot.domain.operators import MIN_AIRTIME_USD_CENTS
from bot.domain.products import Product
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.references import masked_reference
from bot.domain.rules import Approval, RuleError, RuleStatus, Trigger, charge_amount
from bot.gateways.simulated_catalog import PRODUCTS
from bot.gateways.topup import (
    DuplicateReference,
    GatewayError,
    GatewayTimeout,
    TopUpProvider,
    TopUpRequest,
    TopUpResult,
    TopUpStatus,
    TryLater,
)
from bot.services.catalog import CatalogService
from storage.audit import AuditRepository
from storage.charges import (
    ChargeRecord,
    ChargesRepository,
    Creation,
    ProviderMoney,
    lock_wallet_of,
)
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.notifications import NotificationsRepository
from storage.readings import ReadingsRepository
from storage.rules import RuleRecord, RulesRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)

DEFAULT_ZONE = ZoneInfo("Asia/Phnom_Penh")
TOPUP_CURRENCY = "USD"  # Cambodian prepaid airtime is sold in US dollars
MAX_NONCE_CHARS = 80

# Notification kinds this service queues (rendered by handlers/approvals.py).
APPROVAL_REQUEST = "approval_request"
RECEIPT = "receipt"
CHARGE_FAILED = "charge_failed"
CHARGE_PROCESSING = "charge_processing"
CHARGE_EXPIRED = "charge_expired"
CHARGE_STUCK = "charge_stuck"  # admins: the provider cannot say what became of a top-up

# Why a charge failed (failure_reason); the renderer explains each to the user.
NOT_ACCEPTED = "not_accepted"  # the provider never took it, after every retry
LINE_UNAVAILABLE = "line_unavailable"  # the line was unbound or changed hands meanwhile

Checkpoint = Callable[[str, int], Awaitable[None]]


class ApprovalReason(enum.StrEnum):
    """Why a charge waits for the user's button."""

    MANUAL = "manual"  # the user asked for it ("Top up now")
    ASK = "ask"  # the rule asks before every charge
    OVER_CAP = "over_cap"  # an automatic rule would go over its monthly cap
    INSUFFICIENT_FUNDS = "insufficient_funds"  # automatic, but the wallet is short


class RequestProblem(enum.StrEnum):
    NOTHING_TO_BUY = "nothing_to_buy"
    BOTH_AMOUNT_AND_PLAN = "both_amount_and_plan"
    UNKNOWN_PLAN = "unknown_plan"  # not in the catalog of the line's operator
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    AMOUNT_TOO_SMALL = "amount_too_small"
    AMOUNT_TOO_LARGE = "amount_too_large"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again (tenacity's wait_exponential, as timestamps: nothing sleeps)."""

    max_attempts: int = 4  # sends of one reference to the provider, at most
    first_delay: timedelta = timedelta(seconds=30)
    multiplier: float = 2.0
    max_delay: timedelta = timedelta(minutes=30)
    poll_interval: timedelta = timedelta(seconds=30)  # how often a pending top-up is looked up
    # How long "come back later" refusals (TryLater) use up no attempt of a charge.
    try_later_for: timedelta = timedelta(minutes=30)
    # How long a worker owns a charge it is working on. Longer than any provider call: a
    # sweep never looks up (and so never re-sends) a charge whose call may be in flight.
    lease: timedelta = timedelta(minutes=2)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th try: first_delay * multiplier^(attempts-1),
        at most max_delay."""
        exponent = min(max(0, attempts - 1), 32)
        seconds = self.first_delay.total_seconds() * self.multiplier ** exponent
        return min(self.max_delay, timedelta(seconds=seconds))


# --- outcomes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NotYourLine:
    """The line is unknown, someone else's or unbound: nothing was written."""


@dataclass(frozen=True)
class Invalid:
    problem: RequestProblem


@dataclass(frozen=True)
class Requested:
    charge: ChargeRecord
    created: bool  # False: this nonce asked before (a double tap): that earlier charge


@dataclass(frozen=True)
class AlreadyOpen:
    """The line already has an open charge (awaiting approval or in flight): nothing was
    written; the user is pointed at that one. A line has one open charge at a time."""

    charge: ChargeRecord
    line: str  # how the line is shown
    # The open charge's approval request as it stands (today's wallet balance), to show it
    # again with its buttons; None when it is in flight (approved or submitted).
    request: dict[str, Any] | None
    message_id: int | None = None  # the approval request in the chat, once it was sent

    @property
    def awaits_approval(self) -> bool:
        return self.charge.state is ChargeState.AWAITING_APPROVAL


@dataclass(frozen=True)
class NotYours:
    """Unknown charge or someone else's: nothing done, nothing revealed."""


@dataclass(frozen=True)
class AlreadyHandled:
    """The charge is past the question (approved before, declined, expired, settled)."""

    charge: ChargeRecord

    @property
    def state(self) -> ChargeState:
        return self.charge.state


@dataclass(frozen=True)
class InsufficientFunds:
    """The wallet cannot cover the charge: it still awaits approval; nothing was held."""

    charge: ChargeRecord
    available: Money
    request: dict[str, Any]  # the approval request's params, with today's wallet balance


@dataclass(frozen=True)
class PriceChanged:
    """The plan costs more than when it was asked for: the charge now asks for the new
    price and still awaits approval; nothing was held (never charged silently)."""

    charge: ChargeRecord  # with the new amount
    was: Money
    request: dict[str, Any]  # the approval request as it stands now


@dataclass(frozen=True)
class Approved:
    charge: ChargeRecord  # as it is after the submission: succeeded, submitted or failed


@dataclass(frozen=True)
class Declined:
    charge: ChargeRecord


@dataclass(frozen=True)
class RuleCharge:
    charge: ChargeRecord  # after the submission when it went ahead automatically
    created: bool  # False: this period or episode was charged before (that charge)
    approval: ApprovalReason | None  # why it waits for the user; None: it went ahead


class SkipReason(enum.StrEnum):
    RULE_INACTIVE = "rule_inactive"
    LINE_UNAVAILABLE = "line_unavailable"
    INVALID = "invalid"  # the rule no longer prices (its plan left the catalog)
    # The line has another open charge (awaiting approval or in flight): nothing was
    # written; the scheduler tries the run again once that charge is closed.
    LINE_BUSY = "line_busy"


@dataclass(frozen=True)
class RuleSkipped:
    reason: SkipReason
    open_charge: ChargeRecord | None = None  # LINE_BUSY: the line's open charge


@dataclass(frozen=True)
class ReconcileReport:
    looked_up: int = 0
    settled: int = 0  # found final at the provider and settled here
    pending: int = 0
    resent_or_failed: int = 0  # never reached the provider: sent now, or failed for good
    left_for_later: int = 0  # another worker's lease is still running
    submitted: int = 0  # approved charges whose submission never happened
    errors: list[int] = field(default_factory=list)


class _LookupFailed:
    """The provider could not answer a look-up: we still do not know."""


LOOKUP_FAILED = _LookupFailed()
Lookup = TopUpResult | None | _LookupFailed


def _provider_money(result: TopUpResult) -> ProviderMoney | None:
    """The provider's cost, fee and discount, kept when they share one currency."""
    reported = [m for m in (result.provider_cost, result.provider_fee,
                            result.provider_discount) if m is not None]
    if not reported or len({m.currency for m in reported}) != 1:
        return None
    return ProviderMoney(
        currency=reported[0].currency,
        cost_minor=result.provider_cost.minor if result.provider_cost else None,
        fee_minor=result.provider_fee.minor if result.provider_fee else None,
        discount_minor=result.provider_discount.minor if result.provider_discount else None)


def rule_charge_key(rule_id: int, *, period_key: str | None = None,
                    episode: int | str | None = None) -> str:
    """The idempotency key of one run of a rule: rule + calendar period, or rule + episode
    (a threshold crossing, or the validity end a keep-alive rule tops up before)."""
    if (period_key is None) == (episode is None):
        raise ValueError("give a period_key or an episode")
    key = (f"rule:{rule_id}:{period_key}" if period_key is not None
           else f"rule:{rule_id}:episode:{episode}")
    if len(key) > 128:
        raise ValueError("period key too long")
    return key


def _cause_of(trigger: Trigger) -> str:
    return {Trigger.CALENDAR: "scheduled", Trigger.BALANCE_BELOW: "low_balance",
            Trigger.DATA_BELOW: "low_balance", Trigger.KEEP_ALIVE: "keep_alive"}[trigger]


class ChargingService:
    def __init__(self, db: Database, cipher: FieldCipher, provider: TopUpProvider,
                 clock: Clock, *, approval_timeout: timedelta = timedelta(hours=1),
                 admin_chat_ids: Sequence[int] = (), retry: RetryPolicy | None = None,
                 zone_for: Callable[[int], Awaitable[ZoneInfo]] | None = None,
                 catalog: CatalogService | None = None, concurrency: int = 8,
                 checkpoint: Checkpoint | None = None) -> None:
        """``checkpoint(point, charge_id)`` is awaited at the points a crash matters
        ("approved", "submitted", "settling" - inside the settling transaction, before the
        receipt is written -, "settled"): fault-injection tests raise there."""
        self._db = db
        self._cipher = cipher
        self._provider = provider
        self._clock = clock
        self._approval_timeout = approval_timeout
        self._admins = tuple(dict.fromkeys(admin_chat_ids))
        self.retry = retry or RetryPolicy()
        self._zone_for = zone_for
        self._catalog = CatalogService.of(PRODUCTS) if catalog is None else catalog
        self._concurrency = max(1, concurrency)
        self._checkpoint = checkpoint

    # --- small helpers --------------------------------------------------------------------

    async def _point(self, name: str, charge_id: int) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(name, charge_id)

    def _repo(self, conn: AsyncConnection) -> ChargesRepository:
        return ChargesRepository(conn, self._cipher)

    async def _zone(self, user_id: int) -> ZoneInfo:
        return await self._zone_for(user_id) if self._zone_for is not None else DEFAULT_ZONE

    def _product(self, product_id: str | None) -> Product | None:
        return self._catalog.get(product_id)

    def known_plan(self, product_id: str | None) -> Product | None:
        """A plan as the last catalog read had it (no provider call)."""
        return self._catalog.get(product_id)

    def _what(self, charge: ChargeRecord) -> dict[str, Any]:
        """What a charge buys, as plain notification params."""
        product = self._product(charge.product_id)
        return {
            "product_id": charge.product_id,
            "product_name": product.name if product is not None else None,
            "product_kind": product.kind.value if product is not None else None,
            "data_mb": product.data_mb if product is not None else None,
            "validity_days": product.validity_days if product is not None else None,
        }

    @staticmethod
    def _label(line: LineRecord | None) -> str:
        return line.label if line is not None else "?"

    async def _line(self, conn: AsyncConnection, line_id: int) -> LineRecord | None:
        return await LinesRepository(conn, self._cipher).get(line_id)

    @staticmethod
    def _owned(line: LineRecord | None, user_id: int) -> bool:
        return line is not None and line.owner_id == user_id and line.is_bound

    async def _base_params(self, conn: AsyncConnection, charge: ChargeRecord) -> dict[str, Any]:
        line = await self._line(conn, charge.line_id)
        return {"charge_id": charge.id, "line": self._label(line),
                "amount_minor": charge.amount.minor, "currency": charge.amount.currency,
                "cause": charge.cause, **self._what(charge)}

    async def _approval_params(self, conn: AsyncConnection, charge: ChargeRecord,
                               reason: ApprovalReason, *, cap: Money | None = None,
                               spent: Money | None = None) -> dict[str, Any]:
        wallet = await WalletRepository(conn).available(charge.user_id, charge.amount.currency)
        return {**await self._base_params(conn, charge), "reason": reason.value,
                "wallet_minor": wallet.minor, "wallet_currency": wallet.currency,
                "expires_at": charge.expires_at.isoformat() if charge.expires_at else None,
                "cap_minor": cap.minor if cap is not None else None,
                "spent_minor": spent.minor if spent is not None else None}

    async def _ask(self, conn: AsyncConnection, charge: ChargeRecord, reason: ApprovalReason,
                   now: datetime, **cap: Money | None) -> None:
        params = await self._approval_params(conn, charge, reason, **cap)
        await NotificationsRepository(conn).enqueue(
            user_id=charge.user_id, chat_id=charge.user_id, dedupe_key=f"approval:{charge.id}",
            kind=APPROVAL_REQUEST, params=params, now=now)

    async def _tell_admins(self, conn: AsyncConnection, charge: ChargeRecord, kind: str,
                           params: dict[str, Any], now: datetime, dedupe: str) -> None:
        # notifications.user_id must be a user: the charge's owner is the subject; the
        # message goes to the admin chat.
        for chat_id in self._admins:
            await NotificationsRepository(conn).enqueue(
                user_id=charge.user_id, chat_id=chat_id, dedupe_key=f"{dedupe}:admin:{chat_id}",
                kind=kind, params={**params, "audience": "admin", "user_id": charge.user_id,
                                   "reference": charge.reference}, now=now)

    @staticmethod
    async def _audit(conn: AsyncConnection, now: datetime, actor: str, action: str,
                     charge: ChargeRecord, **details: Any) -> None:
        await AuditRepository(conn).record(
            at=now, actor=actor, action=action, subject=str(charge.id),
            details={"amount": charge.amount.plain(), "line": charge.line_id,
                     "cause": charge.cause, **details})

    # --- reading ----------------------------------------------------------------------------

    async def get(self, charge_id: int) -> ChargeRecord | None:
        async with self._db.read() as conn:
            return await self._repo(conn).get(charge_id)

    async def owns(self, user_id: int, charge_id: int) -> bool:
        """Whether the charge is the user's (a cheap check before answering a button)."""
        charge = await self.get(charge_id)
        return charge is not None and charge.user_id == user_id

    async def line_label(self, line_id: int) -> str:
        """How a line is shown in a charge's messages (nickname, or the masked number)."""
        async with self._db.read() as conn:
            return self._label(await self._line(conn, line_id))

    async def list_by_state(self, state: ChargeState | None,
                            limit: int = 50) -> list[ChargeRecord]:
        """For operators: charges in ``state`` (every state when None), newest first."""
        async with self._db.read() as conn:
            return await self._repo(conn).latest([state] if state is not None else None, limit)

    # --- asking -----------------------------------------------------------------------------

    def _price(self, line: LineRecord, amount: Money | None,
               product_id: str | None) -> Money | Invalid:
        if amount is None and product_id is None:
            return Invalid(RequestProblem.NOTHING_TO_BUY)
        if amount is not None and product_id is not None:
            return Invalid(RequestProblem.BOTH_AMOUNT_AND_PLAN)
        if product_id is not None:
            product = self._product(product_id)
            if product is None or product.operator is not line.number.operator:
                return Invalid(RequestProblem.UNKNOWN_PLAN)
            return product.price
        assert amount is not None
        if amount.currency != TOPUP_CURRENCY:
            return Invalid(RequestProblem.UNSUPPORTED_CURRENCY)
        if amount.minor < MIN_AIRTIME_USD_CENTS:
            return Invalid(RequestProblem.AMOUNT_TOO_SMALL)
        if amount.minor > CURRENCIES[amount.currency].max_minor:
            return Invalid(RequestProblem.AMOUNT_TOO_LARGE)
        return amount

    async def request_manual(self, user_id: int, line_id: int, amount: Money | None,
                             product_id: str | None, nonce: str,
                             ) -> Requested | AlreadyOpen | NotYourLine | Invalid:
        """Asks the user to approve a top-up of their line (airtime ``amount`` or the plan
        ``product_id``). ``nonce`` comes from the button, so a double tap is one charge.
        While the line has another open charge (a rule's request waiting, a top-up in
        flight) nothing is asked: AlreadyOpen names that charge."""
        if not nonce or len(nonce) > MAX_NONCE_CHARS:
            raise ValueError("a nonce is 1 to 80 characters")
        await self._catalog.warm()  # before the transaction: plans are looked up in it
        now = self._clock.now()
        key = f"manual:{user_id}:{nonce}"
        async with self._db.write() as conn:
            line = await self._line(conn, line_id)
            if line is None or not self._owned(line, user_id):
                return NotYourLine()
            repo = self._repo(conn)
            existing = await repo.by_key(key)
            if existing is not None:
                return Requested(existing, created=False)
            price = self._price(line, amount, product_id)
            if isinstance(price, Invalid):
                return price
            charge, creation = await self._create(
                conn, now, idempotency_key=key, user_id=user_id, line_id=line.id,
                amount=price, cause="manual", state=ChargeState.AWAITING_APPROVAL,
                product_id=product_id, expires_at=now + self._approval_timeout)
            if creation is Creation.LINE_BUSY:
                return await self._already_open(conn, charge)
            if creation is Creation.CREATED:
                await self._ask(conn, charge, ApprovalReason.MANUAL, now)
                await self._audit(conn, now, f"user:{user_id}", "charge.requested", charge,
                                  product=product_id)
            return Requested(charge, creation is Creation.CREATED)

    async def _create(self, conn: AsyncConnection, now: datetime,
                      **values: Any) -> tuple[ChargeRecord, Creation]:
        """Every charge is created here (``ChargesRepository.create``: one per cause, one
        open per line). A request on the line that is past its time but not yet expired by
        the sweep does not hold the line: it expires now (the user is told, as by the
        sweep) and the new charge is made."""
        repo = self._repo(conn)
        charge, creation = await repo.create(now=now, **values)
        if creation is not Creation.LINE_BUSY or not self._overdue(charge, now):
            return charge, creation
        current = await repo.get(charge.id, lock=True)
        if current is not None and self._overdue(current, now):
            await self._expire(conn, current, now, actor="system", notify=True)
        return await repo.create(now=now, **values)

    @staticmethod
    def _overdue(charge: ChargeRecord, now: datetime) -> bool:
        return (charge.state is ChargeState.AWAITING_APPROVAL
                and charge.expires_at is not None and charge.expires_at <= now)

    async def _already_open(self, conn: AsyncConnection, charge: ChargeRecord) -> AlreadyOpen:
        """The line's open charge as the user is pointed at it: a request awaiting approval
        as it was asked (why, the cap), with today's wallet balance."""
        asked = await NotificationsRepository(conn).by_key(f"approval:{charge.id}")
        message_id = asked.message_id if asked is not None else None
        line = self._label(await self._line(conn, charge.line_id))
        if charge.state is not ChargeState.AWAITING_APPROVAL:
            return AlreadyOpen(charge, line, None, message_id)
        params = asked.params if asked is not None else {}
        try:
            reason = ApprovalReason(str(params.get("reason")))
        except ValueError:
            reason = ApprovalReason.MANUAL if charge.rule_id is None else ApprovalReason.ASK
        cap, spent = (Money(params[name], charge.amount.currency)
                      if isinstance(params.get(name), int) else None
                      for name in ("cap_minor", "spent_minor"))
        request = await self._approval_params(conn, charge, reason, cap=cap, spent=spent)
        return AlreadyOpen(charge, line, request, message_id)

    async def create_for_rule(self, rule: RuleRecord | int, *, period_key: str | None = None,
                              episode: int | None = None, now: datetime | None = None,
                              submit: bool = True) -> RuleCharge | RuleSkipped:
        """The charge of one run of a rule: ``period_key`` (a calendar period, e.g.
        "2026-11") or ``episode`` (a low-balance / keep-alive episode) names the cause.

        The rule row is locked and its monthly cap checked in the transaction that creates
        the charge. An "ask" rule, a charge over the cap or a wallet that cannot cover it
        waits for the user's approval (the request says why); otherwise the funds are held
        and the charge is submitted at once. While the line has another open charge nothing
        is written (RuleSkipped LINE_BUSY, naming that charge).
        """
        rule_id = rule if isinstance(rule, int) else rule.id
        key = rule_charge_key(rule_id, period_key=period_key, episode=episode)
        now = now or self._clock.now()
        await self._catalog.warm()
        async with self._db.write() as conn:
            outcome = await self.create_for_rule_in(conn, rule_id, key, now)
        if submit:
            outcome = await self.after_rule_charge(outcome)
        return outcome

    async def after_rule_charge(self, outcome: RuleCharge | RuleSkipped,
                                ) -> RuleCharge | RuleSkipped:
        """Submits a rule charge that went ahead automatically, once its transaction (the
        caller's, for ``create_for_rule_in``) has committed. A crash before this leaves an
        approved charge that ``process_due`` submits when its lease runs out."""
        if not isinstance(outcome, RuleCharge) or not outcome.created or outcome.approval:
            return outcome
        await self._point("approved", outcome.charge.id)
        submitted = await self.submit(outcome.charge.id)
        return RuleCharge(submitted or outcome.charge, created=True, approval=None)

    async def create_for_rule_in(self, conn: AsyncConnection, rule_id: int, key: str,
                                 now: datetime) -> RuleCharge | RuleSkipped:
        """``create_for_rule`` inside the caller's write transaction, so a sweep writes the
        charge together with the state that caused it (a rule's episode or next run);
        ``key`` comes from ``rule_charge_key``. Call ``after_rule_charge`` after commit."""
        current = await RulesRepository(conn).get(rule_id, lock=True)
        if current is None or current.status is not RuleStatus.ACTIVE:
            return RuleSkipped(SkipReason.RULE_INACTIVE)
        repo = self._repo(conn)
        existing = await repo.by_key(key)
        if existing is not None:
            return RuleCharge(existing, created=False, approval=None)
        line = await self._line(conn, current.line_id)
        if line is None or not self._owned(line, current.owner_id):
            return RuleSkipped(SkipReason.LINE_UNAVAILABLE)
        product = self._product(current.product_id)
        plan_price = (product.price if product is not None
                      and product.operator is line.number.operator else None)
        try:
            amount = charge_amount(current.spec, plan_price, operator=line.number.operator)
            start, end = await self._month(current.owner_id, now)
            spent = Money(await repo.spent_in_period(rule_id, start, end), amount.currency)
            over_cap = spent + amount > current.monthly_cap
        except (RuleError, MoneyError):
            return RuleSkipped(SkipReason.INVALID)
        reason: ApprovalReason | None = None
        if current.approval is Approval.ASK:
            reason = ApprovalReason.OVER_CAP if over_cap else ApprovalReason.ASK
        elif over_cap:
            reason = ApprovalReason.OVER_CAP
        else:
            await lock_wallet_of(conn, current.owner_id)
            available = await WalletRepository(conn).available(current.owner_id,
                                                               amount.currency)
            if available < amount:
                reason = ApprovalReason.INSUFFICIENT_FUNDS
        charge, creation = await self._create(
            conn, now, idempotency_key=key, user_id=current.owner_id, line_id=line.id,
            amount=amount, cause=_cause_of(current.trigger), rule_id=rule_id,
            product_id=current.product_id if plan_price is not None else None,
            state=(ChargeState.AWAITING_APPROVAL if reason is not None
                   else ChargeState.APPROVED),
            expires_at=now + self._approval_timeout if reason is not None else None,
            next_attempt_at=now + self.retry.lease if reason is None else None)
        if creation is Creation.LINE_BUSY:
            # Another charge of the line is open (the user's own request, another rule's):
            # no second one. Its request is in the chat already, so nobody is told.
            log.info("Rule %s: line %s has open charge %s; not charging now", rule_id,
                     line.id, charge.id)
            return RuleSkipped(SkipReason.LINE_BUSY, open_charge=charge)
        holds(creation is Creation.CREATED,  # the rule row lock serializes one rule's runs
              f"rule {rule_id}'s charge was created")
        if reason is not None:
            await self._ask(conn, charge, reason, now, cap=current.monthly_cap, spent=spent)
            await self._audit(conn, now, "system", "charge.requested", charge,
                              rule=rule_id, reason=reason.value)
        else:
            held = await WalletRepository(conn).hold(
                charge_id=charge.id, user_id=charge.user_id, amount=amount, now=now)
            holds(held, f"charge {charge.id}'s funds were held once")
            await self._audit(conn, now, "system", "charge.approved", charge,
                              rule=rule_id, automatic=True)
        return RuleCharge(charge, created=True, approval=reason)

    async def _month(self, user_id: int, now: datetime) -> tuple[datetime, datetime]:
        """The user's calendar month around ``now``, as UTC bounds [start, end)."""
        zone = await self._zone(user_id)
        local = now.astimezone(zone)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start.replace(year=start.year + 1, month=1) if start.month == 12
                     else start.replace(month=start.month + 1))
        return start, following  # ZoneInfo gives each its own UTC offset

    # --- answering --------------------------------------------------------------------------

    async def _answerable(self, conn: AsyncConnection, user_id: int, charge_id: int,
                          now: datetime) -> ChargeRecord | AlreadyHandled | NotYours:
        """The charge, locked, when ``user_id`` may still answer its request; else why not
        (a request past its expiry is expired here, in the caller's transaction)."""
        charge = await self._repo(conn).get(charge_id, lock=True)
        if charge is None or charge.user_id != user_id:
            return NotYours()
        if charge.state is not ChargeState.AWAITING_APPROVAL:
            return AlreadyHandled(charge)
        if charge.expires_at is not None and charge.expires_at <= now:
            return AlreadyHandled(await self._expire(conn, charge, now,
                                                     actor=f"user:{user_id}", notify=False))
        return charge

    async def approve(self, user_id: int, charge_id: int, *, submit: bool = True,
                      ) -> (Approved | AlreadyHandled | InsufficientFunds | PriceChanged
                            | NotYours):
        """The user's "Approve": in one transaction the charge is locked, its owner and
        state checked, its plan re-priced from the catalog (dearer: asked again; cheaper:
        charged less), the wallet checked and the funds held; then (outside it) the charge
        is submitted. A second or concurrent tap finds it handled."""
        await self._catalog.warm()  # before the transaction, which reads today's price
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await self._answerable(conn, user_id, charge_id, now)
            if not isinstance(charge, ChargeRecord):
                return charge
            repriced = await self._reprice(conn, charge, now)
            if isinstance(repriced, PriceChanged):
                return repriced
            charge = repriced
            await lock_wallet_of(conn, user_id)
            wallet = WalletRepository(conn)
            available = await wallet.available(user_id, charge.amount.currency)
            if available < charge.amount:
                # The request as it stands, with today's (short) wallet balance in it.
                reason = (ApprovalReason.MANUAL if charge.rule_id is None
                          else ApprovalReason.ASK)
                request = await self._approval_params(conn, charge, reason)
                return InsufficientFunds(charge, available, request)
            held = await wallet.hold(charge_id=charge.id, user_id=user_id, amount=charge.amount,
                                     now=now)
            moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                          ChargeState.APPROVED, now,
                                          next_attempt_at=now + self.retry.lease)
            # The row lock (or SQLite's write lock) is ours: nobody else can have moved it.
            holds(held and moved, f"charge {charge.id} was held and approved once")
            await self._audit(conn, now, f"user:{user_id}", "charge.approved", charge)
            approved = present(await repo.get(charge.id), f"charge {charge.id} exists")
        await self._point("approved", charge_id)
        if not submit:
            return Approved(approved)
        return Approved(await self.submit(charge_id) or approved)

    async def _reprice(self, conn: AsyncConnection, charge: ChargeRecord,
                       now: datetime) -> ChargeRecord | PriceChanged:
        """The charge at its plan's price today (the locked charge, in the caller's
        transaction). A plan no longer listed keeps its price: the provider declines it."""
        plan = self._product(charge.product_id)
        if plan is None or plan.price == charge.amount \
                or plan.price.currency != charge.amount.currency:
            return charge
        repo = self._repo(conn)
        moved = await repo.reschedule(charge.id, ChargeState.AWAITING_APPROVAL, now,
                                      amount_minor=plan.price.minor)
        holds(moved, f"charge {charge.id} was re-priced while locked")
        await self._audit(conn, now, "system", "charge.repriced", charge,
                          was=charge.amount.plain(), price=plan.price.plain())
        repriced = present(await repo.get(charge.id), f"charge {charge.id} exists")
        if plan.price < charge.amount:
            return repriced  # cheaper: approved at the lower price
        reason = ApprovalReason.MANUAL if charge.rule_id is None else ApprovalReason.ASK
        return PriceChanged(repriced, was=charge.amount,
                            request=await self._approval_params(conn, repriced, reason))

    async def decline(self, user_id: int, charge_id: int) -> Declined | AlreadyHandled | NotYours:
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await self._answerable(conn, user_id, charge_id, now)
            if not isinstance(charge, ChargeRecord):
                return charge
            moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                          ChargeState.DECLINED, now, next_attempt_at=None)
            holds(moved, f"charge {charge.id} was declined once")
            await WalletRepository(conn).release(charge.id, now=now)  # none is held yet
            await self._audit(conn, now, f"user:{user_id}", "charge.declined", charge)
            declined = present(await repo.get(charge.id), f"charge {charge.id} exists")
            return Declined(declined)

    async def _expire(self, conn: AsyncConnection, charge: ChargeRecord, now: datetime, *,
                      actor: str, notify: bool) -> ChargeRecord:
        repo = self._repo(conn)
        moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                      ChargeState.EXPIRED, now, next_attempt_at=None)
        holds(moved, f"charge {charge.id} expired once")
        await WalletRepository(conn).release(charge.id, now=now)  # none is held yet
        if notify:
            await NotificationsRepository(conn).enqueue(
                user_id=charge.user_id, chat_id=charge.user_id,
                dedupe_key=f"expired:{charge.id}", kind=CHARGE_EXPIRED,
                params={**await self._base_params(conn, charge),
                        "replaces": f"approval:{charge.id}"}, now=now)
        await self._audit(conn, now, actor, "charge.expired", charge)
        return present(await repo.get(charge.id), f"charge {charge.id} exists")

    async def expire_due(self, now: datetime | None = None, limit: int = 100) -> int:
        """Approval requests nobody answered in time become expired (no funds were held);
        the user gets a message that says so. How many expired."""
        now = now or self._clock.now()
        async with self._db.read() as conn:
            due = await self._repo(conn).expired_requests(now, limit)
        count = 0
        for candidate in due:
            async with self._db.write() as conn:
                charge = await self._repo(conn).get(candidate.id, lock=True)
                if (charge is None or charge.state is not ChargeState.AWAITING_APPROVAL
                        or charge.expires_at is None or charge.expires_at > now):
                    continue
                await self._expire(conn, charge, now, actor="system", notify=True)
                count += 1
        return count

    # --- submitting -------------------------------------------------------------------------

    async def submit(self, charge_id: int) -> ChargeRecord | None:
        """Sends an approved charge to the provider (once: the move to submitted is a
        compare-and-set committed before the call). Returns the charge as it is after."""
        charge = await self.get(charge_id)
        if charge is None or charge.state is not ChargeState.APPROVED:
            return charge
        if charge.attempts > 0:
            # It went out before (it cannot with today's states, but never send blind):
            # what does the provider know of it?
            found = await self._lookup(charge.reference)
            if isinstance(found, TopUpResult):
                async with self._db.write() as conn:
                    await self._repo(conn).transition(
                        charge.id, ChargeState.APPROVED, ChargeState.SUBMITTED,
                        self._clock.now(), next_attempt_at=self._clock.now() + self.retry.lease)
                return await self._apply_result(charge.id, found)
            if found is LOOKUP_FAILED:
                async with self._db.write() as conn:
                    await self._repo(conn).reschedule(
                        charge.id, ChargeState.APPROVED, self._clock.now(),
                        next_attempt_at=self._clock.now() + self.retry.delay(charge.attempts))
                return await self.get(charge.id)
        return await self._send(charge, ChargeState.APPROVED)

    async def _send(self, charge: ChargeRecord, from_state: ChargeState) -> ChargeRecord | None:
        """Marks one more attempt (committed), then calls the provider."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            line = await self._line(conn, charge.line_id)
            if line is None or not self._owned(line, charge.user_id):
                return await self._fail_in(conn, charge, LINE_UNAVAILABLE, now)
            lease = {"next_attempt_at": now + self.retry.lease, "failure_reason": None}
            if from_state is ChargeState.APPROVED:
                moved = await repo.transition(charge.id, ChargeState.APPROVED,
                                              ChargeState.SUBMITTED, now, bump_attempts=True,
                                              **lease)
            else:
                moved = await repo.reschedule(charge.id, ChargeState.SUBMITTED, now,
                                              expected_attempts=charge.attempts,
                                              bump_attempts=True, **lease)
            if not moved:  # another worker or tap got there first
                return await repo.get(charge.id)
            await self._audit(conn, now, "system", "charge.submitted", charge,
                              attempt=charge.attempts + 1, reference=charge.reference)
            sent = present(await repo.get(charge.id), f"charge {charge.id} exists")
        await self._point("submitted", charge.id)
        request = TopUpRequest(
            reference=sent.reference, phone_e164=line.number.e164,
            operator=line.number.operator,
            amount=sent.amount if sent.product_id is None else None, product_id=sent.product_id)
        try:
            result = await self._provider.top_up(request)
        except GatewayError as error:
            log.warning("Top-up %s (charge %s): %s; looking it up", sent.reference, sent.id,
                        type(error).__name__)
            return await self._after_unknown(sent, error)
        if result.reference != sent.reference:
            log.error("Provider answered charge %s with reference %s", sent.id, result.reference)
            return await self._after_unknown(sent, GatewayError("reference mismatch"))
        return await self._apply_result(sent.id, result)

    async def _lookup(self, reference: str) -> Lookup:
        try:
            return await self._provider.lookup(reference)
        except GatewayError as error:
            log.warning("Look-up of %s failed: %s", reference, type(error).__name__)
            return LOOKUP_FAILED

    async def _after_unknown(self, charge: ChargeRecord,
                             error: GatewayError) -> ChargeRecord | None:
        """The outcome is unknown: look it up; never send again from here."""
        if isinstance(error, TryLater):  # nothing was done: no look-up needed
            return await self._retry_later(charge, error.reason, lookup_failed=False,
                                           asked_to_wait=error.retry_after)
        found = await self._lookup(charge.reference)
        if isinstance(found, TopUpResult):
            return await self._apply_result(charge.id, found)
        reason = ("timeout" if isinstance(error, GatewayTimeout)
                  else "duplicate_reference" if isinstance(error, DuplicateReference)
                  else "gateway_error")
        return await self._retry_later(charge, reason, lookup_failed=found is LOOKUP_FAILED)

    async def _retry_later(self, charge: ChargeRecord, reason: str, *, lookup_failed: bool,
                           asked_to_wait: timedelta | None = None) -> ChargeRecord | None:
        """The charge is worked again later: after the back-off of its attempts, or after
        ``asked_to_wait`` when the provider did nothing and asked us to come back (the same
        number within two minutes at Reloadly). Within ``RetryPolicy.try_later_for`` of its
        creation such a refusal uses up no attempt, so the charge does not fail for it."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            current = await repo.get(charge.id, lock=True)
            if current is None or current.state is not ChargeState.SUBMITTED:
                return current
            attempts = current.attempts
            if asked_to_wait is not None:
                at = now + max(asked_to_wait, self.retry.first_delay)
                if attempts > 0 and now - current.created_at < self.retry.try_later_for:
                    attempts -= 1
            else:
                at = now + self.retry.delay(attempts)
            await repo.reschedule(current.id, ChargeState.SUBMITTED, now, next_attempt_at=at,
                                  failure_reason=reason[:64], attempts=attempts)
            await self._audit(conn, now, "system", "charge.retry_scheduled", current,
                              reason=reason, attempts=attempts, at=at.isoformat(),
                              lookup_failed=lookup_failed,
                              provider_asked_to_wait=asked_to_wait is not None)
            if lookup_failed and attempts >= self.retry.max_attempts:
                await self._tell_admins(conn, current, CHARGE_STUCK,
                                        await self._base_params(conn, current), now,
                                        dedupe=f"stuck:{current.id}")
            return await repo.get(current.id)

    async def _apply_result(self, charge_id: int, result: TopUpResult) -> ChargeRecord | None:
        """Settles a submitted charge with what the provider says (idempotent)."""
        if result.status is TopUpStatus.PENDING:
            return await self._pending(charge_id)
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await repo.get(charge_id, lock=True)
            if charge is None or charge.state is not ChargeState.SUBMITTED:
                return charge  # settled already (another worker, a replay)
            if result.status is TopUpStatus.FAILED:
                return await self._fail_in(conn, charge, result.failure_reason or "declined",
                                           now)
            await self._succeed_in(conn, charge, result, now)
            settled = await repo.get(charge_id)
        await self._point("settled", charge_id)
        return settled

    async def _succeed_in(self, conn: AsyncConnection, charge: ChargeRecord,
                          result: TopUpResult, now: datetime) -> None:
        repo = self._repo(conn)
        wallet = WalletRepository(conn)
        captured = await wallet.capture(charge.id, now=now)
        if not captured:
            log.error("Charge %s succeeded without an open hold", charge.id)
        moved = await repo.transition(
            charge.id, ChargeState.SUBMITTED, ChargeState.SUCCEEDED, now,
            provider_tx=result.provider_tx_id, next_attempt_at=None, failure_reason=None,
            delivered=result.delivered, provider_money=_provider_money(result),
            balance_after_minor=(result.balance_after.minor
                                 if result.balance_after is not None else None),
            validity_end_after=result.validity_end)
        holds(moved, f"charge {charge.id} succeeded once")
        if (result.balance_after is not None or result.data_after_mb is not None
                or result.validity_end is not None):
            await ReadingsRepository(conn).add(charge.line_id, LineReading(
                source=ReadingSource.PROVIDER, read_at=result.at, balance=result.balance_after,
                data_mb=result.data_after_mb, validity_end=result.validity_end),
                recorded_at=now)
        if result.amount != charge.amount:
            log.warning("Charge %s: provider charged %s for %s", charge.id, result.amount,
                        charge.amount)
        await self._point("settling", charge.id)
        wallet_left = await wallet.available(charge.user_id, charge.amount.currency)
        params = {**await self._base_params(conn, charge), "reference": charge.reference,
                  "balance_after_minor": (result.balance_after.minor
                                          if result.balance_after is not None else None),
                  "balance_currency": (result.balance_after.currency
                                       if result.balance_after is not None else None),
                  "data_after_mb": result.data_after_mb,
                  "validity_end": (result.validity_end.isoformat()
                                   if result.validity_end is not None else None),
                  "wallet_minor": wallet_left.minor, "wallet_currency": wallet_left.currency,
                  "at": result.at.isoformat(),
                  # What the line received, when the provider says (riel or dollars), and
                  # the end of its transaction id: the outbox keeps no reference whole.
                  "delivered_minor": result.delivered.minor if result.delivered else None,
                  "delivered_currency": (result.delivered.currency if result.delivered
                                         else None),
                  "provider_tx_shown": (masked_reference(result.provider_tx_id)
                                        if result.provider_tx_id else None)}
        await NotificationsRepository(conn).enqueue(
            user_id=charge.user_id, chat_id=charge.user_id, dedupe_key=f"receipt:{charge.id}",
            kind=RECEIPT, params=params, now=now)
        await self._audit(conn, now, "system", "charge.succeeded", charge,
                          reference=charge.reference, attempts=charge.attempts)

    async def _fail_in(self, conn: AsyncConnection, charge: ChargeRecord, reason: str,
                       now: datetime) -> ChargeRecord | None:
        """Fails an approved or submitted charge: hold released, user and admins told."""
        repo = self._repo(conn)
        current = await repo.get(charge.id, lock=True)
        if current is None or current.state not in (ChargeState.APPROVED,
                                                    ChargeState.SUBMITTED):
            return current
        reason = reason[:64]
        await WalletRepository(conn).release(current.id, now=now)
        moved = await repo.transition(current.id, current.state, ChargeState.FAILED, now,
                                      failure_reason=reason, next_attempt_at=None)
        holds(moved, f"charge {current.id} failed once")
        params = {**await self._base_params(conn, current), "reason": reason,
                  "attempts": current.attempts}
        await NotificationsRepository(conn).enqueue(
            user_id=current.user_id, chat_id=current.user_id, dedupe_key=f"failed:{current.id}",
            kind=CHARGE_FAILED, params={**params, "audience": "user"}, now=now)
        await self._tell_admins(conn, current, CHARGE_FAILED, params, now,
                                dedupe=f"failed:{current.id}")
        await self._audit(conn, now, "system", "charge.failed", current, reason=reason,
                          attempts=current.attempts)
        return await repo.get(current.id)

    async def _fail(self, charge: ChargeRecord, reason: str) -> ChargeRecord | None:
        async with self._db.write() as conn:
            return await self._fail_in(conn, charge, reason, self._clock.now())

    async def _pending(self, charge_id: int) -> ChargeRecord | None:
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = self._repo(conn)
            charge = await repo.get(charge_id, lock=True)
            if charge is None or charge.state is not ChargeState.SUBMITTED:
                return charge
            await repo.reschedule(charge.id, ChargeState.SUBMITTED, now, failure_reason=None,
                                  next_attempt_at=now + self.retry.poll_interval)
            first = await NotificationsRepository(conn).enqueue(
                user_id=charge.user_id, chat_id=charge.user_id,
                dedupe_key=f"processing:{charge.id}", kind=CHARGE_PROCESSING,
                params=await self._base_params(conn, charge), now=now)
            if first:
                await self._audit(conn, now, "system", "charge.pending", charge,
                                  reference=charge.reference)
            return await repo.get(charge.id)

    # --- sweeping and recovery ------------------------------------------------------------

    async def _advance(self, charge: ChargeRecord) -> ChargeRecord | None:
        """Moves a due charge on (the caller holds its lease)."""
        if charge.state is ChargeState.APPROVED:
            return await self.submit(charge.id)
        if charge.state is not ChargeState.SUBMITTED:
            return charge
        found = await self._lookup(charge.reference)
        if isinstance(found, TopUpResult):
            return await self._apply_result(charge.id, found)
        if found is LOOKUP_FAILED:
            return await self._retry_later(charge, charge.failure_reason or "lookup_failed",
                                           lookup_failed=True)
        # The provider never saw this reference: sending it is not blind.
        if charge.attempts >= self.retry.max_attempts:
            return await self._fail(charge, NOT_ACCEPTED)
        return await self._send(charge, ChargeState.SUBMITTED)

    async def warm_catalog(self) -> None:
        """Reads stale plans before work that looks them up inside a transaction (a sweep
        that creates rule charges in its own)."""
        await self._catalog.warm()

    async def process_due(self, now: datetime | None = None, limit: int = 100) -> int:
        """Submits approved charges, looks up pending and unknown ones, re-sends what the
        provider never saw (with back-off) and fails what ran out of attempts. Each charge is
        claimed with a lease first. Returns how many charges were worked on."""
        now = now or self._clock.now()
        await self._catalog.warm()
        async with self._db.read() as conn:
            due = await self._repo(conn).due_retries(now, limit)
        gate = asyncio.Semaphore(self._concurrency)

        async def work(charge: ChargeRecord) -> bool:
            async with gate:
                async with self._db.write() as conn:
                    claimed = await self._repo(conn).claim(charge.id, charge.state, now,
                                                           now + self.retry.lease)
                if not claimed:
                    return False
                try:
                    await self._advance(charge)
                except Exception:
                    # The lease runs out and the next sweep tries again.
                    log.exception("Charge %s could not be moved on", charge.id)
                    return False
                return True

        return sum(await asyncio.gather(*(work(charge) for charge in due)))

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """What a repeating job runs: expire unanswered requests, then work due charges."""
        now = now or self._clock.now()
        return await self.expire_due(now), await self.process_due(now)

    async def reconcile_on_start(self) -> ReconcileReport:
        """After a restart: every charge left submitted is looked up by its reference (never
        re-sent blind) and settled; approved charges whose submission never happened are
        submitted. A charge the provider never saw is re-sent only once its lease has run
        out (another worker may still be calling the provider for it)."""
        now = self._clock.now()
        looked_up = settled = pending = resent = left = submitted = 0
        errors: list[int] = []
        for state in (ChargeState.SUBMITTED, ChargeState.APPROVED):
            after: int | None = None
            while True:
                async with self._db.read() as conn:
                    batch = await self._repo(conn).by_state(state, 100, after_id=after)
                if not batch:
                    break
                after = batch[-1].id
                for charge in batch:
                    try:
                        if state is ChargeState.APPROVED:
                            await self.submit(charge.id)
                            submitted += 1
                            continue
                        looked_up += 1
                        found = await self._lookup(charge.reference)
                        if isinstance(found, TopUpResult):
                            await self._apply_result(charge.id, found)
                            if found.status is TopUpStatus.PENDING:
                                pending += 1
                            else:
                                settled += 1
                            continue
                        due = charge.next_attempt_at is None or charge.next_attempt_at <= now
                        if found is LOOKUP_FAILED or not due:
                            left += 1
                            continue
                        async with self._db.write() as conn:
                            claimed = await self._repo(conn).claim(
                                charge.id, ChargeState.SUBMITTED, now, now + self.retry.lease)
                        if claimed:
                            await self._advance(charge)
                            resent += 1
                        else:
                            left += 1
                    except Exception:
                        log.exception("Charge %s could not be reconciled", charge.id)
                        errors.append(charge.id)
        report = ReconcileReport(looked_up=looked_up, settled=settled, pending=pending,
                                 resent_or_failed=resent, left_for_later=left,
                                 submitted=submitted, errors=errors)
        log.info("Charges reconciled: %s", report)
        return report
