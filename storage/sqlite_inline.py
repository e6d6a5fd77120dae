"""SQLite on the event loop's own thread, behind aiosqlite's interface.

SQLAlchemy's aiosqlite dialect takes, through ``async_creator``, any object that behaves
like an ``aiosqlite.Connection``. aiosqlite runs each call on a thread of its own: every
cursor, execute, fetch, close, begin and commit is a round trip between threads (four for one
SELECT), and those trips, not SQLite, were most of the bot's CPU per update. A local SQLite
call in WAL mode takes microseconds, so these objects run it in place.

Blocking is bounded: WAL readers never wait for a lock, and this process queues its own
writers on an asyncio lock (``storage.db``). The one wait left is another *process* holding
the write lock (a CLI command): ``begin_immediate`` polls for it with asyncio sleeps instead
of SQLite's blocking busy handler, so the loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

BUSY_WAIT_SECONDS = 30.0  # as long as the busy timeout the aiosqlite threads used
CONNECT_WAIT_SECONDS = 2.0  # rare (a new pooled connection) and only at set-up
_FIRST_POLL, _LONGEST_POLL = 0.001, 0.05


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()
                      ) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunNow:
    """aiosqlite's request queue, as SQLAlchemy's adapter uses it to set isolation_level."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection:
    """The part of ``aiosqlite.Connection`` that SQLAlchemy's adapter calls."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection  # the adapter reaches for these two names
        self._tx = _RunNow()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()
                      ) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    def end_open_transaction(self) -> None:
        """Rolls back a transaction SQLAlchemy no longer tracks (a COMMIT that failed leaves
        SQLite's open), so the connection goes back to the pool clean."""
        if self._conn.in_transaction:
            self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def connector(path: str) -> Callable[[], Any]:
    """The ``async_creator`` for a database file. Its set-up statements (WAL mode) may wait a
    moment for another process; then the busy timeout is 0 (see ``begin_immediate``)."""

    async def connect() -> InlineConnection:
        return InlineConnection(sqlite3.connect(path, timeout=CONNECT_WAIT_SECONDS,
                                                isolation_level=None,
                                                check_same_thread=False))

    return connect


def is_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error))


def begin_immediate(execute: Callable[[str], object],
                    sleep: Callable[[float], object]) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock with ``sleep`` (which
    yields to the event loop) for at most BUSY_WAIT_SECONDS."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    pause = _FIRST_POLL
    while True:
        try:
            execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        sleep(pause)
        pause = min(_LONGEST_POLL, pause * 2)
