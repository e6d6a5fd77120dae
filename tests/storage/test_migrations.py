"""Alembic migrations on every backend: up, down, up again, refusing unknown schemas, and
the migrated schema being exactly what storage.tables declares."""

from __future__ import annotations

import uuid
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
from bot.domain.charges import OPEN_STATES
from bot.domain.phone import parse_cambodian_mobile
from storage import migrate
from storage.audit import AuditRepository
from storage.charges import reference_for
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.notifications import NotificationsRepository
from storage.payments import PaymentsRepository
from storage.sim_carrier import SimCarrierRepository
from storage.tables import charges, metadata, users
from storage.users import UsersRepository
from storage.wallet import WalletRepository

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


# --- one open charge per line (0005_one_open_charge) ---------------------------------

BEFORE_ONE_OPEN_CHARGE = "0004"
_numbers = ("012345678", "012345679", "012345670")


async def add_user(conn: AsyncConnection, clock: ManualClock, user_id: int = 42) -> None:
    """A user row written as an earlier release could write it (only the columns every
    revision has: UsersRepository reads columns later revisions added)."""
    await conn.execute(insert(users).values(id=user_id, language="en", reachable=True,
                                            created_at=clock.now(), updated_at=clock.now()))


async def lines_of_one_user(db: Database, cipher: FieldCipher, clock: ManualClock,
                            count: int = 2) -> list[int]:
    async with db.write() as conn:
        await add_user(conn, clock)
        lines = LinesRepository(conn, cipher)
        return [(await lines.add(owner_id=42, number=parse_cambodian_mobile(number),
                                 now=clock.now())).id for number in _numbers[:count]]


async def add_charge(conn: AsyncConnection, clock: ManualClock, line_id: int,
                     state: str) -> int:
    """A charge row written as an earlier release could write it."""
    key = f"manual:42:{uuid.uuid4().hex}"
    result = await conn.execute(insert(charges).values(
        idempotency_key=key, reference=reference_for(key), user_id=42, line_id=line_id,
        cause="manual", amount_minor=500, currency="USD", state=state,
        created_at=clock.now(), updated_at=clock.now()).returning(charges.c.id))
    return int(result.scalar_one())


async def states(db: Database) -> dict[int, tuple[str, str | None]]:
    async with db.read() as conn:
        rows = await conn.execute(select(charges.c.id, charges.c.state,
                                         charges.c.failure_reason))
        return {row.id: (row.state, row.failure_reason) for row in rows}


async def test_a_line_has_at_most_one_open_charge(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    """compare_metadata does not compare index predicates: check the partial index by
    behaviour. One open charge per line; closed ones and other lines are not limited."""
    await migrate.upgrade(empty_db)
    first, second = await lines_of_one_user(empty_db, cipher, clock)
    async with empty_db.write() as conn:
        await add_charge(conn, clock, first, "awaiting_approval")
        for state in ("succeeded", "failed", "declined", "expired"):
            await add_charge(conn, clock, first, state)
        await add_charge(conn, clock, second, "submitted")

    for state in OPEN_STATES:
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            async with empty_db.write() as conn:
                await add_charge(conn, clock, first, state.value)
    assert len(await states(empty_db)) == 6


async def test_upgrading_keeps_one_open_charge_per_line_and_expires_the_other_requests(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db, BEFORE_ONE_OPEN_CHARGE)
    waiting_line, flying_line, quiet_line = await lines_of_one_user(empty_db, cipher, clock,
                                                                    count=3)
    async with empty_db.write() as conn:
        # Three requests on one line: the newest is kept.
        old, older_sent, newest = [await add_charge(conn, clock, waiting_line,
                                                    "awaiting_approval") for _ in range(3)]
        # A top-up in flight and two requests: the one in flight is kept.
        ask_1 = await add_charge(conn, clock, flying_line, "awaiting_approval")
        flying = await add_charge(conn, clock, flying_line, "submitted")
        ask_2 = await add_charge(conn, clock, flying_line, "awaiting_approval")
        # One open and one closed: nothing to do.
        alone = await add_charge(conn, clock, quiet_line, "approved")
        closed = await add_charge(conn, clock, quiet_line, "succeeded")
        outbox = NotificationsRepository(conn)
        for charge_id in (old, older_sent, newest):
            await outbox.enqueue(user_id=42, chat_id=42, dedupe_key=f"approval:{charge_id}",
                                 kind="approval_request", params={"charge_id": charge_id},
                                 now=clock.now())
        sent = await outbox.by_key(f"approval:{older_sent}")
        assert sent is not None
        await outbox.mark_sent(sent.id, message_id=77, now=clock.now())

    await migrate.upgrade(empty_db)

    superseded = ("expired", "another_open_charge")
    assert await states(empty_db) == {
        old: superseded, older_sent: superseded, newest: ("awaiting_approval", None),
        ask_1: superseded, flying: ("submitted", None), ask_2: superseded,
        alone: ("approved", None), closed: ("succeeded", None)}
    async with empty_db.read() as conn:
        entries = await AuditRepository(conn).latest(action="charge.expired")
        outbox = NotificationsRepository(conn)
        requests = {charge_id: await outbox.by_key(f"approval:{charge_id}")
                    for charge_id in (old, older_sent, newest)}
    kept_instead = {int(str(e.subject)): e.details["kept"] for e in entries}
    assert kept_instead == {old: newest, older_sent: newest, ask_1: flying, ask_2: flying}
    assert {e.actor for e in entries} == {"migration"}
    # The request nobody has seen yet is not sent; a sent one answers "expired" if tapped.
    status = {charge_id: r.status.value for charge_id, r in requests.items() if r}
    assert status == {old: "dropped", older_sent: "sent", newest: "pending"}

    # Down and up again: the index goes and comes back; the expired stay expired.
    await migrate.downgrade(empty_db, BEFORE_ONE_OPEN_CHARGE)
    async with empty_db.write() as conn:
        extra = await add_charge(conn, clock, quiet_line, "awaiting_approval")
    await migrate.upgrade(empty_db)
    after = await states(empty_db)
    assert (after[extra], after[alone]) == (superseded, ("approved", None))
    assert after[old] == superseded


async def test_two_charges_in_flight_on_one_line_refuse_the_upgrade(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db, BEFORE_ONE_OPEN_CHARGE)
    line, other = await lines_of_one_user(empty_db, cipher, clock)
    async with empty_db.write() as conn:
        approved = await add_charge(conn, clock, line, "approved")
        submitted = await add_charge(conn, clock, line, "submitted")
        await add_charge(conn, clock, other, "awaiting_approval")
        await add_charge(conn, clock, other, "awaiting_approval")
    before = await states(empty_db)

    with pytest.raises(migrate.SchemaError, match=f"{approved}, {submitted}"):
        await migrate.upgrade(empty_db)

    assert await migrate.current_revision(empty_db) == BEFORE_ONE_OPEN_CHARGE
    assert await states(empty_db) == before  # nothing expired, no index
    async with empty_db.write() as conn:  # the previous release settles one of them
        await conn.execute(charges.update().where(charges.c.id == approved)
                           .values(state="failed"))
    await migrate.upgrade(empty_db)
    assert await migrate.current_revision(empty_db) == migrate.head_revision()


BEFORE_PAYMENT_REFERENCES = "0006"


async def test_upgrading_encrypts_payment_references_and_masks_their_copies(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await migrate.upgrade(empty_db, BEFORE_PAYMENT_REFERENCES)
    now = clock.now()
    async with empty_db.write() as conn:
        await add_user(conn, clock)
        for external_id, provider in (("stxCHARGE-0001", "prov-77"), ("operator:BANK-9911", None)):
            await conn.execute(sqlalchemy.text(
                "INSERT INTO wallet_payments (user_id, source, external_id, provider_charge_id,"
                " amount_minor, currency, actor, created_at) VALUES (42, :source, :ext, :prov,"
                " 500, 'USD', 'cli', :now)"), {
                    "source": "operator" if provider is None else "telegram",
                    "ext": external_id, "prov": provider, "now": now})
        await conn.execute(sqlalchemy.text(
            "INSERT INTO ledger_entries (user_id, currency, amount_minor, kind, payment_id, memo,"
            " created_at) SELECT 42, 'USD', 500, 'operator_credit', id, 'BANK-9911', :now"
            " FROM wallet_payments WHERE source = 'operator'"), {"now": now})
        await AuditRepository(conn).record(at=now, actor="cli", action="wallet.credit",
                                           subject="payment:2",
                                           details={"user_id": 42, "reference": "BANK-9911"})
        await NotificationsRepository(conn).enqueue(
            user_id=42, chat_id=42, dedupe_key="wallet_credit:1", kind="wallet_credit",
            params={"charge_id": "stxCHARGE-0001", "amount_minor": 500}, now=now)

    with pytest.raises(migrate.SchemaError, match="ENCRYPTION_KEYS"):
        await migrate.upgrade(empty_db)  # without the keys: refused, nothing changed
    assert await migrate.current_revision(empty_db) == BEFORE_PAYMENT_REFERENCES

    await migrate.upgrade(empty_db, cipher=cipher)

    async with empty_db.read() as conn:
        dump = repr([list(map(tuple, (await conn.execute(select(metadata.tables[table]))).all()))
                     for table in ("wallet_payments", "ledger_entries", "audit_log",
                                   "notifications")])
        payments = PaymentsRepository(conn, cipher)
        telegram = await payments.by_external_id("stxCHARGE-0001")
        operator = await payments.by_external_id("operator:BANK-9911")
        receipt = await NotificationsRepository(conn).by_key("wallet_credit:1")
        movements = await WalletRepository(conn).entries(42, "USD", cipher)
    for secret in ("stxCHARGE-0001", "prov-77", "BANK-9911"):
        assert secret not in dump
    assert telegram is not None and operator is not None
    assert (telegram.source, operator.source) == ("telegram", "operator")
    assert receipt is not None and receipt.params["charge_shown"] == "…0001"
    assert [m.reference for m in movements] == ["BANK-9911"]

    await migrate.downgrade(empty_db, BEFORE_PAYMENT_REFERENCES, cipher=cipher)
    async with empty_db.read() as conn:
        restored = set((await conn.execute(sqlalchemy.text(
            "SELECT external_id, provider_charge_id FROM wallet_payments"))).all())
        memo = (await conn.execute(sqlalchemy.text(
            "SELECT memo FROM ledger_entries"))).scalar_one()
    assert restored == {("stxCHARGE-0001", "prov-77"), ("operator:BANK-9911", None)}
    assert memo == "BANK-9911"
    await migrate.upgrade(empty_db, cipher=cipher)
    async with empty_db.read() as conn:
        assert await PaymentsRepository(conn, cipher).by_external_id("stxCHARGE-0001")


BEFORE_ESIM_LINES = "0009"


async def child_rows(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        return {name: int((await conn.execute(
            select(sqlalchemy.func.count()).select_from(metadata.tables[name]))).scalar_one())
            for name in ("lines", "charges", "line_readings", "recharge_rules")}


async def test_esim_lines_keep_every_line_and_what_references_it(
        empty_db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    """SQLite rebuilds the lines table for 0010: nothing that references a line (charges,
    readings, rules, all ON DELETE CASCADE or RESTRICT) may be lost with the old copy."""
    await migrate.upgrade(empty_db, BEFORE_ESIM_LINES)
    first, second = await lines_of_one_user(empty_db, cipher, clock)
    async with empty_db.write() as conn:
        await add_charge(conn, clock, first, "succeeded")
        await add_charge(conn, clock, second, "awaiting_approval")
        await conn.execute(sqlalchemy.text(
            "INSERT INTO line_readings (line_id, source, read_at, recorded_at, data_mb) "
            "VALUES (:line, 'user', :now, :now, 500)"), {"line": first, "now": clock.now()})
    before = await child_rows(empty_db)

    await migrate.upgrade(empty_db)

    assert await child_rows(empty_db) == before
    async with empty_db.read() as conn:
        kinds = (await conn.execute(sqlalchemy.text("SELECT kind FROM lines"))).scalars().all()
    assert kinds == ["sim", "sim"]
    # An eSIM line needs no number; a SIM line cannot lose its own.
    async with empty_db.write() as conn:
        await conn.execute(sqlalchemy.text(
            "INSERT INTO lines (owner_id, operator, kind, created_at, updated_at) "
            "VALUES (42, 'smart', 'esim', :now, :now)"), {"now": clock.now()})
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with empty_db.write() as conn:
            await conn.execute(sqlalchemy.text(
                "INSERT INTO lines (owner_id, operator, kind, created_at, updated_at) "
                "VALUES (42, 'smart', 'sim', :now, :now)"), {"now": clock.now()})

    # Down is refused while an eSIM line exists; without one it goes, and up again.
    with pytest.raises(migrate.SchemaError, match="eSIM lines"):
        await migrate.downgrade(empty_db, BEFORE_ESIM_LINES)
    async with empty_db.write() as conn:
        await conn.execute(sqlalchemy.text("DELETE FROM lines WHERE kind = 'esim'"))
    await migrate.downgrade(empty_db, BEFORE_ESIM_LINES)
    assert await child_rows(empty_db) == before
    await migrate.upgrade(empty_db)
    assert await child_rows(empty_db) == before
