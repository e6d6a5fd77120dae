"""Engine, connections and transactions for SQLite (embedded) and PostgreSQL (scale-out).

Writes go through ``Database.write()``: on SQLite that is ``BEGIN IMMEDIATE``, which takes
the write lock up front, so two writers queue instead of deadlocking on a lock upgrade;
on PostgreSQL it is an ordinary transaction and row locks do the rest.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from storage import sqlite_inline

_WRITE = "topup_write"


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        options: dict[str, Any] = {"echo": echo}
        if url.startswith("postgresql"):
            options.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        else:
            # SQLite runs on the event loop's thread (storage/sqlite_inline.py). Each use of a
            # connection ends its own transaction (commit, or rollback when the block
            # raised), so the pool's extra rollback on check-in is not needed.
            path = make_url(url).database
            if not path or path == ":memory:":
                raise ValueError("SQLite needs a database file (WAL mode), not :memory:")
            options.update(async_creator=sqlite_inline.connector(path),
                           pool_reset_on_return=None)
        self.engine: AsyncEngine = create_async_engine(url, **options)
        self.dialect = self.engine.dialect.name
        self._writer_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if not self.is_sqlite:
            async with self.engine.connect() as conn, self._begin_write(conn):
                yield conn
            return
        # SQLite has one writer at a time: this process's writers queue here, each starting
        # the moment the last one commits. (Another process's writer is waited for in
        # sqlite_inline.begin_immediate.)
        async with self._sqlite_writer_lock(), self._sqlite_connection() as conn, \
                self._begin_write(conn):
            yield conn

    @asynccontextmanager
    async def schema_change(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction for migrations. On SQLite, foreign keys are off inside it: an
        ALTER that SQLite cannot do in place rebuilds the table, and dropping the old copy
        would otherwise delete (ON DELETE CASCADE) the rows that reference it. Every foreign
        key is checked before the commit; a broken one rolls the whole change back."""
        if not self.is_sqlite:
            async with self.write() as conn:
                yield conn
            return
        async with self._sqlite_writer_lock(), self._sqlite_connection() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            # Outside any transaction: SQLite ignores this pragma inside one.
            await driver.execute("PRAGMA foreign_keys=OFF")
            try:
                async with self._begin_write(conn):
                    yield conn
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"the schema change breaks foreign keys: {broken}")
            finally:
                await driver.execute("PRAGMA foreign_keys=ON")

    @asynccontextmanager
    async def _begin_write(self, conn: AsyncConnection) -> AsyncIterator[None]:
        await conn.execution_options(**{_WRITE: True})
        async with conn.begin():
            yield

    def _sqlite_writer_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()  # a lock serves one event loop only
        lock = self._writer_locks.get(loop)
        if lock is None:
            lock = self._writer_locks[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def _sqlite_connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, closed in place. ``async with engine.connect()`` closes it in
        a task of its own (so a cancellation cannot cut the close short), which costs a whole
        turn of the event loop per use; SQLite here never suspends, so nothing can cut in."""
        conn = await self.engine.connect()
        try:
            yield conn
        except BaseException:
            # The pool does not roll back on check-in (every block ends its transaction),
            # but a COMMIT that failed leaves SQLite's open: end it before the pool has it.
            driver = (await conn.get_raw_connection()).driver_connection
            if isinstance(driver, sqlite_inline.InlineConnection):
                driver.end_open_transaction()
            raise
        finally:
            await conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot (deferred transaction on SQLite)."""
        connection = self._sqlite_connection() if self.is_sqlite else self.engine.connect()
        async with connection as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # No blocking busy handler on the loop's thread: readers never wait in WAL mode, and
        # a writer waits for another process's lock in begin_immediate, yielding meanwhile.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver, not through SQLAlchemy's statement machinery.
        driver = conn.connection.dbapi_connection
        assert driver is not None
        if conn.get_execution_options().get(_WRITE, False):
            sqlite_inline.begin_immediate(driver.execute,
                                          lambda seconds: await_only(asyncio.sleep(seconds)))
        else:
            driver.execute("BEGIN")
