"""python-telegram-bot persistence in our database: conversations survive restarts.

Conversation states and user/chat/bot data are stored as JSON (never pickles), so only
plain values may go into ``user_data``: flows keep drafts there, never money state.
PTB writes changes every ``update_interval`` seconds and on shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram.ext import BasePersistence, PersistenceInput
from telegram.ext._utils.types import CDCData, ConversationDict, ConversationKey

from storage.db import Database
from storage.tables import ptb_bot_data, ptb_chat_data, ptb_conversations, ptb_user_data

Data = dict[Any, Any]
Operation = Callable[[AsyncConnection], Awaitable[None]]
WRITES_PER_TRANSACTION = 8


async def _upsert(conn: AsyncConnection, table: Table, key: str, values: dict[str, Any]) -> None:
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = module.insert(table).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[key],
        set_={name: value for name, value in values.items() if name != key})
    await conn.execute(statement)


class DatabasePersistence(BasePersistence[Data, Data, Data]):
    def __init__(self, db: Database, update_interval: float = 1.0) -> None:
        super().__init__(store_data=PersistenceInput(callback_data=False),
                         update_interval=update_interval)
        self._db = db
        # What the database holds, as JSON, per (table, key): PTB hands over the data of every
        # chat and user that had an update, changed or not, each interval; an unchanged one is
        # not written again. An absent row reads as {} (get_* return defaultdicts).
        self._stored: dict[tuple[str, int], str] = {}
        self._batch: list[tuple[Operation, asyncio.Future[None]]] = []
        self._batches: set[asyncio.Future[None]] = set()  # running: kept from the collector

    def _unchanged(self, table: str, key: int, data: Data) -> str | None:
        """None when ``data`` is what the database holds; else its JSON, to remember once
        written (not before: a failed write is tried again at the next interval)."""
        encoded = json.dumps(data, sort_keys=True, default=str)
        return None if self._stored.get((table, key), "{}") == encoded else encoded

    def _forget(self, table: str, key: int) -> None:
        self._stored.pop((table, key), None)

    # -- loading (once, at start-up) -----------------------------------------------------

    async def get_user_data(self) -> dict[int, Data]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(ptb_user_data))).all()
        for row in rows:
            self._stored[("user", row.user_id)] = json.dumps(row.data, sort_keys=True,
                                                             default=str)
        return defaultdict(dict, {row.user_id: dict(row.data) for row in rows})

    async def get_chat_data(self) -> dict[int, Data]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(ptb_chat_data))).all()
        for row in rows:
            self._stored[("chat", row.chat_id)] = json.dumps(row.data, sort_keys=True,
                                                             default=str)
        return defaultdict(dict, {row.chat_id: dict(row.data) for row in rows})

    async def get_bot_data(self) -> Data:
        async with self._db.read() as conn:
            row = (await conn.execute(select(ptb_bot_data.c.data))).first()
        return dict(row.data) if row else {}

    async def get_callback_data(self) -> CDCData | None:
        return None

    async def get_conversations(self, name: str) -> ConversationDict:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(ptb_conversations).where(
                ptb_conversations.c.name == name))).all()
        return {cast(ConversationKey, tuple(json.loads(row.key))): json.loads(row.state)
                for row in rows}

    # -- writing -------------------------------------------------------------------------

    async def _write(self, operation: Operation) -> None:
        """Runs ``operation`` in a write transaction shared with every other write handed over
        in the same turn of the event loop: PTB hands over a whole interval's changes at once
        (asyncio.gather), and one transaction for all of them costs far less than one each."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._batch.append((operation, done))
        if len(self._batch) == 1:
            loop.call_soon(self._start_batch)  # after the other writes of this turn queued
        await done

    def _start_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._run_batches(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batches(self, batch: list[tuple[Operation, asyncio.Future[None]]]) -> None:
        # SQLite runs on the loop's thread: a few hundred writes in one go would stall every
        # chat for tens of milliseconds, so they go in slices with the loop served between.
        for start in range(0, len(batch), WRITES_PER_TRANSACTION):
            if start:
                await asyncio.sleep(0)
            await self._run_batch(batch[start:start + WRITES_PER_TRANSACTION])

    async def _run_batch(self, batch: list[tuple[Operation, asyncio.Future[None]]]) -> None:
        try:
            async with self._db.write() as conn:
                for operation, _done in batch:
                    await operation(conn)
        except Exception:
            # One bad write must not sink the others (PTB hands data over once, not again):
            # each goes alone, and only the one that fails reports it.
            for operation, done in batch:
                await self._run_alone(operation, done)
            return
        except BaseException as stop:  # cancelled: nobody may wait for ever
            for _operation, done in batch:
                if not done.done():
                    done.set_exception(stop)
            raise
        for _operation, done in batch:
            if not done.done():
                done.set_result(None)

    async def _run_alone(self, operation: Operation, done: asyncio.Future[None]) -> None:
        try:
            async with self._db.write() as conn:
                await operation(conn)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)

    async def update_conversation(self, name: str, key: ConversationKey,
                                  new_state: object | None) -> None:
        encoded_key = json.dumps(list(key))

        async def write(conn: AsyncConnection) -> None:
            if new_state is None:
                await conn.execute(delete(ptb_conversations).where(
                    ptb_conversations.c.name == name, ptb_conversations.c.key == encoded_key))
                return
            module = postgresql if conn.dialect.name == "postgresql" else sqlite
            statement = module.insert(ptb_conversations).values(
                name=name, key=encoded_key, state=json.dumps(new_state))
            await conn.execute(statement.on_conflict_do_update(
                index_elements=["name", "key"], set_={"state": json.dumps(new_state)}))

        await self._write(write)

    async def update_user_data(self, user_id: int, data: Data) -> None:
        encoded = self._unchanged("user", user_id, data)
        if encoded is None:
            return
        await self._write(lambda conn: _upsert(conn, ptb_user_data, "user_id",
                                               {"user_id": user_id, "data": data}))
        self._stored[("user", user_id)] = encoded

    async def update_chat_data(self, chat_id: int, data: Data) -> None:
        encoded = self._unchanged("chat", chat_id, data)
        if encoded is None:
            return
        await self._write(lambda conn: _upsert(conn, ptb_chat_data, "chat_id",
                                               {"chat_id": chat_id, "data": data}))
        self._stored[("chat", chat_id)] = encoded

    async def update_bot_data(self, data: Data) -> None:
        await self._write(lambda conn: _upsert(conn, ptb_bot_data, "id", {"id": 1, "data": data}))

    async def update_callback_data(self, data: CDCData) -> None:
        return None

    async def drop_chat_data(self, chat_id: int) -> None:
        self._forget("chat", chat_id)

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(delete(ptb_chat_data).where(ptb_chat_data.c.chat_id == chat_id))

        await self._write(write)

    async def drop_user_data(self, user_id: int) -> None:
        self._forget("user", user_id)

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(delete(ptb_user_data).where(ptb_user_data.c.user_id == user_id))

        await self._write(write)

    async def refresh_user_data(self, user_id: int, user_data: Data) -> None:
        return None  # this process is the only writer of its users' data

    async def refresh_chat_data(self, chat_id: int, chat_data: Data) -> None:
        return None

    async def refresh_bot_data(self, bot_data: Data) -> None:
        return None

    async def flush(self) -> None:
        return None  # every update is written through when PTB hands it over
