"""The repositories on every backend: users, lines (encrypted at rest), OTP challenges,
the audit log, and write transactions that never lose an update."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy.exc
from sqlalchemy import func, select, update

from bot.clock import ManualClock
from bot.domain.operators import Operator
from bot.domain.phone import MobileNumber, parse_cambodian_mobile
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.otp import OtpRepository
from storage.tables import audit_log, lines, otp_challenges, users
from storage.users import UsersRepository

HEX64 = re.compile(r"^[0-9a-f]{64}$")
CELLCARD = parse_cambodian_mobile("012 345 678")   # +85512345678
METFONE = parse_cambodian_mobile("097 345 6789")   # +855973456789
SMART = parse_cambodian_mobile("096 234 5678")     # +855962345678


async def add_users(db: Database, now: datetime, *user_ids: int) -> None:
    async with db.write() as conn:
        for user_id in user_ids:
            await UsersRepository(conn).ensure(user_id, language="en", now=now)


# --- users -------------------------------------------------------------------------------

async def test_ensure_creates_once_and_keeps_the_first_language(
        db: Database, clock: ManualClock) -> None:
    first_seen = clock.now()
    async with db.write() as conn:
        created = await UsersRepository(conn).ensure(5, language="km", now=first_seen)
    clock.advance(timedelta(hours=1))
    async with db.write() as conn:
        again = await UsersRepository(conn).ensure(5, language="en", now=clock.now())

    assert created.id == 5
    assert created.language == "km"
    assert created.reachable is True
    assert created.created_at == first_seen
    assert created.created_at.tzinfo is not None
    assert again == created
    async with db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
    assert count == 1


async def test_get_unknown_user_is_none(db: Database) -> None:
    async with db.read() as conn:
        assert await UsersRepository(conn).get(404) is None


async def test_update_changes_settings(db: Database, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 5)
    later = clock.advance(timedelta(minutes=10))
    async with db.write() as conn:
        await UsersRepository(conn).update(
            5, now=later, language="km", timezone="Asia/Phnom_Penh",
            quiet_start_minute=22 * 60, quiet_end_minute=7 * 60, reachable=False)
    async with db.read() as conn:
        user = await UsersRepository(conn).get(5)
        updated_at = (await conn.execute(
            select(users.c.updated_at).where(users.c.id == 5))).scalar_one()
    assert user is not None
    assert (user.language, user.timezone) == ("km", "Asia/Phnom_Penh")
    assert (user.quiet_start_minute, user.quiet_end_minute) == (1320, 420)
    assert user.reachable is False
    assert user.created_at == later - timedelta(minutes=10)
    assert updated_at == later


async def test_update_refuses_unknown_fields(db: Database, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 5)
    async with db.write() as conn:
        with pytest.raises(ValueError, match="created_at"):
            await UsersRepository(conn).update(5, now=clock.now(), created_at=clock.now())
        with pytest.raises(ValueError, match="id"):
            await UsersRepository(conn).update(5, now=clock.now(), id=6, language="km")
    async with db.read() as conn:
        user = await UsersRepository(conn).get(5)
    assert user is not None
    assert user.language == "en"
    assert user.id == 5


async def test_quiet_hours_outside_the_day_violate_the_check(
        db: Database, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 5)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with db.write() as conn:
            await UsersRepository(conn).update(5, now=clock.now(), quiet_start_minute=1440)


# --- lines -------------------------------------------------------------------------------

async def test_add_and_get_a_line(db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        added = await LinesRepository(conn, cipher).add(
            owner_id=1, number=CELLCARD, now=clock.now(), nickname="Mum")
    async with db.read() as conn:
        fetched = await LinesRepository(conn, cipher).get(added.id)

    assert fetched == added
    assert added.owner_id == 1
    assert added.number == MobileNumber(e164="+85512345678", operator=Operator.CELLCARD)
    assert added.nickname == "Mum"
    assert added.label == "Mum"
    assert added.iccid is None
    assert added.verified_at is None
    assert added.next_check_at == clock.now()
    assert added.created_at == clock.now()


async def test_get_missing_line_is_none(db: Database, cipher: FieldCipher) -> None:
    async with db.read() as conn:
        assert await LinesRepository(conn, cipher).get(12345) is None
        assert await LinesRepository(conn, cipher).by_number("+85512345678") is None


async def test_a_line_needs_an_existing_owner(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with db.write() as conn:
            await LinesRepository(conn, cipher).add(owner_id=999, number=SMART, now=clock.now())


async def test_phone_number_is_encrypted_at_rest(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        added = await LinesRepository(conn, cipher).add(
            owner_id=1, number=METFONE, now=clock.now(), iccid="8985501234567890123")
    async with db.read() as conn:
        raw = (await conn.execute(select(lines).where(lines.c.id == added.id))).mappings().one()

    for secret in ("855973456789", "973456789", "8985501234567890123", "1234567890123"):
        for column in ("phone_enc", "phone_index", "iccid_enc", "iccid_index"):
            assert secret not in raw[column], (secret, column)
    assert HEX64.match(raw["phone_index"])
    assert HEX64.match(raw["iccid_index"])
    assert raw["phone_index"] == cipher.blind_index("+855973456789")
    assert raw["phone_index"] != raw["iccid_index"]
    assert cipher.decrypt(raw["phone_enc"]) == "+855973456789"
    assert cipher.decrypt(raw["iccid_enc"]) == "8985501234567890123"
    assert raw["operator"] == "metfone"
    assert added.number.e164 == "+855973456789"
    assert added.iccid == "8985501234567890123"


async def test_by_number_finds_a_line_through_the_blind_index(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1, 2)
    async with db.write() as conn:
        repo = LinesRepository(conn, cipher)
        first = await repo.add(owner_id=1, number=CELLCARD, now=clock.now())
        second = await repo.add(owner_id=2, number=SMART, now=clock.now())
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher)
        found_first = await repo.by_number("+85512345678")
        found_second = await repo.by_number(parse_cambodian_mobile("+855 96 234 5678").e164)
        missing = await repo.by_number("+855973456789")
    assert found_first == first
    assert found_second == second
    assert missing is None


async def test_for_owner_lists_only_that_owners_lines_in_order(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1, 2)
    async with db.write() as conn:
        repo = LinesRepository(conn, cipher)
        a = await repo.add(owner_id=1, number=METFONE, now=clock.now())
        b = await repo.add(owner_id=2, number=CELLCARD, now=clock.now())
        c = await repo.add(owner_id=1, number=SMART, now=clock.now())
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher)
        mine = await repo.for_owner(1)
        theirs = await repo.for_owner(2)
        nobody = await repo.for_owner(3)
    assert mine == [a, c]
    assert theirs == [b]
    assert nobody == []


async def test_rename_transfer_and_remove(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1, 2)
    async with db.write() as conn:
        line = await LinesRepository(conn, cipher).add(
            owner_id=1, number=CELLCARD, now=clock.now(), nickname="work")

    async with db.write() as conn:
        await LinesRepository(conn, cipher).rename(line.id, "home", now=clock.now())
    async with db.read() as conn:
        renamed = await LinesRepository(conn, cipher).get(line.id)
    assert renamed is not None
    assert renamed.nickname == "home"
    assert renamed.label == "home"

    async with db.write() as conn:
        await LinesRepository(conn, cipher).rename(line.id, None, now=clock.now())
    async with db.read() as conn:
        unnamed = await LinesRepository(conn, cipher).get(line.id)
    assert unnamed is not None
    assert unnamed.nickname is None
    assert unnamed.label == "012 ••• 678"

    transferred_at = clock.advance(timedelta(days=1))
    async with db.write() as conn:
        repo = LinesRepository(conn, cipher)
        await repo.rename(line.id, "old owner's name", now=clock.now())
        await repo.transfer(line.id, new_owner_id=2, now=transferred_at)
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher)
        moved = await repo.get(line.id)
        assert await repo.for_owner(1) == []
        assert await repo.for_owner(2) == [moved]
    assert moved is not None
    assert moved.owner_id == 2
    assert moved.nickname is None
    assert moved.verified_at == transferred_at
    assert moved.number == line.number
    assert moved.created_at == line.created_at

    async with db.write() as conn:
        await LinesRepository(conn, cipher).remove(line.id)
    async with db.read() as conn:
        repo = LinesRepository(conn, cipher)
        assert await repo.get(line.id) is None
        assert await repo.by_number(CELLCARD.e164) is None
        assert await repo.for_owner(2) == []


async def test_same_number_twice_violates_the_unique_blind_index(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        original = await LinesRepository(conn, cipher).add(
            owner_id=1, number=CELLCARD, now=clock.now())

    async def second_owner_adds_the_same_number() -> None:
        async with db.write() as conn:
            await UsersRepository(conn).ensure(2, language="km", now=clock.now())
            await AuditRepository(conn).record(at=clock.now(), actor="user:2",
                                               action="line.added")
            # The same number typed differently: one canonical form, one blind index.
            await LinesRepository(conn, cipher).add(
                owner_id=2, number=parse_cambodian_mobile("+855 12-345-678"), now=clock.now())

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await second_owner_adds_the_same_number()

    async with db.read() as conn:
        assert await UsersRepository(conn).get(2) is None
        assert await AuditRepository(conn).latest() == []
        line_count = (await conn.execute(select(func.count()).select_from(lines))).scalar_one()
        assert line_count == 1
        assert await LinesRepository(conn, cipher).by_number(CELLCARD.e164) == original


async def test_same_iccid_twice_violates_its_unique_blind_index(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        await LinesRepository(conn, cipher).add(
            owner_id=1, number=CELLCARD, now=clock.now(), iccid="8985501234567890123")
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        async with db.write() as conn:
            await LinesRepository(conn, cipher).add(
                owner_id=1, number=SMART, now=clock.now(), iccid="8985501234567890123")
    async with db.read() as conn:
        assert await LinesRepository(conn, cipher).by_number(SMART.e164) is None


# --- OTP challenges ----------------------------------------------------------------------

async def test_otp_stores_only_a_keyed_hash(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        challenge = await OtpRepository(conn, cipher).create(
            user_id=1, phone_e164=CELLCARD.e164, purpose="bind", subject=None, code="482913",
            now=clock.now(), expires_at=clock.now() + timedelta(minutes=10))
    async with db.read() as conn:
        raw = (await conn.execute(select(otp_challenges).where(
            otp_challenges.c.id == challenge.id))).mappings().one()

    for column, value in raw.items():
        assert "482913" not in str(value), column
        assert "12345678" not in str(value), column
    assert HEX64.match(raw["code_hash"])
    assert raw["code_hash"] == cipher.otp_hash(challenge.id, "482913")
    assert raw["phone_index"] == cipher.blind_index(CELLCARD.e164)
    assert challenge.user_id == 1
    assert challenge.purpose == "bind"
    assert challenge.attempts == 0
    assert challenge.created_at == clock.now()
    assert challenge.expires_at == clock.now() + timedelta(minutes=10)
    assert challenge.locked_until is None
    assert challenge.consumed_at is None


async def test_otp_check_code(db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        first = await repo.create(
            user_id=1, phone_e164=CELLCARD.e164, purpose="bind", subject=None, code="111111",
            now=clock.now(), expires_at=clock.now() + timedelta(minutes=10))
        second = await repo.create(
            user_id=1, phone_e164=CELLCARD.e164, purpose="bind", subject=None, code="111111",
            now=clock.now(), expires_at=clock.now() + timedelta(minutes=10))
    async with db.read() as conn:
        repo = OtpRepository(conn, cipher)
        assert await repo.check_code(first, "111111") is True
        assert await repo.check_code(first, "111112") is False
        assert await repo.check_code(first, "") is False
        assert await repo.check_code(second, "111111") is True
        hashes = (await conn.execute(select(otp_challenges.c.code_hash))).scalars().all()
    # Same code, different challenges: different hashes (bound to the challenge id).
    assert len(set(hashes)) == 2


async def test_otp_consume_succeeds_once(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        challenge = await OtpRepository(conn, cipher).create(
            user_id=1, phone_e164=SMART.e164, purpose="confirm_rule", subject="rule:9",
            code="000123", now=clock.now(), expires_at=clock.now() + timedelta(minutes=5))
    used_at = clock.advance(timedelta(minutes=1))
    async with db.write() as conn:
        assert await OtpRepository(conn, cipher).consume(challenge.id, now=used_at) is True
    clock.advance(timedelta(seconds=5))
    async with db.write() as conn:
        assert await OtpRepository(conn, cipher).consume(challenge.id, now=clock.now()) is False
    async with db.read() as conn:
        stored = await OtpRepository(conn, cipher).get(challenge.id)
    assert stored is not None
    assert stored.consumed_at == used_at
    assert stored.subject == "rule:9"


async def test_otp_record_failure_counts_and_locks(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1)
    async with db.write() as conn:
        challenge = await OtpRepository(conn, cipher).create(
            user_id=1, phone_e164=SMART.e164, purpose="bind", subject=None, code="999999",
            now=clock.now(), expires_at=clock.now() + timedelta(minutes=10))
    lock_until = clock.now() + timedelta(minutes=15)
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        await repo.record_failure(challenge.id, locked_until=None)
        await repo.record_failure(challenge.id, locked_until=None)
    async with db.read() as conn:
        after_two = await OtpRepository(conn, cipher).get(challenge.id)
    async with db.write() as conn:
        await OtpRepository(conn, cipher).record_failure(challenge.id, locked_until=lock_until)
    async with db.read() as conn:
        after_three = await OtpRepository(conn, cipher).get(challenge.id)

    assert after_two is not None
    assert after_two.attempts == 2
    assert after_two.locked_until is None
    assert after_three is not None
    assert after_three.attempts == 3
    assert after_three.locked_until == lock_until


async def test_otp_sent_since_counts_codes_for_one_number_in_a_window(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1, 2)
    start = clock.now()
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        for minutes, user_id, number in [(0, 1, CELLCARD), (30, 1, CELLCARD), (59, 2, CELLCARD),
                                         (90, 1, CELLCARD), (45, 1, SMART)]:
            at = start + timedelta(minutes=minutes)
            await repo.create(user_id=user_id, phone_e164=number.e164, purpose="bind",
                              subject=None, code="123456", now=at,
                              expires_at=at + timedelta(minutes=10))
    async with db.read() as conn:
        repo = OtpRepository(conn, cipher)
        before = start - timedelta(minutes=1)
        assert await repo.sent_since(phone_e164=CELLCARD.e164, since=before) == 4
        assert await repo.sent_since(phone_e164=CELLCARD.e164, since=start) == 3  # exclusive
        assert await repo.sent_since(phone_e164=CELLCARD.e164,
                                     since=start + timedelta(minutes=30)) == 2
        assert await repo.sent_since(phone_e164=CELLCARD.e164,
                                     since=start + timedelta(minutes=29)) == 3
        assert await repo.sent_since(phone_e164=CELLCARD.e164,
                                     since=start + timedelta(minutes=91)) == 0
        assert await repo.sent_since(phone_e164=SMART.e164, since=before) == 1
        assert await repo.sent_since(phone_e164=METFONE.e164, since=before) == 0
        # A moment given in another time zone is the same instant.
        ict = before.astimezone(timezone(timedelta(hours=7), "ICT"))
        assert await repo.sent_since(phone_e164=CELLCARD.e164, since=ict) == 4
        latest = await repo.latest(user_id=1, phone_e164=CELLCARD.e164, purpose="bind")
    assert latest is not None
    assert latest.created_at == start + timedelta(minutes=90)


async def test_otp_lockouts_by_number_and_by_user(db: Database, cipher: FieldCipher,
                                                 clock: ManualClock) -> None:
    await add_users(db, clock.now(), 1, 2)
    now = clock.now()
    async with db.write() as conn:
        repo = OtpRepository(conn, cipher)
        for user_id, number, purpose, locked_for in [
                (1, CELLCARD, "bind", timedelta(minutes=5)),
                (2, CELLCARD, "rule", timedelta(minutes=9)),
                (2, SMART, "bind", -timedelta(seconds=1)),  # its lockout is over
                (1, METFONE, "bind", None)]:
            challenge = await repo.create(user_id=user_id, phone_e164=number.e164,
                                          purpose=purpose, subject=None, code="123456",
                                          now=now, expires_at=now + timedelta(minutes=5))
            if locked_for is not None:
                await repo.record_failure(challenge.id, locked_until=now + locked_for)
    async with db.read() as conn:
        repo = OtpRepository(conn, cipher)
        assert await repo.number_locked_until(phone_e164=CELLCARD.e164, now=now) == (
            now + timedelta(minutes=9))  # the latest end, whoever's and whatever for
        assert await repo.number_locked_until(phone_e164=SMART.e164, now=now) is None
        assert await repo.number_locked_until(phone_e164=METFONE.e164, now=now) is None
        assert await repo.number_locked_until(
            phone_e164=CELLCARD.e164, now=now + timedelta(minutes=9)) is None  # exclusive
        assert await repo.user_locked_until(user_id=1, now=now) == now + timedelta(minutes=5)
        assert await repo.user_locked_until(user_id=2, now=now) == now + timedelta(minutes=9)
        assert await repo.user_locked_until(user_id=1, now=now + timedelta(minutes=5)) is None


async def test_otp_lock_number_holds_one_number_until_the_transaction_ends(
        db: Database, cipher: FieldCipher) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite writers hold the whole database (BEGIN IMMEDIATE)")
    async with db.write() as holder:
        await OtpRepository(holder, cipher).lock_number(CELLCARD.e164)
        async with db.write() as other:  # another number is not held up
            await OtpRepository(other, cipher).lock_number(SMART.e164)
        waiting = asyncio.ensure_future(_lock_in_new_transaction(db, cipher, CELLCARD))
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done  # the same number waits for the holder
    async with asyncio.timeout(10):
        await waiting  # and goes on once the holder commits


async def _lock_in_new_transaction(db: Database, cipher: FieldCipher,
                                   number: MobileNumber) -> None:
    async with db.write() as conn:
        await OtpRepository(conn, cipher).lock_number(number.e164)


# --- audit log ---------------------------------------------------------------------------

async def test_audit_record_and_latest(db: Database, clock: ManualClock) -> None:
    async with db.write() as conn:
        audit = AuditRepository(conn)
        await audit.record(at=clock.now(), actor="user:1", action="line.added",
                           subject="line:1", details={"operator": "smart", "masked": "096 ••• 678"})
        await audit.record(at=clock.advance(timedelta(seconds=1)), actor="cli",
                           action="keys.rotated", details={"rotated": 3, "complete": True})
        await audit.record(at=clock.advance(timedelta(seconds=1)), actor="system",
                           action="line.added")
    async with db.read() as conn:
        audit = AuditRepository(conn)
        everything = await audit.latest()
        newest = await audit.latest(limit=1)
        added = await audit.latest(action="line.added")
        nothing = await audit.latest(action="no.such.action")

    assert [e.action for e in everything] == ["line.added", "keys.rotated", "line.added"]
    assert [e.actor for e in everything] == ["system", "cli", "user:1"]
    assert newest == everything[:1]
    assert added == [everything[0], everything[2]]
    assert nothing == []
    first = everything[2]
    assert first.subject == "line:1"
    assert first.details == {"operator": "smart", "masked": "096 ••• 678"}
    assert first.at == clock.now() - timedelta(seconds=2)
    assert first.at.tzinfo is not None
    assert everything[1].details == {"rotated": 3, "complete": True}
    assert everything[0].details == {}
    assert everything[0].subject is None


# --- concurrency -------------------------------------------------------------------------

WRITERS = 20


async def test_concurrent_read_modify_write_loses_no_update(
        db: Database, clock: ManualClock) -> None:
    """20 writers increment one counter at once. On SQLite BEGIN IMMEDIATE queues them (no
    deadlock upgrading a read lock to a write lock); on PostgreSQL the row lock does."""
    async with db.write() as conn:
        await UsersRepository(conn).ensure(1, language="en", now=clock.now())
        await UsersRepository(conn).update(1, now=clock.now(), quiet_start_minute=0)

    async def increment() -> int:
        async with db.write() as conn:
            query = select(users.c.quiet_start_minute).where(users.c.id == 1)
            if not db.is_sqlite:
                query = query.with_for_update()
            current = (await conn.execute(query)).scalar_one()
            await conn.execute(update(users).where(users.c.id == 1).values(
                quiet_start_minute=current + 1))
            return int(current)

    seen = await asyncio.gather(*(increment() for _ in range(WRITERS)))

    # Every writer saw a different value: each read came after the previous write.
    assert sorted(seen) == list(range(WRITERS))
    async with db.read() as conn:
        user = await UsersRepository(conn).get(1)
    assert user is not None
    assert user.quiet_start_minute == WRITERS


async def test_concurrent_count_then_insert_loses_no_row(
        db: Database, clock: ManualClock) -> None:
    """Each writer counts the audit rows and appends one numbered after the count."""
    await add_users(db, clock.now(), 1)

    async def append() -> None:
        async with db.write() as conn:
            if not db.is_sqlite:  # serialize on the user's row, as handlers do
                await conn.execute(
                    select(users.c.id).where(users.c.id == 1).with_for_update())
            count = (await conn.execute(select(func.count()).select_from(audit_log).where(
                audit_log.c.action == "seq"))).scalar_one()
            await AuditRepository(conn).record(at=clock.now(), actor="user:1", action="seq",
                                               subject=str(count))

    await asyncio.gather(*(append() for _ in range(WRITERS)))

    async with db.read() as conn:
        subjects = (await conn.execute(select(audit_log.c.subject).where(
            audit_log.c.action == "seq"))).scalars().all()
    assert sorted(subjects, key=int) == [str(n) for n in range(WRITERS)]


async def test_readers_are_not_blocked_by_an_open_write(
        db: Database, clock: ManualClock) -> None:
    """read() does not take the write lock (only write() begins IMMEDIATE on SQLite): while
    a write transaction is open, a reader sees the last committed state without waiting."""
    await add_users(db, clock.now(), 1)
    async with db.write() as writer:
        await UsersRepository(writer).update(1, now=clock.now(), language="km")
        async with db.read() as reader:
            seen = await UsersRepository(reader).get(1)
        assert seen is not None
        assert seen.language == "en"
    async with db.read() as reader:
        after = await UsersRepository(reader).get(1)
    assert after is not None
    assert after.language == "km"
