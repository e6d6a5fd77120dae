"""Our float at the top-up provider: a sweep reads the balance; below PROVIDER_FLOAT_ALERT
the admin chats are told once per episode (an episode ends when the float is back at or
above the threshold, and they are told that too).

A top-up refused for want of float is a FAILED result (it does not retry in a loop); the
admins hear of it with the failed charge, and of the float from the next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.money import Money
from bot.gateways.topup import ProviderAccount
from bot.services.notices import Audience, Notice, money_keys, queue
from storage.audit import AuditRepository
from storage.db import Database
from storage.notifications import NotificationsRepository
from storage.provider_float import FloatEpisode, FloatEpisodesRepository
from storage.users import UsersRepository

log = logging.getLogger(__name__)

FLOAT_LOW = "provider_float_low"
FLOAT_RESTORED = "provider_float_restored"


@dataclass(frozen=True, kw_only=True)
class FloatNotice(Notice):
    """Admins: our float at a provider (rendered by handlers/provider_notices.py)."""

    backend: str
    balance: Money = field(metadata=money_keys("balance_minor", "currency"))
    threshold: Money = field(metadata=money_keys("threshold_minor", "currency"))
    lowest: Money = field(metadata=money_keys("lowest_minor", "currency"))  # in the episode
    at: datetime
    audience: Audience = Audience.ADMIN


@dataclass(frozen=True, kw_only=True)
class FloatLow(FloatNotice):
    KIND: ClassVar[str] = FLOAT_LOW


@dataclass(frozen=True, kw_only=True)
class FloatRestored(FloatNotice):
    KIND: ClassVar[str] = FLOAT_RESTORED


@dataclass(frozen=True)
class FloatCheck:
    balance: Money
    low: bool
    alerted: bool  # the admins were told now (an episode opened or closed)


class ProviderFloatService:
    def __init__(self, db: Database, account: ProviderAccount, clock: Clock, *,
                 backend: str, threshold: Money, admin_chat_ids: Sequence[int]) -> None:
        self._db = db
        self._account = account
        self._clock = clock
        self._backend = backend
        self._threshold = threshold
        self._admins = tuple(dict.fromkeys(admin_chat_ids))

    async def check(self) -> FloatCheck:
        """Reads the balance (GatewayError when the provider cannot say) and opens, lowers
        or closes the episode."""
        balance = await self._account.balance()
        if balance.currency != self._threshold.currency:
            log.warning("%s float is in %s; PROVIDER_FLOAT_ALERT is in %s: not compared",
                        self._backend, balance.currency, self._threshold.currency)
            return FloatCheck(balance, low=False, alerted=False)
        low = balance < self._threshold
        now = self._clock.now()
        async with self._db.write() as conn:
            episodes = FloatEpisodesRepository(conn)
            current = await episodes.open_episode(self._backend)
            if low and current is None:
                opened = await episodes.open(self._backend, balance, self._threshold, now)
                if opened is None:  # another worker opened it just now
                    return FloatCheck(balance, low=True, alerted=False)
                await self._tell(conn, FloatLow, opened, balance, now)
                return FloatCheck(balance, low=True, alerted=True)
            if low and current is not None:
                await episodes.lower(current.id, balance)
                return FloatCheck(balance, low=True, alerted=False)
            if current is not None and await episodes.close(current.id, now):
                await self._tell(conn, FloatRestored, current, balance, now)
                return FloatCheck(balance, low=False, alerted=True)
        return FloatCheck(balance, low=False, alerted=False)

    async def _tell(self, conn: AsyncConnection, notice_type: type[FloatLow | FloatRestored],
                    episode: FloatEpisode, balance: Money, now: datetime) -> None:
        notice = notice_type(
            backend=self._backend, balance=balance, threshold=self._threshold,
            lowest=Money(min(episode.lowest.minor, balance.minor), balance.currency), at=now)
        kind = notice.KIND
        await AuditRepository(conn).record(
            at=now, actor="system", action=f"provider.{kind}", subject=f"float:{episode.id}",
            details=notice.to_params())
        # An alert about no user: each admin chat is its own recipient (a row in users, so
        # the dispatcher's language and reachability rules apply to it as to anyone).
        for chat_id in self._admins:
            await UsersRepository(conn).ensure(chat_id, language=None, now=now)
            await queue(NotificationsRepository(conn), notice, user_id=chat_id,
                        chat_id=chat_id, dedupe_key=f"{kind}:{episode.id}:admin:{chat_id}",
                        now=now)
        log.warning("%s: %s float %s (threshold %s)", kind, self._backend, balance.plain(),
                    self._threshold.plain())
