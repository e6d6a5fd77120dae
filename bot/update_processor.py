"""Updates from different chats run concurrently; one chat's updates stay in order.

PTB's default handles one update at a time, so one slow carrier call stalls every user.
This processor lets up to ``max_concurrent_updates`` run at once but queues each chat's
updates behind one another (FIFO lock per chat), which keeps ConversationHandler states
consistent: a chat never has two of its updates in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor


def ordering_key(update: object) -> int | None:
    """The chat (or, without a chat, the user) whose updates must not overtake each other."""
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id
    return None


class PerChatUpdateProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int = 4096) -> None:
        # The bound is high because a chat's queued updates wait inside it; the database
        # pool and the gateways' own limits bound the real work.
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}
        self._holders: dict[int, int] = {}  # updates holding or waiting for each chat's lock

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = ordering_key(update)
        if key is None:
            await coroutine
            return
        # Tasks start in arrival order and reach this line without suspending (the
        # semaphore before it is FIFO), and asyncio.Lock is FIFO: a chat's updates run in
        # the order Telegram sent them.
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                await coroutine
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key]
                del self._locks[key]

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None
