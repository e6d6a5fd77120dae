"""Telegram's flood limits: about 30 messages a second overall, 1 a second per chat and 20
a minute in a group (the Bot FAQ, "My bot is hitting limits, how do I avoid this?").

Token buckets with a small burst; a send over the limit is answered 429 with a whole
number of seconds to wait. Counters let a benchmark compute the rate it achieved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.e2e.botapi.errors import too_many_requests


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; starts full."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when one is now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass(frozen=True)
class SendRecord:
    """One accepted send: when (``time.monotonic()``), to which chat, by which method."""

    at: float
    chat_id: int
    method: str


@dataclass(frozen=True)
class RateStats:
    """A snapshot of the flood-limit counters."""

    accepted: int
    rejected: int
    accepted_by_chat: dict[int, int] = field(default_factory=dict)
    rejected_by_chat: dict[int, int] = field(default_factory=dict)
    sends: tuple[SendRecord, ...] = ()
    rejections: tuple[SendRecord, ...] = ()  # each send answered 429, and when

    @property
    def send_times(self) -> list[float]:
        return [record.at for record in self.sends]

    def achieved_rate(self, chat_id: int | None = None) -> float:
        """Accepted sends a second between the first and the last one (0 with fewer than 2)."""
        times = [r.at for r in self.sends if chat_id is None or r.chat_id == chat_id]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def max_in_window(self, seconds: float = 1.0, chat_id: int | None = None) -> int:
        """The most accepted sends in any window of ``seconds``."""
        times = [r.at for r in self.sends if chat_id is None or r.chat_id == chat_id]
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best


class FloodControl:
    """Checks and counts sends; not thread-safe by itself (the server holds its lock)."""

    def __init__(self, *, enabled: bool = True, global_rate: float = 30.0,
                 global_burst: int = 30, chat_rate: float = 1.0, chat_burst: int = 3,
                 group_rate: float = 20 / 60, group_burst: int = 20,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.global_rate, self.global_burst = global_rate, global_burst
        self.chat_rate, self.chat_burst = chat_rate, chat_burst
        self.group_rate, self.group_burst = group_rate, group_burst
        self._monotonic = monotonic
        self._global = TokenBucket(global_rate, global_burst, monotonic())
        self._chats: dict[int, TokenBucket] = {}
        self._groups: dict[int, TokenBucket] = {}  # a group's own 20 a minute
        self.reset_stats()

    def reset_stats(self) -> None:
        self._accepted = 0
        self._rejected = 0
        self._accepted_by_chat: dict[int, int] = {}
        self._rejected_by_chat: dict[int, int] = {}
        self._sends: list[SendRecord] = []
        self._rejections: list[SendRecord] = []

    def check(self, chat_id: int, method: str, *, group: bool = False) -> None:
        """Counts one send to ``chat_id`` (a group's: ``group``), or raises the 429 ApiError
        Telegram would answer."""
        now = self._monotonic()
        if self.enabled:
            chat = self._chats.get(chat_id)
            if chat is None:
                chat = self._chats[chat_id] = TokenBucket(self.chat_rate, self.chat_burst, now)
            buckets = [chat, self._global]
            if group:
                minute = self._groups.get(chat_id)
                if minute is None:
                    minute = self._groups[chat_id] = TokenBucket(self.group_rate,
                                                                 self.group_burst, now)
                buckets.append(minute)
            wait = max(bucket.wait_time(now) for bucket in buckets)
            if wait > 0:
                self._rejected += 1
                self._rejected_by_chat[chat_id] = self._rejected_by_chat.get(chat_id, 0) + 1
                self._rejections.append(SendRecord(now, chat_id, method))
                raise too_many_requests(max(1, math.ceil(wait)))
            for bucket in buckets:
                bucket.take(now)
        self._accepted += 1
        self._accepted_by_chat[chat_id] = self._accepted_by_chat.get(chat_id, 0) + 1
        self._sends.append(SendRecord(now, chat_id, method))

    def stats(self) -> RateStats:
        return RateStats(self._accepted, self._rejected, dict(self._accepted_by_chat),
                         dict(self._rejected_by_chat), tuple(self._sends),
                         tuple(self._rejections))
