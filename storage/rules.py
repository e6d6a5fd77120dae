"""Auto-recharge rules: one row per rule, on one line, owned by one user.

Amounts are integer minor units in the rule's currency. ``next_run_at`` is set only for
active calendar rules; the other triggers are found by the sweeps that read the lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.invariants import present
from bot.domain.money import Money
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger
from storage.common import claim_due
from storage.tables import recharge_rules

_UPDATABLE = frozenset({
    "trigger_kind", "calendar", "calendar_value", "calendar_anchor", "threshold_minor",
    "threshold_mb", "days_before", "product_id", "amount_minor", "currency",
    "monthly_cap_minor", "approval", "status", "confirmed_amount_minor", "confirmed_cap_minor",
    "next_run_at",
})


@dataclass(frozen=True)
class RuleRecord:
    id: int
    line_id: int
    owner_id: int
    trigger: Trigger
    calendar: CalendarKind | None
    calendar_value: int | None
    calendar_anchor: date | None
    threshold: Money | None
    threshold_mb: int | None
    days_before: int | None
    product_id: str | None
    amount: Money | None
    currency: str
    monthly_cap: Money
    approval: Approval
    status: RuleStatus
    confirmed_amount_minor: int
    confirmed_cap_minor: int
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    episode: int = 0  # threshold crossings so far (a charge's key names one)
    in_episode: bool = False  # below the threshold now: no new charge until it recovers
    reminded_for: datetime | None = None  # the run whose 24-hour reminder went out
    skip_run_at: datetime | None = None  # the run the user chose to skip

    @property
    def spec(self) -> RuleSpec:
        return RuleSpec(
            trigger=self.trigger, monthly_cap=self.monthly_cap, approval=self.approval,
            amount=self.amount, product_id=self.product_id, calendar=self.calendar,
            calendar_value=self.calendar_value, calendar_anchor=self.calendar_anchor,
            threshold=self.threshold, threshold_mb=self.threshold_mb,
            days_before=self.days_before)


def spec_columns(spec: RuleSpec) -> dict[str, Any]:
    """The columns that hold what a rule says (not its status or confirmation)."""
    return {
        "trigger_kind": spec.trigger.value,
        "calendar": spec.calendar.value if spec.calendar is not None else None,
        "calendar_value": spec.calendar_value,
        "calendar_anchor": (spec.calendar_anchor.isoformat()
                            if spec.calendar_anchor is not None else None),
        "threshold_minor": spec.threshold.minor if spec.threshold is not None else None,
        "threshold_mb": spec.threshold_mb,
        "days_before": spec.days_before,
        "product_id": spec.product_id,
        "amount_minor": spec.amount.minor if spec.amount is not None else None,
        "currency": spec.monthly_cap.currency,
        "monthly_cap_minor": spec.monthly_cap.minor,
        "approval": spec.approval.value,
    }


def _record(row: RowMapping) -> RuleRecord:
    currency: str = row["currency"]

    def money(minor: int | None) -> Money | None:
        return Money(minor, currency) if minor is not None else None

    anchor = row["calendar_anchor"]
    return RuleRecord(
        id=row["id"], line_id=row["line_id"], owner_id=row["owner_id"],
        trigger=Trigger(row["trigger_kind"]),
        calendar=CalendarKind(row["calendar"]) if row["calendar"] is not None else None,
        calendar_value=row["calendar_value"],
        calendar_anchor=date.fromisoformat(anchor) if anchor is not None else None,
        threshold=money(row["threshold_minor"]), threshold_mb=row["threshold_mb"],
        days_before=row["days_before"], product_id=row["product_id"],
        amount=money(row["amount_minor"]), currency=currency,
        monthly_cap=Money(row["monthly_cap_minor"], currency),
        approval=Approval(row["approval"]), status=RuleStatus(row["status"]),
        confirmed_amount_minor=row["confirmed_amount_minor"],
        confirmed_cap_minor=row["confirmed_cap_minor"], next_run_at=row["next_run_at"],
        created_at=row["created_at"], updated_at=row["updated_at"], episode=row["episode"],
        in_episode=row["in_episode"], reminded_for=row["reminded_for"],
        skip_run_at=row["skip_run_at"])


class RulesRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, *, line_id: int, owner_id: int, spec: RuleSpec, now: datetime,
                  status: RuleStatus = RuleStatus.AWAITING_OTP,
                  next_run_at: datetime | None = None) -> RuleRecord:
        result = await self._conn.execute(insert(recharge_rules).values(
            line_id=line_id, owner_id=owner_id, status=status.value, next_run_at=next_run_at,
            confirmed_amount_minor=0, confirmed_cap_minor=0, created_at=now, updated_at=now,
            **spec_columns(spec)).returning(recharge_rules.c.id))
        rule_id = result.scalar_one()
        return present(await self.get(rule_id), f"rule {rule_id} just inserted exists")

    async def get(self, rule_id: int, *, lock: bool = False) -> RuleRecord | None:
        query = select(recharge_rules).where(recharge_rules.c.id == rule_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _record(row) if row else None

    async def for_owner(self, owner_id: int) -> list[RuleRecord]:
        """The user's rules that are not disabled (deleted), oldest first."""
        query = (select(recharge_rules)
                 .where(recharge_rules.c.owner_id == owner_id,
                        recharge_rules.c.status != RuleStatus.DISABLED.value)
                 .order_by(recharge_rules.c.id))
        return [_record(r) for r in (await self._conn.execute(query)).mappings()]

    async def for_line(self, line_id: int, *, include_disabled: bool = False) -> list[RuleRecord]:
        query = select(recharge_rules).where(recharge_rules.c.line_id == line_id)
        if not include_disabled:
            query = query.where(recharge_rules.c.status != RuleStatus.DISABLED.value)
        rows = (await self._conn.execute(query.order_by(recharge_rules.c.id))).mappings()
        return [_record(r) for r in rows]

    async def update(self, rule_id: int, *, now: datetime, **values: Any) -> None:
        """Sets raw column values (see ``spec_columns``); ``updated_at`` becomes ``now``."""
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"not rule columns: {sorted(unknown)}")
        if isinstance(values.get("status"), RuleStatus):
            values["status"] = values["status"].value
        await self._conn.execute(update(recharge_rules).where(
            recharge_rules.c.id == rule_id).values(updated_at=now, **values))

    async def set_status(self, rule_id: int, status: RuleStatus, now: datetime) -> None:
        """A new status; a rule that is not active never has a run due."""
        values: dict[str, Any] = {"status": status.value}
        if status is not RuleStatus.ACTIVE:
            values["next_run_at"] = None
        await self.update(rule_id, now=now, **values)

    async def disable_for_line(self, line_id: int, now: datetime) -> int:
        """Disables every rule of a line (it was unbound); how many were not yet disabled."""
        result = await self._conn.execute(
            update(recharge_rules)
            .where(recharge_rules.c.line_id == line_id,
                   recharge_rules.c.status != RuleStatus.DISABLED.value)
            .values(status=RuleStatus.DISABLED.value, next_run_at=None, updated_at=now))
        return int(result.rowcount)

    # --- the scheduler ---------------------------------------------------------------------

    async def watching_lines(self, line_ids: Sequence[int]) -> list[RuleRecord]:
        """The active rules of these lines that a reading can fire (balance, data, validity)."""
        if not line_ids:
            return []
        query = (select(recharge_rules)
                 .where(recharge_rules.c.line_id.in_(sorted(set(line_ids))),
                        recharge_rules.c.status == RuleStatus.ACTIVE.value,
                        recharge_rules.c.trigger_kind != Trigger.CALENDAR.value)
                 .order_by(recharge_rules.c.id))
        return [_record(r) for r in (await self._conn.execute(query)).mappings()]

    async def set_episode(self, rule_id: int, *, episode: int, in_episode: bool,
                          now: datetime) -> None:
        await self._conn.execute(update(recharge_rules).where(recharge_rules.c.id == rule_id)
                                 .values(episode=episode, in_episode=in_episode,
                                         updated_at=now))

    def _calendar_due(self, now: datetime) -> Any:
        return ((recharge_rules.c.status == RuleStatus.ACTIVE.value)
                & (recharge_rules.c.trigger_kind == Trigger.CALENDAR.value)
                & (recharge_rules.c.next_run_at <= now))

    async def claim_due_runs(self, now: datetime, until: datetime,
                             limit: int) -> list[RuleRecord]:
        """Leases active calendar rules whose run is due, the most overdue first (see
        ``claim_due``)."""
        claimed = await claim_due(
            self._conn, recharge_rules, due=self._calendar_due(now),
            lease=recharge_rules.c.claimed_until, oldest_first=recharge_rules.c.next_run_at,
            now=now, until=until, limit=limit)
        return sorted((_record(row) for row in claimed),
                      key=lambda rule: (rule.next_run_at or until, rule.id))

    async def finish_run(self, rule_id: int, *, due_at: datetime, next_run_at: datetime,
                         now: datetime) -> bool:
        """Moves a claimed rule on to its next run; False when the rule changed meanwhile
        (paused, edited or deleted: its run is no longer ``due_at``)."""
        result = await self._conn.execute(
            update(recharge_rules)
            .where(recharge_rules.c.id == rule_id,
                   recharge_rules.c.status == RuleStatus.ACTIVE.value,
                   recharge_rules.c.next_run_at == due_at)
            .values(next_run_at=next_run_at, claimed_until=None, skip_run_at=None,
                    updated_at=now))
        return bool(result.rowcount)

    async def release_run(self, rule_id: int) -> None:
        await self._conn.execute(update(recharge_rules).where(recharge_rules.c.id == rule_id)
                                 .values(claimed_until=None))

    async def due_reminders(self, now: datetime, horizon: datetime,
                            limit: int) -> list[RuleRecord]:
        """Active calendar rules whose next run is ahead but before ``horizon`` and whose
        reminder for that run has not gone out."""
        query = (select(recharge_rules)
                 .where(recharge_rules.c.status == RuleStatus.ACTIVE.value,
                        recharge_rules.c.trigger_kind == Trigger.CALENDAR.value,
                        recharge_rules.c.next_run_at > now,
                        recharge_rules.c.next_run_at <= horizon,
                        or_(recharge_rules.c.reminded_for.is_(None),
                            recharge_rules.c.reminded_for != recharge_rules.c.next_run_at))
                 .order_by(recharge_rules.c.next_run_at).limit(limit))
        return [_record(r) for r in (await self._conn.execute(query)).mappings()]

    async def mark_reminded(self, rule_id: int, run_at: datetime) -> bool:
        """Records the reminder for ``run_at``; False when another sweeper did (or the run
        moved), so the reminder is queued once."""
        result = await self._conn.execute(
            update(recharge_rules)
            .where(recharge_rules.c.id == rule_id, recharge_rules.c.next_run_at == run_at,
                   or_(recharge_rules.c.reminded_for.is_(None),
                       recharge_rules.c.reminded_for != run_at))
            .values(reminded_for=run_at))
        return bool(result.rowcount)

    async def skip_run(self, rule_id: int, run_at: datetime, now: datetime) -> bool:
        """Marks the run at ``run_at`` to be skipped; False unless it is the rule's next run."""
        result = await self._conn.execute(
            update(recharge_rules)
            .where(recharge_rules.c.id == rule_id,
                   recharge_rules.c.status == RuleStatus.ACTIVE.value,
                   recharge_rules.c.next_run_at == run_at)
            .values(skip_run_at=run_at, updated_at=now))
        return bool(result.rowcount)

    async def due_runs(self, now: datetime) -> tuple[int, datetime | None]:
        """How many calendar runs are due, and the oldest."""
        row = (await self._conn.execute(
            select(func.count(), func.min(recharge_rules.c.next_run_at))
            .where(self._calendar_due(now)))).one()
        return int(row[0]), row[1]
