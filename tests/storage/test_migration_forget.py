"""Migration 0013 (forgetting users) on every backend: it keeps every line and what
references it through the SQLite rebuild, lets a forgotten SIM line lose its number (and
only a forgotten one), lets a code outlive its user, and refuses to go down while forgotten
lines exist."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import select

from bot.clock import ManualClock
from storage import migrate
from storage.crypto import FieldCipher
from storage.db import Database
from storage.tables import metadata
from tests.storage.test_migrations import add_charge, lines_of_one_user

BEFORE_FORGET = "0012"


@pytest.fixture
async def empty_db(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    yield database
    await database.dispose()


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        return {name: int((await conn.execute(
            select(sqlalchemy.func.count()).select_from(metadata.tables[name]))).scalar_one())
            for name in ("lines", "charges", "line_readings", "otp_challenges")}


async def test_forgotten_lines_and_codes_without_a_user(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db, BEFORE_FORGET)
    first, _second = await lines_of_one_user(empty_db, cipher, clock)
    now = {"now": clock.now()}
    async with empty_db.write() as conn:
        await add_charge(conn, clock, first, "succeeded")
        await conn.execute(sqlalchemy.text(
            "INSERT INTO line_readings (line_id, source, read_at, recorded_at, data_mb) "
            "VALUES (:line, 'user', :now, :now, 500)"), {"line": first, **now})
        await conn.execute(sqlalchemy.text(
            "INSERT INTO otp_challenges (user_id, phone_index, purpose, code_hash, attempts, "
            "created_at, expires_at) VALUES (42, 'idx', 'bind', 'h', 0, :now, :now)"), now)
    before = await counts(empty_db)

    await migrate.upgrade(empty_db)

    assert await counts(empty_db) == before
    # A SIM line may lose its number only once it is forgotten.
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with empty_db.write() as conn:
            await conn.execute(sqlalchemy.text(
                "UPDATE lines SET phone_enc = NULL, phone_index = NULL WHERE id = :id"),
                {"id": first})
    async with empty_db.write() as conn:
        await conn.execute(sqlalchemy.text(
            "UPDATE lines SET phone_enc = NULL, phone_index = NULL, forgotten_at = :now "
            "WHERE id = :id"), {"id": first, **now})
        await conn.execute(sqlalchemy.text("UPDATE users SET forgotten_at = :now"), now)
        await conn.execute(sqlalchemy.text("UPDATE otp_challenges SET user_id = NULL"))

    with pytest.raises(migrate.SchemaError, match="forgotten lines"):
        await migrate.downgrade(empty_db, BEFORE_FORGET)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    async with empty_db.write() as conn:  # a line that had no charge could go
        await conn.execute(sqlalchemy.text("DELETE FROM charges"))
        await conn.execute(sqlalchemy.text("DELETE FROM lines WHERE forgotten_at IS NOT NULL"))
    await migrate.downgrade(empty_db, BEFORE_FORGET)
    after = await counts(empty_db)
    assert (after["lines"], after["otp_challenges"]) == (1, 0)  # codes of nobody went
    await migrate.upgrade(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()
