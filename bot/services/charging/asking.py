"""Asking: a user's request and a rule's run become a charge (one per cause, one open per line),
and a request nobody answers expires."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.charges import ChargeState
from bot.domain.invariants import holds
from bot.domain.money import CURRENCIES, Money, MoneyError
from bot.domain.operators import MIN_AIRTIME_USD_CENTS
from bot.domain.products import ProductKind
from bot.domain.readings import TriggerReading
from bot.domain.rules import Approval, RuleError, RuleStatus, charge_amount
from bot.services.charging.common import Deps, Phase
from bot.services.charging.notices import ApprovalRequest
from bot.services.charging.outcomes import (
    AlreadyOpen,
    ChargeView,
    Invalid,
    NotYourLine,
    Requested,
    RuleCharge,
    RuleSkipped,
    SkipReason,
)
from bot.services.charging.policy import (
    MAX_NONCE_CHARS,
    TOPUP_CURRENCY,
    ApprovalReason,
    RequestProblem,
    cause_of,
    rule_charge_key,
)
from bot.services.charging.submission import Submission
from bot.services.notices import NoticeError
from storage.charges import ChargeRecord, Creation, lock_wallet_of
from storage.lines import LineRecord
from storage.notifications import NotificationsRepository
from storage.rules import RuleRecord, RulesRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)


class Asking(Phase):
    def __init__(self, deps: Deps, submission: Submission) -> None:
        super().__init__(deps)
        self._submission = submission

    def _price(self, line: LineRecord, amount: Money | None,
               product_id: str | None) -> Money | Invalid:
        if amount is None and product_id is None:
            return Invalid(RequestProblem.NOTHING_TO_BUY)
        if amount is not None and product_id is not None:
            return Invalid(RequestProblem.BOTH_AMOUNT_AND_PLAN)
        if product_id is not None:
            product = self._product(product_id)
            # A SIM takes its operator's plans; an eSIM its provider's top-ups (never a new
            # eSIM, nor airtime).
            if (product is None or product.operator is not line.operator
                    or product.for_esims is not line.is_esim
                    or product.kind is ProductKind.ESIM):
                return Invalid(RequestProblem.UNKNOWN_PLAN)
            return product.price
        assert amount is not None
        if line.is_esim:
            return Invalid(RequestProblem.UNKNOWN_PLAN)  # an eSIM takes no airtime
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
                return Requested(ChargeView.of(existing), created=False)
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
            return Requested(ChargeView.of(charge), creation is Creation.CREATED)

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
            return AlreadyOpen(ChargeView.of(charge), line, None, message_id)
        # Asked again as it was asked: why, and an automatic rule's cap and spending then.
        reason = ApprovalReason.MANUAL if charge.rule_id is None else ApprovalReason.ASK
        cap: Money | None = None
        spent: Money | None = None
        if asked is not None:
            try:
                earlier = ApprovalRequest.from_params(asked.params)
            except NoticeError as error:
                log.warning("Charge %s: its queued approval request is unreadable (%s)",
                            charge.id, error)
            else:
                reason, cap, spent = earlier.reason, earlier.cap, earlier.spent
        request = await self._approval_request(conn, charge, reason, cap=cap, spent=spent)
        return AlreadyOpen(ChargeView.of(charge), line, request, message_id)

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
        submitted = await self._submission.submit(outcome.charge.id)
        return RuleCharge(ChargeView.of(submitted) if submitted else outcome.charge, created=True,
                          approval=None)

    async def create_for_rule_in(self, conn: AsyncConnection, rule_id: int, key: str,
                                 now: datetime, *, trigger: TriggerReading | None = None,
                                 ) -> RuleCharge | RuleSkipped:
        """``create_for_rule`` inside the caller's write transaction, so a sweep writes the
        charge together with the state that caused it (a rule's episode or next run);
        ``key`` comes from ``rule_charge_key``; ``trigger`` is the reading the rule fired
        on (none for a calendar run), kept with the charge for its request and receipt.
        Call ``after_rule_charge`` after commit."""
        current = await RulesRepository(conn).get(rule_id, lock=True)
        if current is None or current.status is not RuleStatus.ACTIVE:
            return RuleSkipped(SkipReason.RULE_INACTIVE)
        repo = self._repo(conn)
        existing = await repo.by_key(key)
        if existing is not None:
            return RuleCharge(ChargeView.of(existing), created=False, approval=None)
        line = await self._line(conn, current.line_id)
        if line is None or not self._owned(line, current.owner_id):
            return RuleSkipped(SkipReason.LINE_UNAVAILABLE)
        product = self._product(current.product_id)
        plan_price = (product.price if product is not None
                      and product.operator is line.operator else None)
        try:
            amount = charge_amount(current.spec, plan_price, operator=line.operator)
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
            amount=amount, cause=cause_of(current.trigger), rule_id=rule_id,
            product_id=current.product_id if plan_price is not None else None,
            state=(ChargeState.AWAITING_APPROVAL if reason is not None
                   else ChargeState.APPROVED),
            expires_at=now + self._approval_timeout if reason is not None else None,
            next_attempt_at=now + self.retry.lease if reason is None else None,
            trigger=trigger)
        if creation is Creation.LINE_BUSY:
            # Another charge of the line is open (the user's own request, another rule's):
            # no second one. Its request is in the chat already, so nobody is told.
            log.info("Rule %s: line %s has open charge %s; not charging now", rule_id,
                     line.id, charge.id)
            return RuleSkipped(SkipReason.LINE_BUSY, open_charge=ChargeView.of(charge))
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
        return RuleCharge(ChargeView.of(charge), created=True, approval=reason)

    async def _month(self, user_id: int, now: datetime) -> tuple[datetime, datetime]:
        """The user's calendar month around ``now``, as UTC bounds [start, end)."""
        zone = await self._zone(user_id)
        local = now.astimezone(zone)
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start.replace(year=start.year + 1, month=1) if start.month == 12
                     else start.replace(month=start.month + 1))
        return start, following  # ZoneInfo gives each its own UTC offset

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
