"""SQLite on the event loop's thread (storage/sqlite_inline.py and storage/db.py): a failed
COMMIT leaves nothing open, another process's write lock is waited for without blocking the
loop, and this process's writers follow one another."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from storage.db import Database


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    async with database.write() as conn:
        await conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await conn.execute(text(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)"))
        await conn.execute(text("CREATE TABLE counter (n INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (0)"))
    return database


async def test_a_failed_commit_leaves_no_transaction_open(sqlite_db: Database,
                                                          tmp_path: Path) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with sqlite_db.write() as conn:  # the deferred key fails only at COMMIT
            await conn.execute(text("INSERT INTO child VALUES (99)"))

    for _ in range(3):  # the same pooled connection serves again, reads and writes
        async with sqlite_db.write() as conn:
            await conn.execute(text("UPDATE counter SET n = n + 1"))
        async with sqlite_db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM child"))).scalar() == 0
    other = sqlite3.connect(tmp_path / "inline.db", timeout=1)  # another process can write
    other.execute("UPDATE counter SET n = n + 1")
    other.commit()
    other.close()
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT n FROM counter"))).scalar() == 4
    await sqlite_db.dispose()


async def test_another_processs_write_lock_is_waited_for_while_the_loop_runs(
        sqlite_db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0
    writing, ticked = asyncio.Event(), asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not writing.is_set():
            ticks += 1
            if ticks == 20:
                ticked.set()
            await asyncio.sleep(0.001)

    async def write() -> None:
        async with sqlite_db.write() as conn:
            await conn.execute(text("UPDATE counter SET n = n + 10"))
        writing.set()

    task = asyncio.create_task(write())
    ticking = asyncio.create_task(ticker())
    await asyncio.wait_for(ticked.wait(), 10)  # the loop keeps running while the writer waits
    assert not task.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, 10)
    await ticking
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT n FROM counter"))).scalar() == 10
    await sqlite_db.dispose()


async def test_writers_of_one_process_follow_one_another(sqlite_db: Database) -> None:
    async def bump() -> None:
        async with sqlite_db.write() as conn:
            n = (await conn.execute(text("SELECT n FROM counter"))).scalar()
            await asyncio.sleep(0)  # even a writer that yields mid-transaction
            await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    await asyncio.gather(*(bump() for _ in range(50)))
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT n FROM counter"))).scalar() == 50
    await sqlite_db.dispose()
