"""Looking for a forgotten user's data anywhere: every column of every table the database
has (reflected, not taken from storage.tables, so a table added later is scanned too), and
the SQLite database file itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy
from sqlalchemy import text

from storage.db import Database


def spellings(needles: Iterable[str]) -> list[str]:
    """Each needle as written, and as JSON escapes it (the outbox's and the audit log's
    params are JSON text: "012 ••• 678" is stored as "012 \\u2022\\u2022\\u2022 678")."""
    out: list[str] = []
    for needle in needles:
        for form in (needle, json.dumps(needle)[1:-1]):
            if form not in out:
                out.append(form)
    return out


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value) + json.dumps(value, ensure_ascii=False)
    return None


async def tables(db: Database) -> list[str]:
    async with db.read() as conn:
        return sorted(await conn.run_sync(lambda c: sqlalchemy.inspect(c).get_table_names()))


async def scan(db: Database, needles: Iterable[str], *,
               skip: Iterable[str] = ()) -> list[str]:
    """Where any of ``needles`` is found: "table.column: needle" for every value (text,
    JSON, anything stored as text) of every row of every table but ``skip``."""
    wanted = spellings(needles)
    skipped = set(skip)
    found: list[str] = []
    async with db.read() as conn:
        for table in await tables(db):
            if table in skipped:
                continue
            # The names come from the database's own catalog, not from input.
            rows = await conn.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
            for row in rows.mappings():
                for column, value in row.items():
                    shown = _text(value)
                    if shown is None:
                        continue
                    found += [f"{table}.{column}: {needle}" for needle in wanted
                              if needle in shown]
    return found


async def count_rows(db: Database) -> dict[str, int]:
    """How many rows each table holds."""
    counts: dict[str, int] = {}
    async with db.read() as conn:
        for table in await tables(db):
            counts[table] = int((await conn.execute(
                text(f'SELECT COUNT(*) FROM "{table}"'))).scalar_one())  # noqa: S608
    return counts


async def sqlite_file_bytes(db: Database) -> bytes:
    """The SQLite database file once every page is in it and freed pages are gone: the
    write-ahead log checkpointed into it and truncated, then VACUUM. Deleted rows can
    linger in free pages and in the log; after this they cannot."""
    assert db.is_sqlite
    path = Path(db.url.split("///", 1)[1])
    async with db.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await driver.execute("VACUUM")
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return await asyncio.to_thread(_read_with_wal, path)


def _read_with_wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    content = path.read_bytes()
    if wal.exists():
        content += wal.read_bytes()
    return content


def found_in_bytes(content: bytes, needles: Iterable[str]) -> list[str]:
    return [needle for needle in spellings(needles) if needle.encode() in content]
