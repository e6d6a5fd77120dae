"""Auto-recharge rules: propose, confirm with a code sent to the line, list, pause, resume,
edit and delete.

A rule only runs once the user has typed the code texted to the line it tops up; raising
its amount or cap above what was last confirmed (or switching it from "ask me" to
automatic) takes a fresh code. Lowering takes effect at once. Every method checks that the
rule and its line belong to the user and changes nothing otherwise; every change is
audited in the same transaction.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.invariants import present
from bot.domain.money import Money
from bot.domain.otp import CheckResult
from bot.domain.products import ProductKind
from bot.domain.rules import (
    Approval,
    CalendarKind,
    RuleError,
    RuleSpec,
    RuleStatus,
    Trigger,
    charge_amount,
    first_run_at,
    keep_alive_amount,
    needs_confirmation,
    schedule_of,
    validate,
)
from bot.gateways.simulated_catalog import PRODUCTS
from bot.services.catalog import CatalogService
from bot.services.otp import CheckOutcome, CodeNotSent, CodeSent, OtpPurpose, OtpService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.rules import RuleRecord, RulesRepository, spec_columns

DEFAULT_ZONE = ZoneInfo("Asia/Phnom_Penh")


@dataclass(frozen=True)
class NotYourLine:
    """The line is unknown, someone else's, or no longer bound: nothing was done."""


@dataclass(frozen=True)
class NotYourRule:
    """The rule is unknown or someone else's (or its line no longer theirs): nothing done."""


@dataclass(frozen=True)
class WrongState:
    """The rule's status does not allow the action (e.g. editing a deleted rule)."""

    status: RuleStatus


@dataclass(frozen=True)
class RuleView:
    """A rule as the chat shows it: what it says and where it stands."""

    id: int
    line_id: int
    spec: RuleSpec
    status: RuleStatus
    next_run_at: datetime | None
    skip_run_at: datetime | None

    @classmethod
    def of(cls, record: RuleRecord) -> RuleView:
        return cls(id=record.id, line_id=record.line_id, spec=record.spec,
                   status=record.status, next_run_at=record.next_run_at,
                   skip_run_at=record.skip_run_at)


@dataclass(frozen=True)
class Invalid:
    reason: RuleError.Reason
    detail: str = ""


@dataclass(frozen=True)
class Proposed:
    rule: RuleView  # awaiting_otp until the code is confirmed
    code: CodeSent | CodeNotSent | None  # None: on at once (an eSIM, proven by its purchase)
    created: bool = True  # False: the same rule, already waiting for its code, reused



class ConfirmStatus(enum.StrEnum):
    ENABLED = "enabled"
    CODE_REJECTED = "code_rejected"  # wrong, expired or locked: see ``outcome``
    CODE_FOR_OTHER = "code_for_other"  # the latest code confirms another rule, or an earlier
    #                                    version of this one: send a new code
    INVALID = "invalid"  # the rule no longer holds (its plan left the catalog): edit it
    NOT_AWAITING = "not_awaiting"  # nothing to confirm: already active, paused or deleted
    NOT_YOURS = "not_yours"


@dataclass(frozen=True)
class ConfirmResult:
    status: ConfirmStatus
    rule: RuleView | None = None  # the rule as it is now (None when not the user's)
    outcome: CheckOutcome | None = None  # None when no code was checked

    @property
    def enabled(self) -> bool:
        return self.status is ConfirmStatus.ENABLED


@dataclass(frozen=True)
class Edited:
    rule: RuleView
    code: CodeSent | CodeNotSent | None  # None: applied at once, no code needed

    @property
    def needs_code(self) -> bool:
        return self.code is not None


def _summary(spec: RuleSpec, amount: Money) -> dict[str, Any]:
    """What an audit row says of a rule: no secrets, only its terms."""
    return {"trigger": spec.trigger.value, "amount": amount.plain(),
            "product": spec.product_id, "cap": spec.monthly_cap.plain(),
            "approval": spec.approval.value,
            "calendar": spec.calendar.value if spec.calendar is not None else None,
            "calendar_value": spec.calendar_value}


async def _watch_now(conn: AsyncConnection, cipher: FieldCipher, rule: RuleRecord,
                     now: datetime) -> None:
    """A balance, data or keep-alive rule turned on is weighed at the next sweep, not at the
    line's next routine check hours later."""
    if rule.trigger is not Trigger.CALENDAR:
        await LinesRepository(conn, cipher).set_next_check(rule.line_id, now, now=now)


class RulesService:
    def __init__(self, db: Database, cipher: FieldCipher, otp: OtpService, clock: Clock,
                 zone_for: Callable[[int], Awaitable[ZoneInfo]] | None = None, *,
                 catalog: CatalogService | None = None) -> None:
        self._db = db
        self._cipher = cipher
        self._otp = otp
        self._clock = clock
        self._zone_for = zone_for
        self._catalog = CatalogService.of(PRODUCTS) if catalog is None else catalog

    # --- helpers ----------------------------------------------------------------------

    async def _zone(self, user_id: int) -> ZoneInfo:
        """The user's zone: calendars run at local times and "every N days" counts local days."""
        return await self._zone_for(user_id) if self._zone_for is not None else DEFAULT_ZONE

    def _plan_price(self, product_id: str | None, line: LineRecord) -> Money | None:
        """The plan's price when the line can take it (the catalog of its operator; for an
        eSIM, one of the eSIM provider's top-ups), else None."""
        product = self._catalog.get(product_id)
        if (product is None or product.operator is not line.operator
                or product.for_esims is not line.is_esim
                or product.kind is ProductKind.ESIM):  # a new eSIM is no top-up
            return None
        return product.price

    def _prepare(self, zone: ZoneInfo, spec: RuleSpec, line: LineRecord,
                 now: datetime) -> tuple[RuleSpec, Money] | Invalid:
        """The spec as it will be stored (defaults filled in) and what one run costs. An
        eSIM is topped up with one of its packages, never an airtime amount: its keep-alive
        rule buys the line's plan."""
        if line.is_esim and spec.amount is not None:
            return Invalid(RuleError.Reason.UNKNOWN_PLAN, "an eSIM takes its own top-ups")
        if (spec.trigger is Trigger.KEEP_ALIVE and spec.amount is None
                and spec.product_id is None):
            spec = (replace(spec, product_id=line.plan_product_id) if line.is_esim
                    else replace(spec, amount=keep_alive_amount(line.operator)))
        if (spec.trigger is Trigger.CALENDAR and spec.calendar is CalendarKind.EVERY_N
                and spec.calendar_anchor is None):
            spec = replace(spec, calendar_anchor=now.astimezone(zone).date())
        plan_price = self._plan_price(spec.product_id, line)
        try:
            validate(spec, plan_price=plan_price, operator=line.operator)
            amount = charge_amount(spec, plan_price, operator=line.operator)
        except RuleError as error:
            return Invalid(error.reason, error.detail)
        return spec, amount

    async def _owned_line(self, conn: AsyncConnection, user_id: int,
                          line_id: int) -> LineRecord | None:
        line = await LinesRepository(conn, self._cipher).get(line_id)
        if line is None or line.owner_id != user_id or not line.is_bound:
            return None
        return line

    async def _owned_rule(self, conn: AsyncConnection, user_id: int, rule_id: int, *,
                          lock: bool) -> tuple[RuleRecord, LineRecord | None] | None:
        """The user's rule, and its line while the line is still theirs."""
        rule = await RulesRepository(conn).get(rule_id, lock=lock)
        if rule is None or rule.owner_id != user_id:
            return None
        return rule, await self._owned_line(conn, user_id, rule.line_id)

    async def _audit(self, conn: AsyncConnection, user_id: int, action: str, rule_id: int,
                     details: dict[str, Any]) -> None:
        await AuditRepository(conn).record(at=self._clock.now(), actor=f"user:{user_id}",
                                           action=action, subject=str(rule_id),
                                           details=details)

    async def _send_code(self, user_id: int, line: LineRecord, rule_id: int,
                         sms_text: str) -> CodeSent | CodeNotSent:
        number = present(line.number, f"line {line.id} asked for a code has a number")
        return await self._otp.send(user_id=user_id, number=number,
                                    purpose=OtpPurpose.CONFIRM_RULE, sms_text=sms_text,
                                    subject=str(rule_id))

    async def _enable_in(self, conn: AsyncConnection, user_id: int, rule: RuleRecord,
                         amount: Money, now: datetime, zone: ZoneInfo,
                         proven_by: str) -> RuleRecord:
        """Turns a rule on at what was confirmed (by a code, or by an eSIM's purchase)."""
        repo = RulesRepository(conn)
        await repo.update(rule.id, now=now, status=RuleStatus.ACTIVE,
                          confirmed_amount_minor=amount.minor,
                          confirmed_cap_minor=rule.monthly_cap.minor,
                          next_run_at=first_run_at(rule.spec, now, zone))
        await self._audit(conn, user_id, "rule.enabled", rule.id,
                          {"line": rule.line_id, "proven_by": proven_by,
                           **_summary(rule.spec, amount)})
        await _watch_now(conn, self._cipher, rule, now)
        return present(await repo.get(rule.id), f"rule {rule.id} exists")

    # --- use cases --------------------------------------------------------------------

    async def propose(self, user_id: int, line_id: int, spec: RuleSpec,
                      sms_text: str) -> Proposed | NotYourLine | Invalid:
        """Creates the rule, waiting for the code texted to the line (``sms_text`` holds
        ``{code}``). Proposing the same rule again reuses the waiting one."""
        await self._catalog.warm()  # plans are looked up inside the transaction
        now = self._clock.now()
        zone = await self._zone(user_id)
        async with self._db.write() as conn:
            line = await self._owned_line(conn, user_id, line_id)
            if line is None:
                return NotYourLine()
            prepared = self._prepare(zone, spec, line, now)
            if isinstance(prepared, Invalid):
                return prepared
            spec, amount = prepared
            repo = RulesRepository(conn)
            rule = next((r for r in await repo.for_line(line_id)
                         if r.owner_id == user_id and r.status is RuleStatus.AWAITING_OTP
                         and r.spec == spec), None)
            created = rule is None
            if rule is None:
                rule = await repo.add(line_id=line_id, owner_id=user_id, spec=spec, now=now,
                                      status=RuleStatus.AWAITING_OTP)
                await self._audit(conn, user_id, "rule.proposed", rule.id,
                                  {"line": line_id, **_summary(spec, amount)})
            if line.is_esim:  # bought by this user: the purchase proved the line
                enabled = await self._enable_in(conn, user_id, rule, amount, now, zone,
                                                proven_by="esim_purchase")
                return Proposed(RuleView.of(enabled), None, created)
        return Proposed(RuleView.of(rule), await self._send_code(user_id, line, rule.id, sms_text),
                        created)

    async def resend_code(self, user_id: int, rule_id: int, sms_text: str
                          ) -> CodeSent | CodeNotSent | NotYourRule | WrongState:
        async with self._db.read() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=False)
        if owned is None:
            return NotYourRule()
        rule, line = owned
        if line is None:
            return NotYourRule()
        if rule.status is not RuleStatus.AWAITING_OTP:
            return WrongState(rule.status)
        return await self._send_code(user_id, line, rule.id, sms_text)

    async def confirm(self, user_id: int, rule_id: int, typed: str) -> ConfirmResult:
        """Checks the code texted to the rule's line; a right one turns the rule on."""
        await self._catalog.warm()
        async with self._db.read() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=False)
        if owned is None:
            return ConfirmResult(ConfirmStatus.NOT_YOURS)
        rule, line = owned
        if line is None:
            return ConfirmResult(ConfirmStatus.NOT_YOURS)
        if rule.status is not RuleStatus.AWAITING_OTP:
            return ConfirmResult(ConfirmStatus.NOT_AWAITING, RuleView.of(rule))
        plan_price = self._plan_price(rule.product_id, line)
        try:
            validate(rule.spec, plan_price=plan_price, operator=line.operator)
        except RuleError:
            return ConfirmResult(ConfirmStatus.INVALID, RuleView.of(rule))
        amount = charge_amount(rule.spec, plan_price, operator=line.operator)

        if line.number is None:  # an eSIM's rules are on from the start: no code to check
            return ConfirmResult(ConfirmStatus.NOT_AWAITING, RuleView.of(rule))
        outcome = await self._otp.check(user_id=user_id, number=line.number,
                                        purpose=OtpPurpose.CONFIRM_RULE, typed=typed)
        if outcome.result is not CheckResult.OK:
            return ConfirmResult(ConfirmStatus.CODE_REJECTED, RuleView.of(rule), outcome)
        if outcome.subject != str(rule.id):
            return ConfirmResult(ConfirmStatus.CODE_FOR_OTHER, RuleView.of(rule), outcome)

        now = self._clock.now()
        zone = await self._zone(user_id)
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None or owned[1] is None:
                return ConfirmResult(ConfirmStatus.NOT_YOURS, outcome=outcome)
            current = owned[0]
            if current.status is not RuleStatus.AWAITING_OTP:
                return ConfirmResult(ConfirmStatus.NOT_AWAITING, RuleView.of(current), outcome)
            if current.updated_at != rule.updated_at:  # edited while the code was typed
                return ConfirmResult(ConfirmStatus.CODE_FOR_OTHER, RuleView.of(current), outcome)
            enabled = await self._enable_in(conn, user_id, rule, amount, now, zone,
                                            proven_by="otp")
        return ConfirmResult(ConfirmStatus.ENABLED, RuleView.of(enabled), outcome)

    async def own(self, user_id: int, rule_id: int) -> RuleView | None:
        """The rule if it is the user's (deleted ones included); None otherwise."""
        async with self._db.read() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=False)
        return RuleView.of(owned[0]) if owned is not None else None

    async def skip_run(self, user_id: int, rule_id: int, run_at: datetime) -> bool:
        """Skips the rule's run at ``run_at`` (the reminder's button); False when the rule is
        not the user's, or that run is no longer the next one (it ran, or the rule changed)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None or owned[1] is None or run_at <= now:
                return False
            if owned[0].skip_run_at == run_at:
                return True  # skipped already (a second tap): nothing more to record
            if not await RulesRepository(conn).skip_run(rule_id, run_at, now):
                return False
            await self._audit(conn, user_id, "rule.run_skipped", rule_id,
                              {"run_at": run_at.isoformat()})
        return True

    async def pause(self, user_id: int, rule_id: int
                    ) -> RuleView | NotYourRule | WrongState:
        """Stops an active rule from running; pausing a paused rule changes nothing."""
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None:
                return NotYourRule()
            rule = owned[0]
            if rule.status is RuleStatus.PAUSED:
                return RuleView.of(rule)
            if rule.status is not RuleStatus.ACTIVE:
                return WrongState(rule.status)
            repo = RulesRepository(conn)
            await repo.set_status(rule.id, RuleStatus.PAUSED, self._clock.now())
            await self._audit(conn, user_id, "rule.paused", rule.id, {"line": rule.line_id})
            return RuleView.of(present(await repo.get(rule.id), f"rule {rule.id} exists"))

    async def resume(self, user_id: int, rule_id: int
                     ) -> RuleView | NotYourRule | WrongState:
        """Turns a paused rule back on; a calendar rule's next run counts from now."""
        now = self._clock.now()
        zone = await self._zone(user_id)
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None or owned[1] is None:
                return NotYourRule()
            rule = owned[0]
            if rule.status is RuleStatus.ACTIVE:
                return RuleView.of(rule)
            if rule.status is not RuleStatus.PAUSED:
                return WrongState(rule.status)
            repo = RulesRepository(conn)
            await repo.update(rule.id, now=now, status=RuleStatus.ACTIVE,
                              next_run_at=first_run_at(rule.spec, now, zone))
            await self._audit(conn, user_id, "rule.resumed", rule.id, {"line": rule.line_id})
            await _watch_now(conn, self._cipher, rule, now)
            return RuleView.of(present(await repo.get(rule.id), f"rule {rule.id} exists"))

    async def delete(self, user_id: int, rule_id: int) -> RuleView | NotYourRule:
        """Disables the rule for good (the row stays for history); twice is the same."""
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None:
                return NotYourRule()
            rule = owned[0]
            if rule.status is RuleStatus.DISABLED:
                return RuleView.of(rule)
            repo = RulesRepository(conn)
            await repo.set_status(rule.id, RuleStatus.DISABLED, self._clock.now())
            await self._audit(conn, user_id, "rule.deleted", rule.id,
                              {"line": rule.line_id, "was": rule.status.value})
            return RuleView.of(present(await repo.get(rule.id), f"rule {rule.id} exists"))

    async def edit(self, user_id: int, rule_id: int, spec: RuleSpec, sms_text: str
                   ) -> Edited | NotYourRule | WrongState | Invalid:
        """Changes what a rule does. Raising its amount or cap above what was confirmed, a
        new currency, or switching to automatic approval puts it back to waiting for a
        code (sent to the line); anything else applies at once."""
        await self._catalog.warm()
        now = self._clock.now()
        zone = await self._zone(user_id)
        async with self._db.write() as conn:
            owned = await self._owned_rule(conn, user_id, rule_id, lock=True)
            if owned is None:
                return NotYourRule()
            rule, line = owned
            if line is None:
                return NotYourRule()
            if rule.status is RuleStatus.DISABLED:
                return WrongState(rule.status)
            prepared = self._prepare(zone, spec, line, now)
            if isinstance(prepared, Invalid):
                return prepared
            spec, amount = prepared
            to_auto = spec.approval is Approval.AUTO and (
                rule.approval is Approval.ASK or rule.status is RuleStatus.AWAITING_OTP)
            # An eSIM's purchase proved it: what a code would confirm applies at once.
            needs_code = not line.is_esim and (
                spec.currency != rule.currency or to_auto or needs_confirmation(
                    rule.confirmed_amount_minor, rule.confirmed_cap_minor, amount,
                    spec.monthly_cap))
            next_run_at: datetime | None = None
            if needs_code:
                status = RuleStatus.AWAITING_OTP
            elif rule.status is RuleStatus.PAUSED:
                status = RuleStatus.PAUSED
            else:
                status = RuleStatus.ACTIVE
                schedule = schedule_of(spec)
                if (rule.status is RuleStatus.ACTIVE and rule.next_run_at is not None
                        and schedule == schedule_of(rule.spec)):
                    next_run_at = rule.next_run_at  # same calendar: keep the run that is due
                else:
                    next_run_at = first_run_at(spec, now, zone)
            repo = RulesRepository(conn)
            confirmed = ({"confirmed_amount_minor": amount.minor,
                          "confirmed_cap_minor": spec.monthly_cap.minor} if line.is_esim else {})
            await repo.update(rule.id, now=now, status=status, next_run_at=next_run_at,
                              **spec_columns(spec), **confirmed)
            await self._audit(conn, user_id, "rule.edited", rule.id, {
                "line": rule.line_id, "needs_code": needs_code, "status": status.value,
                **_summary(spec, amount)})
            edited = present(await repo.get(rule.id), f"rule {rule.id} exists")
        if not needs_code:
            return Edited(RuleView.of(edited), None)
        return Edited(RuleView.of(edited), await self._send_code(user_id, line, rule.id, sms_text))

    async def disable_for_line(self, conn: AsyncConnection, line_id: int) -> int:
        """Within the caller's transaction (a line being unbound): disables the line's rules
        and audits it; how many were disabled."""
        now = self._clock.now()
        disabled = await RulesRepository(conn).disable_for_line(line_id, now)
        if disabled:
            await AuditRepository(conn).record(at=now, actor="system",
                                               action="rule.disabled_for_line",
                                               subject=str(line_id),
                                               details={"rules": disabled})
        return disabled

    async def list(self, user_id: int) -> builtins.list[RuleView]:
        """The user's rules that are not deleted, on lines that are still theirs."""
        async with self._db.read() as conn:
            mine = {line.id for line in
                    await LinesRepository(conn, self._cipher).for_owner(user_id)}
            return [RuleView.of(rule) for rule in await RulesRepository(conn).for_owner(user_id)
                    if rule.line_id in mine]
