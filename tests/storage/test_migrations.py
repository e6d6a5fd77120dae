"""Alembic migrations on every backend: up, down, up again, refusing unknown schemas, and
the migrated schema being exactly what storage.tables declares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import ManualClock
from storage import migrate
from storage.crypto import FieldCipher
from storage.db import Database
from storage.sim_carrier import SimCarrierRepository
from storage.tables import metadata
from storage.users import UsersRepository

FOUNDATION_TABLES = {"users", "lines", "otp_challenges", "audit_log", "sim_lines", "sim_topups"}
SCHEMA_TABLES = set(metadata.tables)
assert FOUNDATION_TABLES <= SCHEMA_TABLES


@pytest.fixture
async def empty_db(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    yield database
    await database.dispose()


async def table_names(db: Database) -> set[str]:
    async with db.read() as conn:
        names = await conn.run_sync(lambda c: sqlalchemy.inspect(c).get_table_names())
    return set(names)


async def versions(conn: AsyncConnection) -> list[str]:
    return list((await conn.execute(sqlalchemy.text(
        "SELECT version_num FROM alembic_version"))).scalars().all())


def schema_differences(sync_conn: Connection, target: MetaData) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={
        "compare_type": True,
        "compare_server_default": True,
    })
    return list(compare_metadata(context, target))


async def test_empty_database_has_no_revision(empty_db: Database) -> None:
    assert await migrate.current_revision(empty_db) is None
    assert await table_names(empty_db) == set()


async def test_upgrade_downgrade_upgrade(empty_db: Database, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    assert await table_names(empty_db) == SCHEMA_TABLES | {"alembic_version"}

    await migrate.downgrade(empty_db, "base")
    assert await migrate.current_revision(empty_db) is None
    assert await table_names(empty_db) <= {"alembic_version"}

    await migrate.upgrade(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    assert await table_names(empty_db) == SCHEMA_TABLES | {"alembic_version"}
    async with empty_db.write() as conn:
        await UsersRepository(conn).ensure(42, language="km", now=clock.now())
    async with empty_db.read() as conn:
        user = await UsersRepository(conn).get(42)
    assert user is not None
    assert user.language == "km"
    assert user.created_at == clock.now()


async def test_upgrading_twice_is_a_no_op(empty_db: Database, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db)
    async with empty_db.write() as conn:
        await UsersRepository(conn).ensure(7, language="en", now=clock.now())
    tables_before = await table_names(empty_db)

    await migrate.upgrade(empty_db)

    assert await migrate.current_revision(empty_db) == migrate.head_revision()
    assert await table_names(empty_db) == tables_before
    async with empty_db.read() as conn:
        stamps = await versions(conn)
        user = await UsersRepository(conn).get(7)
    assert stamps == [migrate.head_revision()]
    assert user is not None
    assert user.language == "en"


async def test_unknown_revision_is_refused(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    version = sqlalchemy.table("alembic_version", sqlalchemy.column("version_num"))
    async with empty_db.write() as conn:
        await conn.execute(delete(version))
        await conn.execute(insert(version).values(version_num="ffffffffffff"))
    assert "ffffffffffff" not in migrate.known_revisions()

    with pytest.raises(migrate.SchemaError, match="ffffffffffff"):
        await migrate.upgrade(empty_db)

    # Refused before touching anything: the stamp is still the unknown one.
    async with empty_db.read() as conn:
        stamp = (await conn.execute(select(version.c.version_num))).scalars().all()
    assert stamp == ["ffffffffffff"]


async def test_unknown_revision_is_refused_on_a_database_without_tables(
        empty_db: Database) -> None:
    async with empty_db.write() as conn:
        await conn.execute(sqlalchemy.text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        await conn.execute(sqlalchemy.text(
            "INSERT INTO alembic_version (version_num) VALUES ('abc123newer')"))

    with pytest.raises(migrate.SchemaError, match="abc123newer"):
        await migrate.upgrade(empty_db)
    assert await table_names(empty_db) == {"alembic_version"}


async def test_migrated_schema_matches_the_metadata(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    async with empty_db.read() as conn:
        differences = await conn.run_sync(schema_differences, metadata)
    # No noise to filter: with type and server-default comparison on, both backends
    # report nothing for the schema the migrations build.
    assert differences == []


async def test_schema_comparison_sees_a_missing_column(empty_db: Database) -> None:
    """The comparison above is not vacuous: a column the migrations lack is reported."""
    await migrate.upgrade(empty_db)
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["users"].append_column(Column("nickname_added_later", Integer))
    async with empty_db.read() as conn:
        differences = await conn.run_sync(schema_differences, changed)
    assert [(d[0], d[2], d[3].name) for d in differences] == [
        ("add_column", "users", "nickname_added_later")]


async def test_downgrade_then_upgrade_keeps_one_version_row(empty_db: Database) -> None:
    await migrate.upgrade(empty_db)
    await migrate.downgrade(empty_db, "base")
    async with empty_db.read() as conn:
        if "alembic_version" in await conn.run_sync(
                lambda c: sqlalchemy.inspect(c).get_table_names()):
            assert await versions(conn) == []
    await migrate.upgrade(empty_db)
    async with empty_db.read() as conn:
        assert await versions(conn) == [migrate.head_revision()]


async def test_partial_unique_index_on_topup_reference(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    """compare_metadata does not compare index predicates, so check the partial index by
    behaviour: one reference is paid once, except rows marked as paid-twice duplicates."""
    await migrate.upgrade(empty_db)
    async with empty_db.write() as conn:
        carrier = SimCarrierRepository(conn, cipher)
        await carrier.add_line(phone_e164="+85512345678", operator="cellcard",
                               balance_minor=0, currency="USD", data_mb=0,
                               validity_end=clock.now(), daily_spend_minor=0, daily_data_mb=0,
                               now=clock.now())
        index = carrier.index_of("+85512345678")

    def topup(tx: str, *, duplicate: bool) -> dict[str, object]:
        return {"reference": "ref-1", "provider_tx_id": tx, "phone_index": index,
                "amount_minor": 100, "currency": "USD", "status": "succeeded",
                "duplicate": duplicate, "created_at": clock.now()}

    async with empty_db.write() as conn:
        carrier = SimCarrierRepository(conn, cipher)
        first = await carrier.add_topup(**topup("tx-1", duplicate=False))
        await carrier.add_topup(**topup("tx-2", duplicate=True))
        await carrier.add_topup(**topup("tx-3", duplicate=True))

    async def pay_again_without_the_fault() -> None:
        async with empty_db.write() as conn:
            await SimCarrierRepository(conn, cipher).add_topup(**topup("tx-4", duplicate=False))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await pay_again_without_the_fault()
    async with empty_db.read() as conn:
        carrier = SimCarrierRepository(conn, cipher)
        assert await carrier.topup_by_reference("ref-1") == first
        assert await carrier.count_topups("ref-1") == 3
