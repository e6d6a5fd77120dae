"""Readings the user reports (a typed balance or a forwarded carrier SMS), the latest
reading of each of their lines, and their low-balance / low-data warning thresholds."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.domain.balance_sms import parse_balance_sms, parse_typed_balance
from bot.domain.money import Money, MoneyError
from bot.domain.readings import LineReading, ReadingSource
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.readings import ReadingsRepository

# Cambodian carriers date their SMS in Phnom Penh time, wherever the user is.
CARRIER_ZONE = ZoneInfo("Asia/Phnom_Penh")
# Prepaid airtime in Cambodia is sold and counted in US dollars.
LINE_CURRENCY = "USD"


class ReportStatus(enum.Enum):
    STORED = "stored"
    UNPARSEABLE = "unparseable"  # nothing stored: say what we understand
    NOT_YOUR_LINE = "not_your_line"  # nothing stored: unknown, unbound or someone else's


@dataclass(frozen=True)
class ReportResult:
    status: ReportStatus
    reading: LineReading | None = None  # the stored reading when STORED


def _owned(line: LineRecord | None, user_id: int) -> bool:
    return line is not None and line.owner_id == user_id and line.is_bound


class ReadingsService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, *,
                 carrier_zone: ZoneInfo = CARRIER_ZONE) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._zone = carrier_zone

    async def report_typed(self, user_id: int, line_id: int, text: str) -> ReportResult:
        """A balance the user typed ("1.25", "$3"): stored as read now, source USER."""
        balance = parse_typed_balance(text)
        if balance is None:
            return ReportResult(ReportStatus.UNPARSEABLE)
        now = self._clock.now()
        reading = LineReading(source=ReadingSource.USER, read_at=now, balance=balance)
        return await self._store(user_id, line_id, reading, via="typed")

    async def report_sms(self, user_id: int, line_id: int, text: str) -> ReportResult:
        """A forwarded carrier balance SMS: whatever it says (balance, data, validity) is
        stored as read now, source USER. The SMS text itself is not kept."""
        now = self._clock.now()
        parsed = parse_balance_sms(text, now=now, zone=self._zone)
        if parsed is None:
            return ReportResult(ReportStatus.UNPARSEABLE)
        reading = LineReading(source=ReadingSource.USER, read_at=now, balance=parsed.balance,
                              data_mb=parsed.data_mb, validity_end=parsed.validity_end)
        return await self._store(user_id, line_id, reading, via="sms")

    async def _store(self, user_id: int, line_id: int, reading: LineReading, *,
                     via: str) -> ReportResult:
        now = self._clock.now()
        async with self._db.write() as conn:
            # Locked so the reading cannot land on a line being unbound or moved meanwhile.
            line = await LinesRepository(conn, self._cipher).get(line_id, lock=True)
            if not _owned(line, user_id):
                return ReportResult(ReportStatus.NOT_YOUR_LINE)
            await ReadingsRepository(conn).add(line_id, reading, recorded_at=now)
            # The next sweep weighs it: warnings and threshold rules on what the user said.
            await LinesRepository(conn, self._cipher).set_next_check(line_id, now, now=now)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="line.reading_reported",
                subject=str(line_id), details={
                    "via": via, "source": reading.source.value,
                    "balance": reading.balance.plain() if reading.balance else None,
                    "data_mb": reading.data_mb,
                    "validity_end": (reading.validity_end.isoformat()
                                     if reading.validity_end else None)})
        return ReportResult(ReportStatus.STORED, reading)

    async def set_warning_thresholds(self, user_id: int, line_id: int, balance: Money | None,
                                     data_mb: int | None) -> bool:
        """Warn below ``balance`` / ``data_mb`` (None: no such warning).

        False when the line is not the user's. Raises ``MoneyError`` for a balance not in
        the line's currency (USD) and ``ValueError`` for a negative threshold.
        """
        if balance is not None:
            if balance.currency != LINE_CURRENCY:
                raise MoneyError(MoneyError.Reason.CURRENCY_MISMATCH,
                                 f"{balance.currency} vs {LINE_CURRENCY}")
            if balance.minor < 0:
                raise MoneyError(MoneyError.Reason.NEGATIVE)
        if data_mb is not None and data_mb < 0:
            raise ValueError("a data threshold cannot be negative")
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = LinesRepository(conn, self._cipher)
            line = await repo.get(line_id, lock=True)
            if not _owned(line, user_id):
                return False
            await repo.set_warnings(line_id, balance_minor=balance.minor if balance else None,
                                    data_mb=data_mb, now=now)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="line.warnings_set",
                subject=str(line_id), details={
                    "balance": balance.plain() if balance else None, "data_mb": data_mb})
        return True
