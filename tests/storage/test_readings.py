"""ReadingsRepository on every backend: readings stored with their source, the newest per
line, and history oldest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy.exc
from sqlalchemy import event, func, select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from bot.domain.readings import LineReading, ReadingSource
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.readings import ReadingsRepository
from storage.tables import line_readings
from storage.users import UsersRepository

OWNER = 3001
CELLCARD = parse_cambodian_mobile("012345678")
SMART = parse_cambodian_mobile("0969999999")
METFONE = parse_cambodian_mobile("0971234567")


async def add_line(db: Database, cipher: FieldCipher, now: datetime,
                   number: MobileNumber = CELLCARD) -> int:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(OWNER, language="en", now=now)
        line = await LinesRepository(conn, cipher).add(owner_id=OWNER, number=number, now=now)
    return line.id


def reading(read_at: datetime, *, minor: int | None = None, currency: str = "USD",
            data_mb: int | None = None, validity_end: datetime | None = None,
            source: ReadingSource = ReadingSource.USER) -> LineReading:
    return LineReading(source=source, read_at=read_at,
                       balance=Money(minor, currency) if minor is not None else None,
                       data_mb=data_mb, validity_end=validity_end)


async def test_a_reading_round_trips_with_every_field(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    stored = reading(now - timedelta(minutes=5), minor=125, data_mb=1536,
                     validity_end=datetime(2026, 12, 25, 16, 59, 59, tzinfo=UTC),
                     source=ReadingSource.PROVIDER)

    async with db.write() as conn:
        await ReadingsRepository(conn).add(line_id, stored, recorded_at=now)
    async with db.read() as conn:
        latest = await ReadingsRepository(conn).latest(line_id)
        row = (await conn.execute(select(line_readings))).mappings().one()

    assert latest == stored
    assert latest.read_at.tzinfo is not None
    assert latest.validity_end is not None and latest.validity_end.tzinfo is not None
    assert row["recorded_at"] == now
    assert row["source"] == "provider"
    assert (row["balance_minor"], row["currency"], row["data_mb"]) == (125, "USD", 1536)


async def test_a_reading_without_a_balance_has_no_currency(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    only_validity = reading(now, validity_end=now + timedelta(days=40),
                            source=ReadingSource.ESTIMATE)

    async with db.write() as conn:
        await ReadingsRepository(conn).add(line_id, only_validity, recorded_at=now)
    async with db.read() as conn:
        row = (await conn.execute(select(line_readings))).mappings().one()
        latest = await ReadingsRepository(conn).latest(line_id)

    assert row["balance_minor"] is None
    assert row["currency"] is None
    assert row["data_mb"] is None
    assert latest == only_validity


async def test_riel_balances_keep_their_currency(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)

    async with db.write() as conn:
        await ReadingsRepository(conn).add(line_id, reading(now, minor=4_000_00, currency="KHR"),
                                           recorded_at=now)
    async with db.read() as conn:
        latest = await ReadingsRepository(conn).latest(line_id)

    assert latest is not None
    assert latest.balance == Money(4_000_00, "KHR")


async def test_latest_is_the_newest_read_not_the_last_recorded(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    newer = reading(now - timedelta(hours=1), minor=50)
    older = reading(now - timedelta(days=2), minor=900)  # arrives late (e.g. a slow provider)

    async with db.write() as conn:
        repo = ReadingsRepository(conn)
        await repo.add(line_id, newer, recorded_at=now)
        await repo.add(line_id, older, recorded_at=now + timedelta(seconds=1))
    async with db.read() as conn:
        latest = await ReadingsRepository(conn).latest(line_id)

    assert latest == newer


async def test_latest_of_a_line_without_readings_is_none(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    line_id = await add_line(db, cipher, clock.now())

    async with db.read() as conn:
        assert await ReadingsRepository(conn).latest(line_id) is None
        assert await ReadingsRepository(conn).latest(line_id + 999) is None


async def test_two_readings_at_the_same_moment_the_later_recorded_wins(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)

    async with db.write() as conn:
        repo = ReadingsRepository(conn)
        await repo.add(line_id, reading(now, minor=100), recorded_at=now)
        await repo.add(line_id, reading(now, minor=200), recorded_at=now)
    async with db.read() as conn:
        latest = await ReadingsRepository(conn).latest(line_id)
        per_line = await ReadingsRepository(conn).latest_for_lines([line_id])

    assert latest is not None and latest.balance == Money(200, "USD")
    assert per_line == {line_id: latest}


async def test_latest_for_lines_gives_each_lines_newest_reading(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    cellcard = await add_line(db, cipher, now, CELLCARD)
    smart = await add_line(db, cipher, now, SMART)
    metfone = await add_line(db, cipher, now, METFONE)  # never read
    async with db.write() as conn:
        repo = ReadingsRepository(conn)
        for hours, minor in ((3, 300), (1, 100), (2, 200)):
            await repo.add(cellcard, reading(now - timedelta(hours=hours), minor=minor),
                           recorded_at=now)
        await repo.add(smart, reading(now - timedelta(days=3), data_mb=10),
                       recorded_at=now)
        await repo.add(smart, reading(now - timedelta(days=1), data_mb=2048),
                       recorded_at=now)

    async with db.read() as conn:
        repo = ReadingsRepository(conn)
        latest = await repo.latest_for_lines([cellcard, smart, metfone, cellcard])
        only_smart = await repo.latest_for_lines([smart])
        none = await repo.latest_for_lines([])

    assert latest == {
        cellcard: reading(now - timedelta(hours=1), minor=100),
        smart: reading(now - timedelta(days=1), data_mb=2048),
    }
    assert latest[cellcard].read_at.tzinfo is not None
    assert only_smart == {smart: latest[smart]}
    assert none == {}


async def test_latest_for_lines_is_one_query(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    ids = [await add_line(db, cipher, now, number) for number in (CELLCARD, SMART, METFONE)]
    async with db.write() as conn:
        for line_id in ids:
            await ReadingsRepository(conn).add(line_id, reading(now, minor=line_id),
                                               recorded_at=now)
    statements: list[str] = []

    async with db.read() as conn:

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(conn.sync_connection, "before_cursor_execute", count)
        try:
            latest = await ReadingsRepository(conn).latest_for_lines(ids)
        finally:
            event.remove(conn.sync_connection, "before_cursor_execute", count)

    assert len(statements) == 1
    assert {line_id: r.balance for line_id, r in latest.items()} == {
        line_id: Money(line_id, "USD") for line_id in ids}


async def test_history_is_oldest_first_from_since(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    other = await add_line(db, cipher, now, SMART)
    moments = [now - timedelta(days=days) for days in (1, 10, 5, 30, 7)]
    async with db.write() as conn:
        repo = ReadingsRepository(conn)
        for index, moment in enumerate(moments):
            await repo.add(line_id, reading(moment, minor=index), recorded_at=now)
        await repo.add(other, reading(now - timedelta(days=2), minor=999), recorded_at=now)

    since = now - timedelta(days=7)
    async with db.read() as conn:
        history = await ReadingsRepository(conn).history(line_id, since)
        everything = await ReadingsRepository(conn).history(line_id, now - timedelta(days=365))
        nothing = await ReadingsRepository(conn).history(line_id, now + timedelta(seconds=1))

    assert [r.read_at for r in history] == [now - timedelta(days=d) for d in (7, 5, 1)]
    assert [r.balance.minor for r in history if r.balance] == [4, 2, 0]  # 7 is inclusive
    assert len(everything) == 5
    assert [r.read_at for r in everything] == sorted(moments)
    assert nothing == []


async def test_history_since_in_another_offset_is_the_same_instant(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    async with db.write() as conn:
        await ReadingsRepository(conn).add(line_id, reading(now, minor=1), recorded_at=now)

    phnom_penh = timezone(timedelta(hours=7))
    async with db.read() as conn:
        repo = ReadingsRepository(conn)
        at_the_instant = await repo.history(line_id, now.astimezone(phnom_penh))
        just_after = await repo.history(line_id, (now + timedelta(seconds=1))
                                        .astimezone(phnom_penh))

    assert len(at_the_instant) == 1
    assert just_after == []


async def test_readings_go_with_their_line(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    now = clock.now()
    line_id = await add_line(db, cipher, now)
    async with db.write() as conn:
        await ReadingsRepository(conn).add(line_id, reading(now, minor=1), recorded_at=now)
        await LinesRepository(conn, cipher).remove(line_id)
    async with db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(line_readings)))
        assert count.scalar_one() == 0


async def test_a_reading_for_an_unknown_line_is_refused(
        db: Database, clock: ManualClock) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with db.write() as conn:
            await ReadingsRepository(conn).add(424242, reading(clock.now(), minor=1),
                                               recorded_at=clock.now())
