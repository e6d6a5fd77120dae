"""Rotating the encryption keys: interrupted, resumed, finished, and readable afterwards with
the new key alone, the blind indexes untouched."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.phone import parse_cambodian_mobile
from bot.services.keys import KeyRotationService, RotationReport
from storage.audit import AuditRepository
from storage.crypto import FieldCipher, KeyConfigError, KeyMaterial, generate_fernet_key
from storage.db import Database
from storage.lines import LinesRepository
from storage.persistence import DatabasePersistence
from storage.sim_carrier import SimCarrierRepository
from storage.tables import lines, ptb_user_data, sim_lines
from storage.users import UsersRepository

LINE_NUMBERS = ["012345678", "092345678", "0973456789", "0883456789", "0962345678"]
ICCIDS = {"0973456789": "8985501234567890123", "0962345678": "8985509876543210987"}
SIM_NUMBERS = ["+85512345678", "+855712345678", "+855962345678"]


class Keys:
    def __init__(self) -> None:
        self.index_key = os.urandom(32)
        self.a = generate_fernet_key()
        self.b = generate_fernet_key()

    def cipher(self, *fernet_keys: str) -> FieldCipher:
        return FieldCipher(KeyMaterial(encryption_keys=fernet_keys,
                                       blind_index_key=self.index_key))


@pytest.fixture
def rotation_keys() -> Keys:
    return Keys()


async def fill(db: Database, cipher_a: FieldCipher, clock: ManualClock) -> None:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(1, language="en", now=clock.now())
        await UsersRepository(conn).ensure(2, language="km", now=clock.now())
        repo = LinesRepository(conn, cipher_a)
        for i, text in enumerate(LINE_NUMBERS):
            await repo.add(owner_id=1 + i % 2, number=parse_cambodian_mobile(text),
                           now=clock.now(), iccid=ICCIDS.get(text), nickname=f"line {i}")
        carrier = SimCarrierRepository(conn, cipher_a)
        for number in SIM_NUMBERS:
            await carrier.add_line(phone_e164=number, operator="smart", balance_minor=150,
                                   currency="USD", data_mb=1024,
                                   validity_end=clock.now() + timedelta(days=30),
                                   daily_spend_minor=10, daily_data_mb=50, now=clock.now())


async def tokens(db: Database) -> list[str]:
    """Every encrypted value stored, whichever table holds it."""
    async with db.read() as conn:
        rows = (await conn.execute(
            select(lines.c.phone_enc, lines.c.iccid_enc).order_by(lines.c.id))).all()
        sims = (await conn.execute(select(sim_lines.c.phone_enc))).scalars().all()
    return [t for row in rows for t in row if t is not None] + list(sims)


async def indexes(db: Database) -> list[tuple[str | None, ...]]:
    async with db.read() as conn:
        line_indexes = (await conn.execute(
            select(lines.c.phone_index, lines.c.iccid_index).order_by(lines.c.id))).all()
        sim_indexes = (await conn.execute(
            select(sim_lines.c.phone_index).order_by(sim_lines.c.phone_index))).all()
    return [tuple(r) for r in line_indexes] + [tuple(r) for r in sim_indexes]


async def test_interrupted_rotation_resumes_and_finishes(
        db: Database, clock: ManualClock, rotation_keys: Keys) -> None:
    cipher_a = rotation_keys.cipher(rotation_keys.a)
    cipher_ba = rotation_keys.cipher(rotation_keys.b, rotation_keys.a)
    cipher_b = rotation_keys.cipher(rotation_keys.b)
    await fill(db, cipher_a, clock)
    indexes_before = await indexes(db)
    total_tokens = len(LINE_NUMBERS) + len(ICCIDS) + len(SIM_NUMBERS)
    assert len(await tokens(db)) == total_tokens
    assert not any(cipher_ba.is_primary(t) for t in await tokens(db))

    service = KeyRotationService(db, cipher_ba, clock, batch_size=2)

    # Interrupted after one batch: two lines rotated, the rest still under key A.
    partial = await service.rotate(max_batches=1)
    assert partial == RotationReport(examined=2, rotated=2, complete=False)
    async with db.read() as conn:
        line_rows = (await conn.execute(
            select(lines.c.phone_enc).order_by(lines.c.id))).scalars().all()
        sim_rows = (await conn.execute(select(sim_lines.c.phone_enc))).scalars().all()
    assert [cipher_ba.is_primary(t) for t in line_rows] == [True, True, False, False, False]
    assert not any(cipher_ba.is_primary(t) for t in sim_rows)
    # Mid-rotation every row is still readable with both keys configured.
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher_ba)
        assert len(await repo.for_owner(1)) + len(await repo.for_owner(2)) == len(LINE_NUMBERS)

    # Run again: it finishes.
    clock.advance(timedelta(minutes=1))
    finished = await service.rotate()
    assert finished.complete is True
    assert finished.rotated == len(LINE_NUMBERS) - 2 + len(SIM_NUMBERS)
    assert finished.examined == len(LINE_NUMBERS) + len(SIM_NUMBERS)
    assert all(cipher_ba.is_primary(t) for t in await tokens(db))

    # And once more: nothing left to do.
    clock.advance(timedelta(minutes=1))
    again = await service.rotate()
    assert again == RotationReport(examined=len(LINE_NUMBERS) + len(SIM_NUMBERS), rotated=0,
                                   complete=True)

    # Blind indexes never change with the encryption keys.
    assert await indexes(db) == indexes_before

    # Key B alone reads everything; look-ups by number still work.
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher_b)
        stored = await repo.for_owner(1) + await repo.for_owner(2)
        assert sorted(line.number.e164 for line in stored) == sorted(
            parse_cambodian_mobile(text).e164 for text in LINE_NUMBERS)
        for text in LINE_NUMBERS:
            number = parse_cambodian_mobile(text)
            found = await repo.by_number(number.e164)
            assert found is not None
            assert found.number == number
            assert found.iccid == ICCIDS.get(text)
        carrier = SimCarrierRepository(conn, cipher_b)
        for e164 in SIM_NUMBERS:
            sim = await carrier.line(e164)
            assert sim is not None
            assert sim.phone_e164 == e164
            assert sim.balance_minor == 150

    # Key A alone no longer reads anything.
    async with db.read() as conn:
        first_id = (await conn.execute(select(lines.c.id).order_by(lines.c.id))).scalars().first()
        assert first_id is not None
        with pytest.raises(KeyConfigError):
            await LinesRepository(conn, cipher_a).get(first_id)
        with pytest.raises(KeyConfigError):
            await LinesRepository(conn, cipher_a).by_number(
                parse_cambodian_mobile(LINE_NUMBERS[-1]).e164)
        with pytest.raises(KeyConfigError):
            await SimCarrierRepository(conn, cipher_a).line(SIM_NUMBERS[0])

    # Every run is audited, newest first.
    async with db.read() as conn:
        audited = await AuditRepository(conn).latest(action="keys.rotated")
    assert [e.details for e in audited] == [
        {"examined": again.examined, "rotated": 0, "complete": True},
        {"examined": finished.examined, "rotated": finished.rotated, "complete": True},
        {"examined": 2, "rotated": 2, "complete": False},
    ]
    assert [e.at for e in audited] == [clock.now(), clock.now() - timedelta(minutes=1),
                                       clock.now() - timedelta(minutes=2)]
    assert {e.actor for e in audited} == {"cli"}


async def test_interruption_between_tables_is_resumed(
        db: Database, clock: ManualClock, rotation_keys: Keys) -> None:
    """Stopped right after the lines table: the carrier lines are done on the next run."""
    cipher_a = rotation_keys.cipher(rotation_keys.a)
    cipher_ba = rotation_keys.cipher(rotation_keys.b, rotation_keys.a)
    await fill(db, cipher_a, clock)
    service = KeyRotationService(db, cipher_ba, clock, batch_size=2)

    # Five lines in batches of two: the third batch is short, so the table is finished.
    partial = await service.rotate(max_batches=3)
    assert partial == RotationReport(examined=len(LINE_NUMBERS), rotated=len(LINE_NUMBERS),
                                     complete=False)
    async with db.read() as conn:
        sim_rows = (await conn.execute(select(sim_lines.c.phone_enc))).scalars().all()
    assert not any(cipher_ba.is_primary(t) for t in sim_rows)

    finished = await service.rotate()
    assert finished.complete is True
    assert finished.rotated == len(SIM_NUMBERS)
    assert all(cipher_ba.is_primary(t) for t in await tokens(db))


async def test_rotation_with_an_unknown_key_fails_and_changes_nothing(
        db: Database, clock: ManualClock, rotation_keys: Keys) -> None:
    cipher_a = rotation_keys.cipher(rotation_keys.a)
    await fill(db, cipher_a, clock)
    before = await tokens(db)
    # Key A was dropped from the configuration: the stored values cannot be read.
    cipher_bc = rotation_keys.cipher(rotation_keys.b, generate_fernet_key())

    with pytest.raises(KeyConfigError):
        await KeyRotationService(db, cipher_bc, clock, batch_size=2).rotate()

    assert await tokens(db) == before


async def test_conversation_drafts_are_rotated_and_read_with_the_new_key(
        db: Database, clock: ManualClock, rotation_keys: Keys) -> None:
    """A draft holding a number being proven is encrypted data like any other field."""
    cipher_a = rotation_keys.cipher(rotation_keys.a)
    cipher_ba = rotation_keys.cipher(rotation_keys.b, rotation_keys.a)
    await DatabasePersistence(db, cipher_a).update_user_data(7, {"bind": "+85512345678"})
    await DatabasePersistence(db, cipher_a).update_bot_data({"started": "2026-12-06"})

    report = await KeyRotationService(db, cipher_ba, clock, batch_size=2).rotate()

    assert report.complete is True
    async with db.read() as conn:
        drafts = (await conn.execute(select(ptb_user_data.c.data_enc))).scalars().all()
    assert [cipher_ba.is_primary(token) for token in drafts] == [True]
    cipher_b = rotation_keys.cipher(rotation_keys.b)
    assert (await DatabasePersistence(db, cipher_b).get_user_data())[7] == {
        "bind": "+85512345678"}
    assert await DatabasePersistence(db, cipher_b).get_bot_data() == {"started": "2026-12-06"}
    with pytest.raises(KeyConfigError):
        await DatabasePersistence(db, cipher_a).get_user_data()


def test_every_encrypted_column_of_the_schema_is_rotated() -> None:
    """A column holding ciphertext (named *_enc) that rotate-keys does not know would keep
    the old key forever, and become unreadable once that key is dropped."""
    from storage.encrypted_fields import ENCRYPTED
    from storage.tables import metadata

    in_schema = {(table.name, column.name) for table in metadata.tables.values()
                 for column in table.columns if column.name.endswith("_enc")}
    rotated = {(spec.table.name, column.name) for spec in ENCRYPTED for column in spec.columns}
    assert in_schema == rotated
