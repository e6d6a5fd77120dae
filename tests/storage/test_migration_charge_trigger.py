"""Migration 0014 (the reading a rule charged on, kept with its charge) on every backend:
charges made before it read as having no reading, a charge made after keeps one whole, and
going down drops only those columns (every charge stays) and up again works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from storage import migrate
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.tables import charges
from tests.storage.test_migrations import add_charge, lines_of_one_user

BEFORE_TRIGGER = "0013"
TRIGGER_COLUMNS = {"trigger_source", "trigger_read_at", "trigger_balance_minor",
                   "trigger_currency", "trigger_data_mb", "trigger_validity_end",
                   "trigger_read_by"}


@pytest.fixture
async def empty_db(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    yield database
    await database.dispose()


async def charge_columns(db: Database) -> set[str]:
    async with db.read() as conn:
        return {column["name"] for column in await conn.run_sync(
            lambda c: sqlalchemy.inspect(c).get_columns("charges"))}


async def charge_count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(charges)))
                   .scalar_one())


async def test_charges_keep_the_reading_they_were_triggered_by(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db, BEFORE_TRIGGER)
    assert TRIGGER_COLUMNS & await charge_columns(empty_db) == set()
    first, second = await lines_of_one_user(empty_db, cipher, clock)
    async with empty_db.write() as conn:
        earlier = await add_charge(conn, clock, first, "succeeded")

    await migrate.upgrade(empty_db)

    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    assert await charge_columns(empty_db) >= TRIGGER_COLUMNS
    read_at = clock.now() - timedelta(minutes=3)
    trigger = TriggerReading(LineReading(source=ReadingSource.PROVIDER, read_at=read_at,
                                         balance=Money(50, "USD")), read_by="Airalo")
    keep_alive = TriggerReading(LineReading(source=ReadingSource.ESTIMATE, read_at=read_at,
                                            validity_end=clock.now() + timedelta(days=2)))
    async with empty_db.write() as conn:
        repo = ChargesRepository(conn, cipher)
        assert (await repo.get(earlier)).trigger is None  # type: ignore[union-attr]
        made, _ = await repo.create(
            idempotency_key="rule:1:episode:1", user_id=42, line_id=second,
            amount=Money(500, "USD"), cause="low_balance",
            state=ChargeState.AWAITING_APPROVAL, now=clock.now(), trigger=trigger)
        kept, _ = await repo.create(
            idempotency_key="rule:2:episode:validity:2026-11-27", user_id=42,
            line_id=first, amount=Money(100, "USD"), cause="keep_alive",
            state=ChargeState.AWAITING_APPROVAL, now=clock.now(), trigger=keep_alive)
    async with empty_db.read() as conn:
        repo = ChargesRepository(conn, cipher)
        assert (await repo.get(made.id)).trigger == trigger  # type: ignore[union-attr]
        assert (await repo.get(kept.id)).trigger == keep_alive  # type: ignore[union-attr]
    before = await charge_count(empty_db)

    await migrate.downgrade(empty_db, BEFORE_TRIGGER)

    assert await migrate.current_revision(empty_db) == BEFORE_TRIGGER
    assert TRIGGER_COLUMNS & await charge_columns(empty_db) == set()
    assert await charge_count(empty_db) == before
    await migrate.upgrade(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    async with empty_db.read() as conn:
        repo = ChargesRepository(conn, cipher)
        assert (await repo.get(made.id)).trigger is None  # type: ignore[union-attr]
