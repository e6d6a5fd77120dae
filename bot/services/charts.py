"""A line's balance or data over the last 30 or 90 days, as plain data for a chart: one
series of readings per source, and the top-ups that landed meanwhile.

The model is what a chart shows, point for point; drawing it is the Telegram layer's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from bot.clock import Clock
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.readings import ReadingsRepository

CHART_DAYS = (30, 90)
MIN_POINTS = 2  # one point draws no line: below this the user gets a sentence instead
DATA_UNIT = "MB"


class ChartMetric(enum.StrEnum):
    BALANCE = "bal"
    DATA = "data"


@dataclass(frozen=True)
class ChartPoint:
    at: datetime
    value: Decimal  # in ``LineChart.unit``: major units of the currency, or megabytes


@dataclass(frozen=True)
class ChartSeries:
    source: ReadingSource
    points: tuple[ChartPoint, ...]  # oldest first


@dataclass(frozen=True)
class TopUpMark:
    at: datetime  # when it succeeded
    amount: Money


@dataclass(frozen=True)
class LineChart:
    line_id: int
    title: str  # the line's label
    is_esim: bool
    read_by: str | None  # the provider an eSIM's readings come from
    metric: ChartMetric
    metrics: tuple[ChartMetric, ...]  # what this line has readings of (the other is offered)
    unit: str  # a currency code for a balance, DATA_UNIT for data
    days: int
    start: datetime
    end: datetime
    series: tuple[ChartSeries, ...]  # sources with points, in ReadingSource order
    top_ups: tuple[TopUpMark, ...]  # oldest first

    @property
    def point_count(self) -> int:
        return sum(len(series.points) for series in self.series)

    @property
    def enough(self) -> bool:
        return self.point_count >= MIN_POINTS


def _allowed(line: LineRecord) -> tuple[ChartMetric, ...]:
    # An eSIM is data only: its provider reports no airtime balance.
    return (ChartMetric.DATA,) if line.is_esim else (ChartMetric.BALANCE, ChartMetric.DATA)


def _value(reading: LineReading, metric: ChartMetric) -> Money | int | None:
    return reading.balance if metric is ChartMetric.BALANCE else reading.data_mb


def _series(readings: Sequence[LineReading], metric: ChartMetric
            ) -> tuple[str, tuple[ChartSeries, ...]]:
    """The unit and the series of ``metric`` among ``readings`` (oldest first)."""
    unit = DATA_UNIT
    if metric is ChartMetric.BALANCE:
        balances = [r.balance for r in readings if r.balance is not None]
        # One axis, one currency: the newest reading's (a riel SMS among dollars is left out).
        unit = balances[-1].currency if balances else "USD"
    by_source: dict[ReadingSource, list[ChartPoint]] = {}
    for reading in readings:
        value = _value(reading, metric)
        if isinstance(value, Money):
            if value.currency != unit:
                continue
            amount = value.as_decimal()
        elif value is None:
            continue
        else:
            amount = Decimal(value)
        by_source.setdefault(reading.source, []).append(ChartPoint(reading.read_at, amount))
    return unit, tuple(ChartSeries(source, tuple(by_source[source]))
                       for source in ReadingSource if source in by_source)


class ChartsService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, *,
                 esim_provider_name: str | None = None) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._esim_provider_name = esim_provider_name

    async def chart(self, user_id: int, line_id: int, *, days: int,
                    metric: ChartMetric | None = None) -> LineChart | None:
        """The line's chart over the last ``days`` (one of CHART_DAYS) of ``metric`` (None:
        the one with readings, balance first); None when the line is not the user's or
        cannot have that metric (an eSIM's balance)."""
        if days not in CHART_DAYS:
            raise ValueError(f"a chart covers one of {CHART_DAYS} days, not {days}")
        now = self._clock.now()
        start = now - timedelta(days=days)
        longest = now - timedelta(days=max(CHART_DAYS))
        async with self._db.read() as conn:
            line = await LinesRepository(conn, self._cipher).get(line_id)
            if line is None or line.owner_id != user_id or not line.is_bound:
                return None
            # Nothing from before the owner proved the line (a previous owner's history).
            proven = line.verified_at or longest
            history = await ReadingsRepository(conn).history(line_id, max(longest, proven))
            charges = await ChargesRepository(conn, self._cipher).succeeded_for_line(
                line_id, user_id=user_id, since=max(start, proven))
        allowed = _allowed(line)
        if metric is not None and metric not in allowed:
            return None
        history = [r for r in history if r.read_at <= now]
        # Offered: what the longest window has readings of (so switching windows keeps it).
        offered = tuple(m for m in allowed
                        if m is allowed[0] or any(_value(r, m) is not None for r in history))
        window = [r for r in history if r.read_at >= start]
        chosen = metric or self._default(offered, window)
        unit, series = _series(window, chosen)
        return LineChart(
            line_id=line.id, title=line.label, is_esim=line.is_esim,
            read_by=self._esim_provider_name if line.is_esim else None,
            metric=chosen, metrics=offered, unit=unit, days=days, start=start, end=now,
            series=series,
            top_ups=tuple(TopUpMark(c.updated_at, c.amount) for c in charges
                          if c.updated_at <= now))

    @staticmethod
    def _default(offered: tuple[ChartMetric, ...],
                 window: Sequence[LineReading]) -> ChartMetric:
        """The first metric with enough readings to draw, else the line's first."""
        for metric in offered:
            if sum(_value(r, metric) is not None for r in window) >= MIN_POINTS:
                return metric
        return offered[0]
