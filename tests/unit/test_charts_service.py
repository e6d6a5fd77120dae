"""ChartsService on every backend: a chart's points are the line's readings in its window,
source by source, with its top-ups marked; nothing of another owner's or another line's."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.readings import LineReading, ReadingSource
from bot.services.charts import ChartMetric, ChartPoint, ChartSeries, ChartsService, TopUpMark
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.readings import ReadingsRepository
from storage.users import UsersRepository
from tests.unit.line_helpers import add_line

ALICE, BOB = 4201, 4202
SECOND_CELLCARD = parse_cambodian_mobile("012999888")


def usd(cents: int) -> Money:
    return Money(cents, "USD")


@pytest.fixture
def charts(db: Database, cipher: FieldCipher, clock: ManualClock) -> ChartsService:
    return ChartsService(db, cipher, clock, esim_provider_name="Simulated eSIM")


async def store(db: Database, clock: ManualClock, line_id: int, *readings: LineReading) -> None:
    async with db.write() as conn:
        await ReadingsRepository(conn).add_many([(line_id, r) for r in readings],
                                                recorded_at=clock.now())


async def top_up(db: Database, cipher: FieldCipher, line_id: int, user_id: int, amount: Money,
                 at: datetime, *, state: ChargeState = ChargeState.SUCCEEDED) -> None:
    """A charge of the line that reached ``state`` at ``at``."""
    async with db.write() as conn:
        repo = ChargesRepository(conn, cipher)
        charge, _ = await repo.create(idempotency_key=f"test:{line_id}:{at.isoformat()}",
                                      user_id=user_id, line_id=line_id, amount=amount,
                                      cause="manual", state=ChargeState.APPROVED, now=at)
        assert await repo.transition(charge.id, ChargeState.APPROVED, ChargeState.SUBMITTED, at)
        assert await repo.transition(charge.id, ChargeState.SUBMITTED, state, at,
                                     **({"failure_reason": "declined"}
                                        if state is ChargeState.FAILED else {}))


async def test_the_points_are_the_readings_of_the_window_source_by_source(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    clock.advance(timedelta(days=60))
    now = clock.now()
    old = LineReading(ReadingSource.PROVIDER, now - timedelta(days=31), balance=usd(900))
    carrier = [LineReading(ReadingSource.PROVIDER, now - timedelta(days=d, minutes=7),
                           balance=usd(500 - d), data_mb=2048 - d) for d in (29, 20, 3)]
    typed = LineReading(ReadingSource.USER, now - timedelta(days=10), balance=usd(125))
    sms_data_only = LineReading(ReadingSource.USER, now - timedelta(days=5), data_mb=700)
    estimate = LineReading(ReadingSource.ESTIMATE, now - timedelta(days=3),
                           validity_end=now + timedelta(days=27))
    await store(db, clock, line_id, old, *carrier, typed, sms_data_only, estimate)

    chart = await charts.chart(ALICE, line_id, days=30)

    assert chart is not None
    assert (chart.metric, chart.unit, chart.days, chart.title) == (
        ChartMetric.BALANCE, "USD", 30, "012 ••• 678")
    assert (chart.start, chart.end) == (now - timedelta(days=30), now)
    assert chart.series == (
        ChartSeries(ReadingSource.PROVIDER, tuple(
            ChartPoint(r.read_at, Decimal(500 - d) / 100)
            for r, d in zip(carrier, (29, 20, 3), strict=True))),
        ChartSeries(ReadingSource.USER, (ChartPoint(typed.read_at, Decimal("1.25")),)))
    assert chart.metrics == (ChartMetric.BALANCE, ChartMetric.DATA)
    assert chart.enough and chart.point_count == 4

    data = await charts.chart(ALICE, line_id, days=30, metric=ChartMetric.DATA)
    assert data is not None and data.unit == "MB"
    assert data.series == (
        ChartSeries(ReadingSource.PROVIDER, tuple(
            ChartPoint(r.read_at, Decimal(r.data_mb or 0)) for r in carrier)),
        ChartSeries(ReadingSource.USER, (ChartPoint(sms_data_only.read_at, Decimal(700)),)))

    longer = await charts.chart(ALICE, line_id, days=90)
    assert longer is not None
    assert [p.at for p in longer.series[0].points] == [old.read_at] + [r.read_at
                                                                      for r in carrier]


async def test_succeeded_top_ups_of_the_window_are_marked(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    other_line = await add_line(db, cipher, clock, ALICE, SECOND_CELLCARD)
    clock.advance(timedelta(days=100))
    now = clock.now()
    await top_up(db, cipher, line_id, ALICE, usd(200), now - timedelta(days=40))
    await top_up(db, cipher, line_id, ALICE, usd(500), now - timedelta(days=12))
    await top_up(db, cipher, line_id, ALICE, usd(100), now - timedelta(days=6),
                 state=ChargeState.FAILED)
    await top_up(db, cipher, line_id, ALICE, usd(300), now - timedelta(days=2))
    await top_up(db, cipher, other_line, ALICE, usd(900), now - timedelta(days=1))

    chart = await charts.chart(ALICE, line_id, days=30)
    longer = await charts.chart(ALICE, line_id, days=90)

    assert chart is not None and longer is not None
    assert chart.top_ups == (TopUpMark(now - timedelta(days=12), usd(500)),
                             TopUpMark(now - timedelta(days=2), usd(300)))
    assert longer.top_ups == (TopUpMark(now - timedelta(days=40), usd(200)), *chart.top_ups)


async def test_too_few_readings_are_not_enough_and_the_balance_is_still_the_default(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    clock.advance(timedelta(days=1))
    await store(db, clock, line_id, LineReading(ReadingSource.USER, clock.now(),
                                                balance=usd(300)))

    chart = await charts.chart(ALICE, line_id, days=30)

    assert chart is not None and not chart.enough and chart.point_count == 1
    assert chart.metric is ChartMetric.BALANCE and chart.metrics == (ChartMetric.BALANCE,)


async def test_a_line_with_only_data_readings_opens_on_data(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    clock.advance(timedelta(days=2))
    await store(db, clock, line_id,
                *(LineReading(ReadingSource.USER, clock.now() - timedelta(hours=h),
                              data_mb=100 + h) for h in (30, 5)))

    chart = await charts.chart(ALICE, line_id, days=30)

    assert chart is not None and chart.metric is ChartMetric.DATA and chart.enough


async def test_an_esim_is_charted_by_data_only(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=clock.now())
        repo = LinesRepository(conn, cipher)
        line = await repo.add_esim(owner_id=ALICE, operator=Operator.SMART, now=clock.now())
        assert await repo.attach_iccid(line.id, "8985500000000001234", now=clock.now(),
                                       check_at=clock.now())
    clock.advance(timedelta(days=3))
    readings = [LineReading(ReadingSource.PROVIDER, clock.now() - timedelta(days=d),
                            data_mb=1000 * d) for d in (2, 1)]
    await store(db, clock, line.id, *readings)

    chart = await charts.chart(ALICE, line.id, days=30)

    assert chart is not None
    assert (chart.metric, chart.metrics, chart.read_by, chart.is_esim) == (
        ChartMetric.DATA, (ChartMetric.DATA,), "Simulated eSIM", True)
    assert chart.series == (ChartSeries(ReadingSource.PROVIDER, tuple(
        ChartPoint(r.read_at, Decimal(r.data_mb or 0)) for r in readings)),)
    assert await charts.chart(ALICE, line.id, days=30, metric=ChartMetric.BALANCE) is None


async def test_a_strangers_or_unbound_line_has_no_chart(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    clock.advance(timedelta(days=1))
    await store(db, clock, line_id, *(LineReading(ReadingSource.USER, clock.now()
                                                  - timedelta(hours=h), balance=usd(100))
                                      for h in (1, 2)))

    assert await charts.chart(BOB, line_id, days=30) is None
    assert await charts.chart(ALICE, line_id + 999, days=30) is None
    async with db.write() as conn:
        await LinesRepository(conn, cipher).unbind(line_id, now=clock.now())
    assert await charts.chart(ALICE, line_id, days=30) is None


async def test_nothing_from_before_the_owner_proved_the_line_is_shown(
        db: Database, cipher: FieldCipher, clock: ManualClock, charts: ChartsService) -> None:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=clock.now())
    line_id = await add_line(db, cipher, clock, BOB)
    await store(db, clock, line_id, LineReading(ReadingSource.USER, clock.now(),
                                                balance=usd(999)))
    await top_up(db, cipher, line_id, BOB, usd(700), clock.now())
    clock.advance(timedelta(days=5))
    async with db.write() as conn:  # Alice proves the number and takes it over
        await LinesRepository(conn, cipher).transfer(line_id, new_owner_id=ALICE,
                                                     now=clock.now())
    clock.advance(timedelta(days=1))
    mine = [LineReading(ReadingSource.USER, clock.now() - timedelta(hours=h), balance=usd(h))
            for h in (3, 1)]
    await store(db, clock, line_id, *mine)

    chart = await charts.chart(ALICE, line_id, days=30)

    assert chart is not None and chart.top_ups == ()
    assert chart.series == (ChartSeries(ReadingSource.USER, tuple(
        ChartPoint(r.read_at, Decimal(3 if i == 0 else 1) / 100)
        for i, r in enumerate(mine))),)


async def test_only_the_offered_windows_are_charted(charts: ChartsService) -> None:
    with pytest.raises(ValueError, match="not 7"):
        await charts.chart(ALICE, 1, days=7)
