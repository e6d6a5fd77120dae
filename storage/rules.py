"""Auto-recharge rules: one row per rule, on one line, owned by one user.

Amounts are integer minor units in the rule's currency. ``next_run_at`` is set only for
active calendar rules; the other triggers are found by the sweeps that read the lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.money import Money
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger
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
        created_at=row["created_at"], updated_at=row["updated_at"])


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
        record = await self.get(result.scalar_one())
        assert record is not None
        return record

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
