"""SpacedCalls: calls spaced so that no fixed window of the provider's sees more than its
limit, whatever the window's phase and however the calls arrive."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.clock import ManualClock
from bot.gateways.rate_limit import SpacedCalls

START = datetime(2026, 12, 1, tzinfo=UTC)


def spaced(limit: int, period: timedelta) -> tuple[SpacedCalls, ManualClock, list[datetime]]:
    clock = ManualClock(START)
    sent: list[datetime] = []

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    return SpacedCalls(limit, period, clock, sleep), clock, sent


async def test_calls_wait_for_their_slot() -> None:
    turns, clock, _ = spaced(5, timedelta(seconds=1))
    moments = []
    for _ in range(6):
        await turns.wait_turn()
        moments.append(clock.now())
    gaps = {(b - a) for a, b in itertools.pairwise(moments)}
    assert gaps == {turns.interval} and turns.interval == timedelta(seconds=0.25)


async def test_a_pause_moves_the_next_slot() -> None:
    turns, clock, _ = spaced(5, timedelta(seconds=1))
    await turns.wait_turn()
    turns.pause_until(START + timedelta(seconds=30))
    await turns.wait_turn()
    assert clock.now() == START + timedelta(seconds=30)


def test_a_limit_must_be_positive() -> None:
    clock = ManualClock(START)

    async def sleep(seconds: float) -> None: ...

    with pytest.raises(ValueError, match="positive"):
        SpacedCalls(0, timedelta(seconds=1), clock, sleep)


@given(limit=st.integers(1, 20), gaps_ms=st.lists(st.integers(0, 3000), min_size=1,
                                                   max_size=60),
       phase_ms=st.integers(0, 999))
async def test_no_window_holds_more_than_the_limit(limit: int, gaps_ms: list[int],
                                                   phase_ms: int) -> None:
    period = timedelta(seconds=1)
    turns, clock, sent = spaced(limit, period)
    for gap in gaps_ms:  # callers arrive whenever they like
        clock.advance(timedelta(milliseconds=gap))
        await turns.wait_turn()
        sent.append(clock.now())
    window_start = START + timedelta(milliseconds=phase_ms)
    while window_start <= sent[-1]:
        inside = [m for m in sent if window_start <= m < window_start + period]
        assert len(inside) <= limit
        window_start += period
