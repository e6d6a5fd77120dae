"""Keeping under a provider's documented rate limit on our side, so its 429s stay rare.

``SpacedCalls`` gives each call a slot ``period / limit`` (plus a margin) after the one
before and makes the call wait for it. Spacing, not bursting, because the providers count
fixed windows opened by the first request: evenly spaced calls never put ``limit + 1`` into
one window, whatever the window's phase. It runs on the injected clock and sleep (aiolimiter
reads the event loop's own clock, which tests and benchmarks cannot move).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.clock import Clock
from bot.gateways.http import Sleep

# Calls are spaced this much wider than the limit allows: requests sent at even intervals
# reach the provider a little unevenly (latency varies). At 5 a second, 1.25 leaves 0.25 s
# of jitter before a sixth request lands in one second (1.1 left 0.1 s, and bench/esim.py
# saw 429s from it on a busy machine).
SPACING_MARGIN = 1.25


class SpacedCalls:
    def __init__(self, limit: int, period: timedelta, clock: Clock, sleep: Sleep, *,
                 margin: float = SPACING_MARGIN) -> None:
        if limit < 1 or period <= timedelta(0):
            raise ValueError("a rate limit needs a positive limit and period")
        self.interval = period / limit * margin
        self._clock = clock
        self._sleep = sleep
        self._next: datetime | None = None

    async def wait_turn(self) -> None:
        """Waits for this call's slot. Slots are taken in the order calls ask for them."""
        now = self._clock.now()
        slot = now if self._next is None or self._next <= now else self._next
        self._next = slot + self.interval
        wait = (slot - now).total_seconds()
        if wait > 0:
            await self._sleep(wait)

    def pause_until(self, moment: datetime) -> None:
        """No call before ``moment`` (the provider said Retry-After)."""
        if self._next is None or self._next < moment:
            self._next = moment
