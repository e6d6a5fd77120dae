"""The history service on a real database (SQLite, and PostgreSQL when configured):

* a page merges charges, ledger entries and sent warnings, newest first, for all lines or
  one; only the user's own rows, so a line's previous owner stays out of it;
* the export holds every charge and ledger entry, user-chosen text kept from being a
  formula;
* a month's figures in the user's zone, per line and in total;
* the push on the 1st: for those who asked, once per month, after quiet hours.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.history import Month
from bot.domain.money import Money
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from bot.domain.quiet_hours import QuietHours
from bot.domain.rules import Approval, RuleSpec, RuleStatus, Trigger
from bot.domain.wallet import EntryKind
from bot.domain.watch import WarningKind
from bot.services.history import (
    ChargeItem,
    HistoryService,
    MonthlySummaryReady,
    MovementItem,
    WarningItem,
    summary_key,
)
from bot.services.notices import queue
from bot.services.scheduler import LineShown, LineWarning
from bot.services.users import UsersService
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.notifications import NotificationsRepository
from storage.payments import PaymentsRepository
from storage.rules import RulesRepository
from storage.tables import audit_log, notifications
from storage.users import UsersRepository
from storage.wallet import WalletRepository

PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")
NEW_YORK = ZoneInfo("America/New_York")
OWNER, OTHER = 555, 666
CELLCARD = parse_cambodian_mobile("012345678")
SMART = parse_cambodian_mobile("010345678")


@dataclass
class World:
    db: Database
    cipher: FieldCipher
    clock: ManualClock
    users: UsersService
    history: HistoryService
    keys: int = 0

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)

    async def user(self, user_id: int, zone: ZoneInfo | None = None) -> None:
        async with self.db.write() as conn:
            await UsersRepository(conn).ensure(user_id, language="en", now=self.clock.now())
        if zone is not None:
            await self.users.set_timezone(user_id, zone.key)

    async def line(self, owner_id: int, number: MobileNumber = CELLCARD,
                   nickname: str | None = None) -> int:
        async with self.db.write() as conn:
            line = await LinesRepository(conn, self.cipher).add(
                owner_id=owner_id, number=number, now=self.clock.now(), nickname=nickname)
        return line.id

    async def credit(self, user_id: int, cents: int, reference: str,
                     source: str = "operator") -> int:
        external = f"operator:{reference}" if source == "operator" else reference
        async with self.db.write() as conn:
            payment_id = await PaymentsRepository(conn, self.cipher).record_payment(
                user_id=user_id, source=source, external_id=external,
                amount=Money(cents, "USD"), now=self.clock.now(), actor="cli",
                memo="50 XTR" if source == "telegram" else None)
        assert payment_id is not None
        return payment_id

    async def refund(self, reference: str) -> None:
        async with self.db.write() as conn:
            payments = PaymentsRepository(conn, self.cipher)
            payment = await payments.by_external_id(reference)
            assert payment is not None
            assert await payments.record_refund(payment, now=self.clock.now())

    async def rule(self, owner_id: int, line_id: int, cap_cents: int,
                   status: RuleStatus = RuleStatus.ACTIVE) -> int:
        spec = RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=Money(cap_cents, "USD"),
                        approval=Approval.AUTO, amount=Money(100, "USD"),
                        threshold=Money(50, "USD"))
        async with self.db.write() as conn:
            rule = await RulesRepository(conn).add(line_id=line_id, owner_id=owner_id,
                                                   spec=spec, now=self.clock.now(),
                                                   status=status)
        return rule.id

    async def charge(self, user_id: int, line_id: int, cents: int, state: ChargeState,
                     rule_id: int | None = None) -> int:
        """A charge that went the way to ``state`` a charge goes, with its ledger entries."""
        now = self.clock.now()
        self.keys += 1
        asked = state in (ChargeState.AWAITING_APPROVAL, ChargeState.DECLINED,
                          ChargeState.EXPIRED)
        async with self.db.write() as conn:
            charges, wallet = ChargesRepository(conn, self.cipher), WalletRepository(conn)
            charge, _ = await charges.create(
                idempotency_key=f"test:{self.keys}", user_id=user_id, line_id=line_id,
                amount=Money(cents, "USD"), cause="manual" if rule_id is None else "low_balance",
                state=ChargeState.AWAITING_APPROVAL if asked else ChargeState.APPROVED,
                now=now, rule_id=rule_id)
            if asked:
                if state is not ChargeState.AWAITING_APPROVAL:
                    assert await charges.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                                    state, now)
                return charge.id
            assert await wallet.hold(charge_id=charge.id, user_id=user_id,
                                     amount=Money(cents, "USD"), now=now)
            if state is ChargeState.APPROVED:
                return charge.id
            assert await charges.transition(charge.id, ChargeState.APPROVED,
                                            ChargeState.SUBMITTED, now)
            if state is ChargeState.SUCCEEDED:
                assert await charges.transition(charge.id, ChargeState.SUBMITTED, state, now)
                assert await wallet.capture(charge.id, now=now)
            elif state is ChargeState.FAILED:
                assert await charges.transition(charge.id, ChargeState.SUBMITTED, state, now)
                assert await wallet.release(charge.id, now=now)
        return charge.id

    async def warning(self, user_id: int, line_id: int, label: str,
                      kind: WarningKind = WarningKind.LOW_BALANCE, sent: bool = True) -> None:
        now = self.clock.now()
        self.keys += 1
        notice = LineWarning(line=LineShown(id=line_id, label=label, plan_id=None,
                                            reading=None, plan=None),
                             warning=kind, threshold_minor=100, threshold_mb=None,
                             recycle_at=None)
        async with self.db.write() as conn:
            outbox = NotificationsRepository(conn)
            key = f"warning:{line_id}:{self.keys}"
            assert await queue(outbox, notice, user_id=user_id, chat_id=user_id,
                               dedupe_key=key, now=now)
            row = await outbox.by_key(key)
            assert row is not None
            if sent:
                assert await outbox.mark_sent(row.id, message_id=1, now=now)

    async def opt_in(self, user_id: int) -> None:
        assert await self.history.set_push(user_id, True) is True


@pytest.fixture
def world(db: Database, cipher: FieldCipher, clock: ManualClock) -> World:
    users = UsersService(db, clock, PHNOM_PENH, cache_for=timedelta(0))
    return World(db, cipher, clock, users,
                 HistoryService(db, cipher, clock, zone_for=users.zone_of,
                                default_zone=PHNOM_PENH))


def minutes(world: World, count: int) -> None:
    world.clock.advance(timedelta(minutes=count))


# --- pages --------------------------------------------------------------------------------


async def test_a_page_merges_every_source_newest_first(world: World) -> None:
    await world.user(OWNER)
    line = await world.line(OWNER, nickname="Mum")
    await world.credit(OWNER, 2000, "CASH-0001")
    minutes(world, 1)
    await world.charge(OWNER, line, 500, ChargeState.SUCCEEDED)
    minutes(world, 1)
    await world.warning(OWNER, line, "Mum")
    minutes(world, 1)
    await world.charge(OWNER, line, 200, ChargeState.FAILED)
    minutes(world, 1)
    await world.credit(OWNER, 100, "stxPAYMENT-99", source="telegram")
    minutes(world, 1)
    await world.refund("stxPAYMENT-99")
    await world.warning(OWNER, line, "Mum", sent=False)  # waiting for quiet hours: not yet

    first = await world.history.page(OWNER, None, 0, size=4)
    assert first is not None and (first.page, first.pages) == (0, 3)
    second = await world.history.page(OWNER, None, 1, size=4)
    third = await world.history.page(OWNER, None, 7, size=4)  # past the end: the last
    assert second is not None and third is not None and third.page == 2
    items = first.items + second.items + third.items
    assert [(type(item).__name__, getattr(item, "kind", None)) for item in items] == [
        ("MovementItem", EntryKind.REFUND), ("MovementItem", EntryKind.PAYMENT),
        ("MovementItem", EntryKind.RELEASE), ("MovementItem", EntryKind.HOLD),
        ("ChargeItem", None), ("WarningItem", None), ("MovementItem", EntryKind.HOLD),
        ("ChargeItem", None), ("MovementItem", EntryKind.OPERATOR_CREDIT)]
    assert [item.at for item in items] == sorted((item.at for item in items), reverse=True)
    refund, paid = items[0], items[1]
    assert isinstance(refund, MovementItem) and isinstance(paid, MovementItem)
    assert refund.amount == Money(-100, "USD") and refund.reference == "…T-99"
    assert refund.line is None and paid.reference == "…T-99"
    failed, held = items[4], items[3]
    assert isinstance(failed, ChargeItem) and isinstance(held, MovementItem)
    assert (failed.state, failed.amount, failed.line) == (ChargeState.FAILED,
                                                          Money(200, "USD"), "Mum")
    assert held.reference == failed.reference and held.line == "Mum"
    assert held.amount == Money(-200, "USD")
    warning = items[5]
    assert isinstance(warning, WarningItem) and warning.warning is WarningKind.LOW_BALANCE
    assert first.lines[0].label == "Mum" and first.line is None


async def test_a_lines_page_has_its_charges_their_entries_and_its_warnings_only(
        world: World) -> None:
    await world.user(OWNER)
    await world.user(OTHER)
    mine, second = await world.line(OWNER), await world.line(OWNER, SMART)
    await world.credit(OWNER, 2000, "CASH-0001")
    await world.charge(OWNER, mine, 500, ChargeState.SUCCEEDED)
    await world.charge(OWNER, second, 300, ChargeState.DECLINED)
    await world.warning(OWNER, second, "010 ••• 678")

    page = await world.history.page(OWNER, mine)
    assert page is not None and page.line is not None and page.line.id == mine
    assert [type(item).__name__ for item in page.items] == ["MovementItem", "ChargeItem"]
    other = await world.history.page(OWNER, second)
    assert other is not None
    assert [type(item).__name__ for item in other.items] == ["WarningItem", "ChargeItem"]
    assert await world.history.page(OTHER, mine) is None  # not theirs
    assert await world.history.page(OWNER, mine + 99) is None
    async with world.db.write() as conn:
        await LinesRepository(conn, world.cipher).unbind(mine, now=world.clock.now())
    assert await world.history.page(OWNER, mine) is None  # no longer bound
    everything = await world.history.page(OWNER, None)
    assert everything is not None and len(everything.items) == 5  # its past stays


async def test_a_line_that_changed_hands_keeps_each_owners_rows_apart(world: World) -> None:
    await world.user(OWNER)
    await world.user(OTHER)
    line = await world.line(OWNER, nickname="Old phone")
    await world.credit(OWNER, 1000, "CASH-1")
    await world.charge(OWNER, line, 500, ChargeState.SUCCEEDED)
    async with world.db.write() as conn:
        lines = LinesRepository(conn, world.cipher)
        await lines.transfer(line, new_owner_id=OTHER, now=world.clock.now())
        await lines.rename(line, "Their secret name", now=world.clock.now())

    theirs = await world.history.page(OTHER, line)
    assert theirs is not None and theirs.items == []
    mine = await world.history.page(OWNER, None)
    assert mine is not None
    charge = next(item for item in mine.items if isinstance(item, ChargeItem))
    assert charge.line == "012 ••• 678"  # the new owner's name is theirs


# --- the export ---------------------------------------------------------------------------


async def test_the_export_keeps_a_name_from_being_read_as_a_formula(world: World) -> None:
    await world.user(OWNER, NEW_YORK)
    line = await world.line(OWNER, nickname="=HYPERLINK(1)")
    await world.credit(OWNER, 1000, "CASH-1")
    await world.charge(OWNER, line, 500, ChargeState.SUCCEEDED)

    export = await world.history.export(OWNER, line)
    assert export is not None and export.rows == 2
    assert export.filename == f"history-line-{line}-2026-11-24.csv"  # the day in New York
    assert export.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"), newline="")))
    assert [(r["record"], r["kind"], r["amount"], r["line"]) for r in rows] == [
        ("charge", "manual", "5.00", "'=HYPERLINK(1)"),
        ("ledger", "hold", "-5.00", "'=HYPERLINK(1)")]
    assert rows[0]["date"].endswith("-05:00")
    assert await world.history.export(OTHER, line) is None


# --- the month ----------------------------------------------------------------------------


async def test_a_months_figures_are_counted_in_the_users_zone(world: World) -> None:
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    await world.user(OWNER)  # Phnom Penh, UTC+7
    mum, dad = await world.line(OWNER, nickname="Mum"), await world.line(OWNER, SMART)
    rule = await world.rule(OWNER, mum, 2000)
    await world.rule(OWNER, dad, 1500, status=RuleStatus.PAUSED)  # off: no cap
    await world.credit(OWNER, 5000, "CASH-1")
    world.at(datetime(2026, 10, 31, 16, 59, tzinfo=UTC))  # 31 Oct, 23:59 local: October
    await world.charge(OWNER, mum, 900, ChargeState.SUCCEEDED)
    world.at(datetime(2026, 10, 31, 17, 0, tzinfo=UTC))  # 1 Nov, 00:00 local
    await world.charge(OWNER, mum, 100, ChargeState.SUCCEEDED, rule_id=rule)
    await world.charge(OWNER, mum, 200, ChargeState.FAILED, rule_id=rule)
    await world.charge(OWNER, mum, 300, ChargeState.APPROVED, rule_id=rule)  # in flight
    await world.charge(OWNER, dad, 500, ChargeState.SUCCEEDED)
    await world.warning(OWNER, mum, "Mum")
    await world.warning(OWNER, mum, "Mum", kind=WarningKind.VALIDITY_3_DAYS)
    await world.warning(OWNER, dad, "010", sent=False)
    await world.credit(OWNER, 1000, "CASH-2")
    world.at(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))

    november = await world.history.month(OWNER)
    assert november is not None and november.month == Month(2026, 11)
    assert november.current and not november.earliest and november.push is False
    by_line = {line.line.label: line for line in november.lines}
    assert set(by_line) == {"Mum", "010 ••• 678"}
    assert (by_line["Mum"].top_ups, by_line["Mum"].spent, by_line["Mum"].capped,
            by_line["Mum"].cap, by_line["Mum"].warnings) == (
        1, Money(100, "USD"), Money(400, "USD"), Money(2000, "USD"), 2)
    assert (by_line["010 ••• 678"].top_ups, by_line["010 ••• 678"].cap,
            by_line["010 ••• 678"].warnings) == (1, None, 0)
    total = november.total
    assert (total.top_ups, total.spent, total.capped, total.cap, total.warnings,
            total.added) == (2, Money(600, "USD"), Money(400, "USD"), Money(2000, "USD"), 2,
                             Money(1000, "USD"))
    october = await world.history.month(OWNER, Month(2026, 10))
    assert october is not None and not october.current and october.earliest
    assert (october.total.top_ups, october.total.spent, october.total.added) == (
        1, Money(900, "USD"), Money(5000, "USD"))
    assert await world.history.month(OWNER, Month(2026, 12)) is None  # not begun


# --- the push on the 1st ------------------------------------------------------------------


async def queued_summaries(world: World) -> list[dict[str, object]]:
    async with world.db.read() as conn:
        rows = await conn.execute(select(notifications).where(
            notifications.c.kind == "monthly_summary").order_by(notifications.c.id))
        return [dict(row) for row in rows.mappings()]


async def test_the_summary_goes_once_to_those_who_asked_on_their_first(world: World) -> None:
    world.at(datetime(2026, 11, 2, tzinfo=UTC))
    for user, zone in ((OWNER, PHNOM_PENH), (OTHER, NEW_YORK), (777, PHNOM_PENH)):
        await world.user(user, zone)
    line = await world.line(OWNER)
    await world.credit(OWNER, 3000, "CASH-1")
    await world.charge(OWNER, line, 500, ChargeState.SUCCEEDED)
    await world.opt_in(OWNER)
    await world.opt_in(OTHER)  # 777 did not ask

    world.at(datetime(2026, 12, 1, 1, 59, tzinfo=UTC))  # 08:59 in Phnom Penh
    assert await world.history.queue_monthly_summaries() == 0
    world.at(datetime(2026, 12, 1, 2, 30, tzinfo=UTC))  # 09:30 there; 30 Nov in New York
    assert await world.history.queue_monthly_summaries() == 1
    assert await world.history.queue_monthly_summaries() == 0  # again: nothing more
    [owner] = await queued_summaries(world)
    assert owner["dedupe_key"] == summary_key(OWNER, Month(2026, 11)) == \
        f"monthly_summary:{OWNER}:2026-11"
    notice = MonthlySummaryReady.from_params(owner["params"])  # type: ignore[arg-type]
    assert notice == MonthlySummaryReady(
        month="2026-11", top_ups=1, spent=Money(500, "USD"), capped=Money(0, "USD"),
        cap=None, warnings=0, added=Money(3000, "USD"), lines=1)
    assert owner["next_attempt_at"] == world.clock.now()

    world.at(datetime(2026, 12, 1, 14, 30, tzinfo=UTC))  # 09:30 in New York
    assert await world.history.queue_monthly_summaries() == 1
    world.at(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))  # no zone is in its first days
    assert await world.history.queue_monthly_summaries() == 0
    assert [row["user_id"] for row in await queued_summaries(world)] == [OWNER, OTHER]


async def test_quiet_hours_hold_the_summary_back_and_unreachable_users_get_none(
        world: World) -> None:
    world.at(datetime(2026, 11, 2, tzinfo=UTC))
    await world.user(OWNER)
    await world.user(OTHER)
    await world.users.set_quiet_hours(OWNER, QuietHours(start_minute=22 * 60,
                                                        end_minute=10 * 60))
    await world.opt_in(OWNER)
    await world.opt_in(OTHER)
    async with world.db.write() as conn:
        await UsersRepository(conn).update(OTHER, now=world.clock.now(), reachable=False)

    world.at(datetime(2026, 12, 1, 2, 30, tzinfo=UTC))  # 09:30 local, quiet until 10:00
    assert await world.history.queue_monthly_summaries() == 1
    [row] = await queued_summaries(world)
    assert row["user_id"] == OWNER
    assert row["next_attempt_at"] == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


async def test_opting_out_stops_the_push_and_each_change_is_audited(world: World) -> None:
    world.at(datetime(2026, 11, 2, tzinfo=UTC))
    await world.user(OWNER)
    await world.opt_in(OWNER)
    assert await world.history.set_push(OWNER, False) is False
    summary = await world.history.month(OWNER)
    assert summary is not None and summary.push is False
    world.at(datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    assert await world.history.queue_monthly_summaries() == 0
    async with world.db.read() as conn:
        actions = (await conn.execute(select(audit_log.c.action, audit_log.c.details).where(
            audit_log.c.action == "user.monthly_summary").order_by(audit_log.c.id))).all()
    assert [tuple(row) for row in actions] == [("user.monthly_summary", {"on": True}),
                                               ("user.monthly_summary", {"on": False})]
