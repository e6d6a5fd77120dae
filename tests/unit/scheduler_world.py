"""What the scheduler tests share: the charging world plus a SchedulerService over it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from bot.clock import Clock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger, first_run_at
from bot.gateways.topup import GatewayTimeout
from bot.services.charging import ChargingService
from bot.services.scheduler import SchedulerService, SweepSettings
from storage.charges import ChargeRecord
from storage.lines import LineRecord, LinesRepository
from storage.rules import RuleRecord, RulesRepository
from storage.tables import lines, notifications
from tests.unit.charging_world import ALICE_NUMBER, World, usd

ZONE = ZoneInfo("Asia/Phnom_Penh")


def scheduler(world: World, *, worker: str = "test", batch: int = 500,
              readings: object | None = None, charging: ChargingService | None = None,
              **settings: object) -> SchedulerService:
    return SchedulerService(
        world.db, world.cipher, readings or world.carrier,  # type: ignore[arg-type]
        charging or world.service(), world.clock, default_zone=ZONE,
        settings=SweepSettings(worker=worker, batch=batch, **settings),  # type: ignore[arg-type]
        rng=random.Random(1))


async def set_balance(world: World, cents: int) -> None:
    await world.carrier.set_balance(ALICE_NUMBER.e164, ALICE_NUMBER.operator, usd(cents))


async def warn_below(world: World, line_id: int, cents: int | None,
                     data_mb: int | None = None) -> None:
    async with world.db.write() as conn:
        await LinesRepository(conn, world.cipher).set_warnings(
            line_id, balance_minor=cents, data_mb=data_mb, now=world.clock.now())


async def line(world: World, line_id: int) -> LineRecord:
    async with world.db.read() as conn:
        found = await LinesRepository(conn, world.cipher).get(line_id)
    assert found is not None
    return found


async def make_due(world: World, line_id: int | None = None) -> None:
    """Every line (or one) due for a check now."""
    query = update(lines).values(next_check_at=world.clock.now())
    if line_id is not None:
        query = query.where(lines.c.id == line_id)
    async with world.db.write() as conn:
        await conn.execute(query)


async def add_rule(world: World, line_id: int, owner: int, *, trigger: Trigger,
                   approval: Approval = Approval.AUTO, cap: int = 2000, amount: int = 500,
                   threshold: int | None = None, threshold_mb: int | None = None,
                   days_before: int | None = None,
                   calendar: CalendarKind | None = None, calendar_value: int | None = None,
                   calendar_anchor: date | None = None) -> RuleRecord:
    spec = RuleSpec(trigger=trigger, monthly_cap=usd(cap), approval=approval,
                    amount=usd(amount), calendar=calendar, calendar_value=calendar_value,
                    calendar_anchor=calendar_anchor,
                    threshold=Money(threshold, "USD") if threshold is not None else None,
                    threshold_mb=threshold_mb, days_before=days_before)
    async with world.db.write() as conn:
        return await RulesRepository(conn).add(
            line_id=line_id, owner_id=owner, spec=spec, now=world.clock.now(),
            status=RuleStatus.ACTIVE, next_run_at=first_run_at(spec, world.clock.now(), ZONE))


async def rule(world: World, rule_id: int) -> RuleRecord:
    async with world.db.read() as conn:
        found = await RulesRepository(conn).get(rule_id)
    assert found is not None
    return found


async def queued(world: World, kind: str) -> list[dict[str, object]]:
    async with world.db.read() as conn:
        rows = await conn.execute(select(notifications).where(notifications.c.kind == kind)
                                  .order_by(notifications.c.id))
        return [dict(row) for row in rows.mappings()]


def at(world: World, **delta: float) -> datetime:
    return world.clock.now() + timedelta(**delta)


async def charges_of(world: World, rule_id: int) -> list[ChargeRecord]:
    """The rule's charges, oldest first."""
    return sorted((c for c in await world.all_charges() if c.rule_id == rule_id),
                  key=lambda c: c.id)


@dataclass
class Scripted:
    """What the fake backend reads on one number."""

    balance_minor: int = 1000
    data_mb: int | None = 5000
    validity_end: datetime | None = None  # None: 30 days after the read
    fails: bool = False  # the gateway times out (GatewayTimeout)
    hangs: bool = False  # the read takes ``FakeReadings.hang_seconds``


@dataclass
class FakeReadings:
    """A line-readings backend the test scripts per number; it counts its reads and yields to
    the event loop on every read, so concurrent sweeps interleave."""

    clock: Clock
    unreadable: set[Operator] = field(default_factory=set)
    lines: dict[str, Scripted] = field(default_factory=dict)
    reads: Counter[str] = field(default_factory=Counter)
    hang_seconds: float = 1.0

    def script(self, e164: str) -> Scripted:
        return self.lines.setdefault(e164, Scripted())

    def can_read(self, operator: Operator) -> bool:
        return operator not in self.unreadable

    async def read(self, phone_e164: str, operator: Operator) -> LineReading:
        self.reads[phone_e164] += 1
        await asyncio.sleep(0)
        scripted = self.lines.get(phone_e164, Scripted())
        if scripted.hangs:
            await asyncio.sleep(self.hang_seconds)  # cut short by the sweep's read timeout
        if scripted.fails:
            raise GatewayTimeout("scripted gateway timeout")
        now = self.clock.now()
        return LineReading(
            source=ReadingSource.PROVIDER, read_at=now,
            balance=Money(scripted.balance_minor, "USD"), data_mb=scripted.data_mb,
            validity_end=scripted.validity_end or now + timedelta(days=30))
