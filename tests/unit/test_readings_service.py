"""ReadingsService on every backend: what a user reports is stored for their own lines only,
with an audit row; warning thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.money import Money, MoneyError
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.readings import LineReading, ReadingSource
from bot.services.readings import ReadingsService, ReportResult, ReportStatus
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.readings import ReadingsRepository
from storage.tables import line_readings
from tests.unit.line_helpers import add_line

ALICE = 4001
BOB = 4002
CELLCARD = parse_cambodian_mobile("012345678")
SMART = parse_cambodian_mobile("0969999999")
METFONE = parse_cambodian_mobile("0971234567")
SMART_SMS = ("Main Balance: 0.52$ Exp: 17-08-2026 23:59:59. Internet: 1,536 MB. "
             "Get 10GB for only $1! Dial *345#")
KHMER_SMS = "សមតុល្យ​គណនី​មេ៖ $១.២៥ ផុតកំណត់ ២៥/១២/២០២៦។ ទិន្នន័យ៖ ៥០០MB។"


@pytest.fixture
def service(db: Database, cipher: FieldCipher, clock: ManualClock) -> ReadingsService:
    return ReadingsService(db, cipher, clock)


async def stored_count(db: Database) -> int:
    async with db.read() as conn:
        result = await conn.execute(select(func.count()).select_from(line_readings))
        return int(result.scalar_one())


async def audit(db: Database, action: str) -> list[tuple[str, str | None, dict[str, object]]]:
    async with db.read() as conn:
        entries = await AuditRepository(conn).latest(action=action)
    return [(e.actor, e.subject, e.details) for e in entries]


# --- typed balances ---------------------------------------------------------------------


async def test_a_typed_balance_is_stored_as_a_user_reading_now(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    clock.advance(timedelta(minutes=3))

    result = await service.report_typed(ALICE, line_id, " $1.25 ")

    expected = LineReading(source=ReadingSource.USER, read_at=clock.now(),
                           balance=Money(125, "USD"))
    assert result == ReportResult(ReportStatus.STORED, expected)
    async with db.read() as conn:
        assert await ReadingsRepository(conn).latest(line_id) == expected
        row = (await conn.execute(select(line_readings))).mappings().one()
    assert row["recorded_at"] == clock.now()
    assert await audit(db, "line.reading_reported") == [
        (f"user:{ALICE}", str(line_id), {"via": "typed", "source": "user",
                                         "balance": "1.25 USD", "data_mb": None,
                                         "validity_end": None})]


async def test_a_zero_balance_is_a_reading(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    result = await service.report_typed(ALICE, line_id, "0")

    assert result.status is ReportStatus.STORED
    assert result.reading is not None and result.reading.balance == Money(0, "USD")


@pytest.mark.parametrize("typed", ["hello", "-1", "1.255", "20000 KHR", "", "$5000"])
async def test_an_unparseable_typed_balance_stores_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService, typed: str) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    result = await service.report_typed(ALICE, line_id, typed)

    assert result == ReportResult(ReportStatus.UNPARSEABLE, None)
    assert await stored_count(db) == 0
    assert await audit(db, "line.reading_reported") == []


# --- forwarded SMS ----------------------------------------------------------------------


async def test_a_forwarded_sms_stores_balance_data_and_validity(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    result = await service.report_sms(ALICE, line_id, SMART_SMS)

    # 17 Aug 2026 23:59:59 in Phnom Penh (UTC+7); clock is 25 Nov 2026: an expired line.
    assert result.status is ReportStatus.STORED
    assert result.reading == LineReading(
        source=ReadingSource.USER, read_at=clock.now(), balance=Money(52, "USD"),
        data_mb=1536, validity_end=datetime(2026, 8, 17, 16, 59, 59, tzinfo=UTC))
    async with db.read() as conn:
        assert await ReadingsRepository(conn).latest(line_id) == result.reading
    [(actor, subject, details)] = await audit(db, "line.reading_reported")
    assert (actor, subject) == (f"user:{ALICE}", str(line_id))
    assert details == {"via": "sms", "source": "user", "balance": "0.52 USD",
                       "data_mb": 1536, "validity_end": "2026-08-17T16:59:59+00:00"}


async def test_a_khmer_sms_is_read_in_phnom_penh_time(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    result = await service.report_sms(ALICE, line_id, KHMER_SMS)

    assert result.reading == LineReading(
        source=ReadingSource.USER, read_at=clock.now(), balance=Money(125, "USD"),
        data_mb=500, validity_end=datetime(2026, 12, 25, 16, 59, 59, tzinfo=UTC))


@pytest.mark.parametrize("text", ["hello", "Your code is 123456", "😀", "x" * 4000])
async def test_an_sms_that_is_not_a_balance_stores_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService, text: str) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    result = await service.report_sms(ALICE, line_id, text)

    assert result == ReportResult(ReportStatus.UNPARSEABLE, None)
    assert await stored_count(db) == 0


# --- only one's own lines ---------------------------------------------------------------


async def test_reports_for_someone_elses_line_store_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    bobs_line = await add_line(db, cipher, clock, BOB)
    await add_line(db, cipher, clock, ALICE, SMART)

    typed = await service.report_typed(ALICE, bobs_line, "1.25")
    sms = await service.report_sms(ALICE, bobs_line, SMART_SMS)
    unknown = await service.report_typed(ALICE, bobs_line + 1000, "1.25")

    assert typed == sms == unknown == ReportResult(ReportStatus.NOT_YOUR_LINE, None)
    assert await stored_count(db) == 0
    assert await audit(db, "line.reading_reported") == []


async def test_reports_for_an_unbound_line_store_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)
    async with db.write() as conn:
        await LinesRepository(conn, cipher).unbind(line_id, now=clock.now())

    result = await service.report_typed(ALICE, line_id, "1.25")

    assert result.status is ReportStatus.NOT_YOUR_LINE
    assert await stored_count(db) == 0


# --- warning thresholds -----------------------------------------------------------------


async def test_warning_thresholds_are_set_and_cleared(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    assert await service.set_warning_thresholds(ALICE, line_id, Money(50, "USD"), 200) is True
    async with db.read() as conn:
        line = await LinesRepository(conn, cipher).get(line_id)
    assert line is not None
    assert (line.warn_balance_minor, line.warn_data_mb) == (50, 200)

    assert await service.set_warning_thresholds(ALICE, line_id, None, 0) is True
    async with db.read() as conn:
        line = await LinesRepository(conn, cipher).get(line_id)
    assert line is not None
    assert (line.warn_balance_minor, line.warn_data_mb) == (None, 0)
    assert [d for _, _, d in await audit(db, "line.warnings_set")] == [
        {"balance": None, "data_mb": 0}, {"balance": "0.50 USD", "data_mb": 200}]


async def test_warning_thresholds_on_someone_elses_line_change_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    bobs_line = await add_line(db, cipher, clock, BOB)
    await service.set_warning_thresholds(BOB, bobs_line, Money(100, "USD"), 100)

    assert await service.set_warning_thresholds(ALICE, bobs_line, None, None) is False
    assert await service.set_warning_thresholds(ALICE, bobs_line + 1000, None, None) is False
    async with db.read() as conn:
        line = await LinesRepository(conn, cipher).get(bobs_line)
    assert line is not None
    assert (line.warn_balance_minor, line.warn_data_mb) == (100, 100)


async def test_warning_thresholds_refuse_other_currencies_and_negatives(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        service: ReadingsService) -> None:
    line_id = await add_line(db, cipher, clock, ALICE)

    with pytest.raises(MoneyError) as mismatch:
        await service.set_warning_thresholds(ALICE, line_id, Money(4000_00, "KHR"), None)
    with pytest.raises(MoneyError) as negative:
        await service.set_warning_thresholds(ALICE, line_id, Money(-1, "USD"), None)
    with pytest.raises(ValueError, match="negative"):
        await service.set_warning_thresholds(ALICE, line_id, None, -5)

    assert mismatch.value.reason is MoneyError.Reason.CURRENCY_MISMATCH
    assert negative.value.reason is MoneyError.Reason.NEGATIVE
    async with db.read() as conn:
        line = await LinesRepository(conn, cipher).get(line_id)
    assert line is not None
    assert (line.warn_balance_minor, line.warn_data_mb) == (None, None)
