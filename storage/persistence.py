"""python-telegram-bot persistence in our database: conversations survive restarts.

Conversation states and ``user_data`` are stored as JSON (never pickles), so only plain
values may go into ``user_data``: flows keep drafts there, never money state. Drafts hold
personal data (a number being proven, a forwarded SMS), so the data is encrypted with the
field cipher before it is written (and re-encrypted by ``rotate-keys``); conversation states
and keys are ids and step numbers only. Chat and bot data are not stored (no flow uses them);
turn them on in ``store_data`` before using them. PTB writes changes every
``update_interval`` seconds and on shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Any, cast

from sqlalchemy import Executable, Table, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram.ext import BasePersistence, PersistenceInput
from telegram.ext._utils.types import CDCData, ConversationDict, ConversationKey

from storage.crypto import FieldCipher
from storage.db import Database
from storage.tables import ptb_bot_data, ptb_chat_data, ptb_conversations, ptb_user_data

Data = dict[Any, Any]
# Rows per write transaction: one statement per kind of write, so a slice holds the event
# loop (SQLite runs on its thread) about a millisecond.
WRITES_PER_TRANSACTION = 32


@dataclass(frozen=True)
class _Write:
    """One row to store (``delete`` False) or to delete, identified by its primary key."""
    table: Table
    row: dict[str, Any]  # the primary key's columns, and the others when storing
    delete: bool = False
    remembered_as: tuple[str, int] | None = None  # user/chat/bot data: skipped if unchanged
    data: Data | None = None  # user/chat/bot data, stored encrypted as ``data_enc``


def _encode(data: Data) -> str:
    """The JSON a data dict is compared and stored as (keys sorted, so equal data is equal)."""
    return json.dumps(data, sort_keys=True)


def _upsert_statement(dialect: str, table: Table) -> Executable:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE, for many rows at once."""
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table)
    keys = [column.name for column in table.primary_key.columns]
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=keys,
        set_={column.name: statement.excluded[column.name]
              for column in table.columns if column.name not in keys})
    return upsert


def _delete_statement(table: Table) -> Executable:
    """DELETE by primary key, for many rows at once (parameters named ``pk_<column>``)."""
    return delete(table).where(*(column == bindparam(f"pk_{column.name}")
                                 for column in table.primary_key.columns))


class DatabasePersistence(BasePersistence[Data, Data, Data]):
    def __init__(self, db: Database, cipher: FieldCipher,
                 update_interval: float = 1.0) -> None:
        # Only user_data and conversations: no flow keeps chat or bot data, and PTB would
        # deep-copy and hand over the chat data of every chat that had an update, each second.
        super().__init__(store_data=PersistenceInput(chat_data=False, bot_data=False,
                                                     callback_data=False),
                         update_interval=update_interval)
        self._db = db
        self._cipher = cipher
        # What the database holds, as JSON, per (table, key): PTB hands over the data of every
        # chat and user that had an update, changed or not, each interval; an unchanged one is
        # not written again. An absent row reads as {} (get_* return defaultdicts).
        self._stored: dict[tuple[str, int], str] = {}
        self._batch: list[tuple[_Write, asyncio.Future[None]]] = []
        self._statements: dict[tuple[str, str], Executable] = {}
        self._batches: set[asyncio.Future[None]] = set()  # running: kept from the collector

    def _encoding_if_changed(self, write: _Write) -> str | None:
        """The JSON of the data ``write`` stores when the database does not hold it yet;
        None when it does (or for writes that are not remembered)."""
        if write.remembered_as is None or write.delete:
            return None
        encoded = _encode(write.data or {})
        return None if self._stored.get(write.remembered_as, "{}") == encoded else encoded

    def _forget(self, table: str, key: int) -> None:
        self._stored.pop((table, key), None)

    # -- loading (once, at start-up) -----------------------------------------------------

    async def _load(self, table: Table, kind: str) -> dict[int, Data]:
        """Every stored row of ``table``, decrypted, by its key; remembered as stored."""
        key = table.primary_key.columns.values()[0]
        async with self._db.read() as conn:
            rows = (await conn.execute(select(key, table.c.data_enc))).all()
        loaded: dict[int, Data] = {}
        for row_key, token in rows:
            encoded = self._cipher.decrypt(token)
            self._stored[(kind, row_key)] = encoded
            loaded[row_key] = json.loads(encoded)
        return loaded

    async def get_user_data(self) -> dict[int, Data]:
        return defaultdict(dict, await self._load(ptb_user_data, "user"))

    async def get_chat_data(self) -> dict[int, Data]:
        return defaultdict(dict, await self._load(ptb_chat_data, "chat"))

    async def get_bot_data(self) -> Data:
        return (await self._load(ptb_bot_data, "bot")).get(1, {})

    async def get_callback_data(self) -> CDCData | None:
        return None

    async def get_conversations(self, name: str) -> ConversationDict:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(ptb_conversations).where(
                ptb_conversations.c.name == name))).all()
        return {cast(ConversationKey, tuple(json.loads(row.key))): json.loads(row.state)
                for row in rows}

    # -- writing -------------------------------------------------------------------------

    async def _write(self, write: _Write) -> None:
        """Stores ``write`` in a write transaction shared with every other write handed over
        in the same turn of the event loop: PTB hands over a whole interval's changes at once
        (asyncio.gather), and one transaction for all of them costs far less than one each."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._batch.append((write, done))
        if len(self._batch) == 1:
            loop.call_soon(self._start_batch)  # after the other writes of this turn queued
        await done

    def _start_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._run_batches(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batches(self, batch: list[tuple[_Write, asyncio.Future[None]]]) -> None:
        # SQLite runs on the loop's thread: a few hundred writes in one go would stall every
        # chat for tens of milliseconds, so they go in slices with the loop served between.
        for start in range(0, len(batch), WRITES_PER_TRANSACTION):
            if start:
                await asyncio.sleep(0)
            await self._run_batch(batch[start:start + WRITES_PER_TRANSACTION])

    async def _apply(self, conn: AsyncConnection, writes: list[_Write]) -> None:
        # Consecutive writes of one kind go as one statement (executemany for rows to
        # store); the order of the hand-over is kept between kinds.
        for (table, is_delete), run in groupby(writes, key=lambda w: (w.table, w.delete)):
            if is_delete:
                await conn.execute(self._statement("delete", table),
                                   [{f"pk_{name}": value for name, value in write.row.items()}
                                    for write in run])
            else:
                await conn.execute(self._statement(conn.dialect.name, table),
                                   [write.row for write in run])

    def _statement(self, kind: str, table: Table) -> Executable:
        """The delete (``kind`` "delete") or the dialect's upsert for ``table``, built once."""
        statement = self._statements.get((kind, table.name))
        if statement is None:
            statement = (_delete_statement(table) if kind == "delete"
                         else _upsert_statement(kind, table))
            self._statements[(kind, table.name)] = statement
        return statement

    async def _run_batch(self, handed_over: list[tuple[_Write, asyncio.Future[None]]]) -> None:
        # Data is compared here, a slice at a time, not when PTB hands it over: PTB hands over
        # every user that had an update, all in one turn of the loop.
        batch: list[tuple[_Write, asyncio.Future[None]]] = []
        remember: dict[tuple[str, int], str] = {}
        for write, done in handed_over:
            try:
                encoded = self._encoding_if_changed(write)
            except (TypeError, ValueError) as not_json:  # a flow put a non-JSON value there
                done.set_exception(not_json)
                continue
            if write.remembered_as is not None and not write.delete and encoded is None:
                done.set_result(None)  # the database holds it already
                continue
            if write.remembered_as is not None and encoded is not None:
                remember[write.remembered_as] = encoded
                write = replace(write, row={**write.row,
                                            "data_enc": self._cipher.encrypt(encoded)})
            batch.append((write, done))
        if not batch:
            return
        try:
            async with self._db.write() as conn:
                await self._apply(conn, [write for write, _done in batch])
        except Exception:
            # One bad write must not sink the others (PTB hands data over once, not again):
            # each goes alone, and only the one that fails reports it.
            for write, done in batch:
                encoded = remember.get(write.remembered_as) if write.remembered_as else None
                await self._run_alone(write, done, encoded)
            return
        except BaseException as stop:  # cancelled: nobody may wait for ever
            for _write, done in batch:
                if not done.done():
                    done.set_exception(stop)
            raise
        self._stored.update(remember)  # written: a failed one is tried again next interval
        for _write, done in batch:
            if not done.done():
                done.set_result(None)

    async def _run_alone(self, write: _Write, done: asyncio.Future[None],
                         encoded: str | None) -> None:
        try:
            async with self._db.write() as conn:
                await self._apply(conn, [write])
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if write.remembered_as is not None and encoded is not None:
            self._stored[write.remembered_as] = encoded
        if not done.done():
            done.set_result(None)

    async def update_conversation(self, name: str, key: ConversationKey,
                                  new_state: object | None) -> None:
        row = {"name": name, "key": json.dumps(list(key))}
        if new_state is None:
            await self._write(_Write(ptb_conversations, row, delete=True))
        else:
            await self._write(_Write(ptb_conversations, {**row, "state": json.dumps(new_state)}))

    async def update_user_data(self, user_id: int, data: Data) -> None:
        await self._write(_Write(ptb_user_data, {"user_id": user_id},
                                 remembered_as=("user", user_id), data=data))

    async def update_chat_data(self, chat_id: int, data: Data) -> None:
        await self._write(_Write(ptb_chat_data, {"chat_id": chat_id},
                                 remembered_as=("chat", chat_id), data=data))

    async def update_bot_data(self, data: Data) -> None:
        await self._write(_Write(ptb_bot_data, {"id": 1},
                                 remembered_as=("bot", 1), data=data))

    async def update_callback_data(self, data: CDCData) -> None:
        return None

    async def drop_chat_data(self, chat_id: int) -> None:
        self._forget("chat", chat_id)
        await self._write(_Write(ptb_chat_data, {"chat_id": chat_id}, delete=True))

    async def drop_user_data(self, user_id: int) -> None:
        self._forget("user", user_id)
        await self._write(_Write(ptb_user_data, {"user_id": user_id}, delete=True))

    async def refresh_user_data(self, user_id: int, user_data: Data) -> None:
        return None  # this process is the only writer of its users' data

    async def refresh_chat_data(self, chat_id: int, chat_data: Data) -> None:
        return None

    async def refresh_bot_data(self, bot_data: Data) -> None:
        return None

    async def flush(self) -> None:
        return None  # every update is written through when PTB hands it over
