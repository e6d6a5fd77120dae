"""LinesService on every backend: a line's card (line, plan, newest reading the owner may
see) in one read, and choosing a plan only on one's own, still bound line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.phone import parse_cambodian_mobile
from bot.gateways.simulated_carrier import SimulatedCarrier
from bot.gateways.simulated_catalog import CATALOG
from bot.services.lines import LinesService
from bot.services.readings import ReadingsService
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.users import UsersRepository
from tests.unit.line_helpers import add_line

ALICE = 4101
BOB = 4102
CELLCARD = parse_cambodian_mobile("012345678")
SMART = parse_cambodian_mobile("0969999999")


@pytest.fixture
def lines(db: Database, cipher: FieldCipher, clock: ManualClock) -> LinesService:
    return LinesService(db, cipher, SimulatedCarrier(db, cipher, clock), clock)


@pytest.fixture
def readings(db: Database, cipher: FieldCipher, clock: ManualClock) -> ReadingsService:
    return ReadingsService(db, cipher, clock)


async def test_card_shows_the_lines_newest_reading_and_its_plan(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService,
        readings: ReadingsService) -> None:
    cellcard = await add_line(db, cipher, clock, ALICE)
    smart = await add_line(db, cipher, clock, ALICE, SMART)
    await readings.report_typed(ALICE, cellcard, "3")
    clock.advance(timedelta(hours=1))
    newest = await readings.report_typed(ALICE, cellcard, "2.50")
    await readings.report_typed(ALICE, smart, "9")
    plan = CATALOG[CELLCARD.operator][0]
    assert await lines.choose_plan(ALICE, cellcard, plan.id) is not None

    card = await lines.card(ALICE, cellcard)

    assert card is not None
    assert (card.line.id, card.plan, card.reading) == (cellcard, plan, newest.reading)
    unread = await lines.card(ALICE, await add_line(db, cipher, clock, ALICE,
                                                    parse_cambodian_mobile("0971234567")))
    assert unread is not None and (unread.plan, unread.reading) == (None, None)


async def test_card_of_someone_elses_or_an_unknown_line_is_none(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService) -> None:
    bobs = await add_line(db, cipher, clock, BOB)

    assert await lines.card(ALICE, bobs) is None
    assert await lines.card(ALICE, bobs + 1000) is None
    assert await lines.card(BOB, bobs) is not None


async def test_card_hides_readings_from_before_the_line_was_theirs(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService,
        readings: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, BOB)
    await readings.report_typed(BOB, line_id, "7.77")
    clock.advance(timedelta(days=1))
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=clock.now())
        await LinesRepository(conn, cipher).transfer(line_id, new_owner_id=ALICE,
                                                     now=clock.now())

    card = await lines.card(ALICE, line_id)
    assert card is not None and card.reading is None
    assert await lines.card(BOB, line_id) is None

    clock.advance(timedelta(minutes=1))
    mine = await readings.report_typed(ALICE, line_id, "1")
    card = await lines.card(ALICE, line_id)
    assert card is not None and card.reading == mine.reading


async def test_choose_plan_stores_it_and_audits_once(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    plan = CATALOG[CELLCARD.operator][1]

    chosen = await lines.choose_plan(ALICE, line_id, plan.id)

    assert chosen is not None and chosen.plan == plan
    assert chosen.line.plan_product_id == plan.id
    async with db.read() as conn:
        stored = await LinesRepository(conn, cipher).get(line_id)
        audit = await AuditRepository(conn).latest(action="line.plan_chosen")
    assert stored is not None and stored.plan_product_id == plan.id
    assert [(e.actor, e.subject, e.details) for e in audit] == [
        (f"user:{ALICE}", str(line_id), {"plan": plan.id})]


async def test_choose_plan_refuses_other_operators_plans_and_other_peoples_lines(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    smart_plan = CATALOG[SMART.operator][0]

    assert await lines.choose_plan(ALICE, line_id, smart_plan.id) is None
    assert await lines.choose_plan(ALICE, line_id, "no-such-plan") is None
    assert await lines.choose_plan(BOB, line_id, CATALOG[CELLCARD.operator][0].id) is None
    async with db.read() as conn:
        stored = await LinesRepository(conn, cipher).get(line_id)
        audit = await AuditRepository(conn).latest(action="line.plan_chosen")
    assert stored is not None and stored.plan_product_id is None
    assert audit == []


async def test_choose_plan_on_a_line_unbound_after_it_was_read_changes_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock, lines: LinesService,
        monkeypatch: pytest.MonkeyPatch) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    plan = CATALOG[CELLCARD.operator][0]
    read_line = lines.catalog

    async def unbound_meanwhile(user_id: int, line: int) -> object:
        found = await read_line(user_id, line)  # the read sees it bound ...
        await lines.unbind(ALICE, line_id)  # ... then it is unbound before the write
        return found

    monkeypatch.setattr(lines, "catalog", unbound_meanwhile)

    assert await lines.choose_plan(ALICE, line_id, plan.id) is None
    async with db.read() as conn:
        stored = await LinesRepository(conn, cipher).get(line_id)
        audit = await AuditRepository(conn).latest(action="line.plan_chosen")
    assert stored is not None and stored.plan_product_id is None
    assert audit == []
