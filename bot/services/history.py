"""A user's history: charges, wallet movements (top-ups, holds, returns, refunds) and the
warnings they were sent, newest first, a page at a time, for one line or all of them; the
same charges and ledger entries as a CSV file; a month's summary, on demand or pushed on the
1st to those who asked for it.

Everything is read in one snapshot per request, and only the user's own rows (see
storage/history.py). The export is the ledger as it is: one row per ledger entry and per
charge, ISO dates with the user's offset, amounts as plain decimals in their currency's
minor-unit precision, UTF-8 with a BOM (spreadsheet programs then read Khmer names right).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.history import Month, decimal_amount, summaries_may_be_due, summary_due
from bot.domain.money import Money
from bot.domain.references import masked_reference
from bot.domain.rules import RuleStatus
from bot.domain.wallet import EntryKind
from bot.domain.watch import WarningKind, quiet_hours_end
from bot.services.notices import Notice, money_keys, queue
from bot.services.users import zone_and_quiet_hours
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.history import (
    ChargeRow,
    HistoryRepository,
    LineMonth,
    MovementRow,
    WarningRow,
)
from storage.lines import LineRecord, LinesRepository
from storage.notifications import NotificationsRepository
from storage.rules import RulesRepository
from storage.users import OptIn, UserRecord, UsersRepository

PAGE_SIZE = 8  # items per page: a page stays well under Telegram's 4,096 characters
MONTHLY_SUMMARY = "monthly_summary"  # the notification kind (handlers/history.py)
PUSH_BATCH = 500  # opted-in users looked at per read
CSV_COLUMNS = ("record", "id", "date", "kind", "state", "line", "amount", "currency",
               "charge_reference", "payment_reference")
RECORD_CHARGE, RECORD_LEDGER = "charge", "ledger"
# A cell a spreadsheet would run as a formula; only user-chosen text (a line's name) can.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# --- what the Telegram side is handed -------------------------------------------------------


@dataclass(frozen=True)
class LineChoice:
    id: int
    label: str  # its name, or its masked number (as /lines shows it)


@dataclass(frozen=True)
class ChargeItem:
    at: datetime
    line: str
    amount: Money
    state: ChargeState
    automatic: bool  # made by an auto-recharge rule
    reference: str  # ours, as the receipt shows it


@dataclass(frozen=True)
class MovementItem:
    at: datetime
    kind: EntryKind
    amount: Money  # negative when money left the wallet
    line: str | None  # the line of its charge (a hold or its return)
    reference: str | None  # its charge's reference, or the end of its payment's


@dataclass(frozen=True)
class WarningItem:
    at: datetime  # when it was sent
    line: str
    warning: WarningKind | None  # None: a kind this version does not know


HistoryItem = ChargeItem | MovementItem | WarningItem


@dataclass(frozen=True)
class HistoryPage:
    line: LineChoice | None  # None: all lines
    items: list[HistoryItem]  # newest first
    page: int  # from 0
    pages: int
    lines: list[LineChoice]  # the user's bound lines, to choose from


@dataclass(frozen=True)
class CsvExport:
    filename: str
    content: bytes
    rows: int  # without the header


@dataclass(frozen=True)
class LineSummary:
    line: LineChoice
    top_ups: int
    spent: Money
    capped: Money  # what its auto-recharge rules spent against their caps
    cap: Money | None  # the monthly caps of its rules that are on; None: no rule
    warnings: int


@dataclass(frozen=True)
class SummaryTotals:
    top_ups: int
    spent: Money
    capped: Money
    cap: Money | None
    warnings: int
    added: Money  # paid into the wallet


@dataclass(frozen=True)
class MonthlySummary:
    month: Month
    current: bool  # the month is not over yet
    lines: list[LineSummary]
    total: SummaryTotals
    push: bool  # opted in to the push on the 1st
    earliest: bool  # no month before this one to show (the user was not here yet)


# --- the push ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class MonthlySummaryReady(Notice):
    """The month's totals, pushed on the 1st to those who asked; the lines' figures are a
    button away (the summary itself, read again). The amounts share one currency key."""

    KIND: ClassVar[str] = MONTHLY_SUMMARY
    month: str  # YYYY-MM
    top_ups: int
    spent: Money = field(metadata=money_keys("spent_minor", "currency"))
    capped: Money = field(metadata=money_keys("capped_minor", "currency"))
    cap: Money | None = field(metadata=money_keys("cap_minor", "currency"))
    warnings: int
    added: Money = field(metadata=money_keys("added_minor", "currency"))
    lines: int


def summary_key(user_id: int, month: Month) -> str:
    """The outbox key of a month's push: one per user and month, however often asked."""
    return f"{MONTHLY_SUMMARY}:{user_id}:{month.key}"


class HistoryService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, *,
                 zone_for: Callable[[int], Awaitable[ZoneInfo]], default_zone: ZoneInfo,
                 currency: str = "USD") -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._zone_for = zone_for
        self._default_zone = default_zone
        self.currency = currency  # the wallet's; charges are priced in it too

    # --- the history ---------------------------------------------------------------------

    async def page(self, user_id: int, line_id: int | None, page: int = 0,
                   *, size: int = PAGE_SIZE) -> HistoryPage | None:
        """One page, newest first; None when ``line_id`` is not a line bound to the user."""
        async with self._db.read() as conn:
            lines = LinesRepository(conn, self._cipher)
            bound = await lines.for_owner(user_id)
            scope = _scope(bound, line_id)
            if line_id is not None and scope is None:
                return None
            repo = HistoryRepository(conn, self._cipher)
            total = await repo.counts(user_id, line_id)
            pages = max(1, -(-total // size))
            page = min(max(page, 0), pages - 1)
            # The newest (page + 1) * size of each source hold the page's items.
            need = (page + 1) * size
            charges = await repo.charges(user_id, line_id, limit=need)
            movements = await repo.movements(user_id, line_id, limit=need)
            warnings = await repo.warnings(user_id, line_id, limit=need)
            labels = await _labels(lines, user_id, bound, _line_ids(charges, movements,
                                                                   warnings))
        items = sorted(_items(charges, movements, warnings, labels), key=_newest,
                       reverse=True)
        return HistoryPage(line=scope, items=items[page * size:need], page=page, pages=pages,
                           lines=[_choice(line) for line in bound])

    async def export(self, user_id: int, line_id: int | None) -> CsvExport | None:
        """Every charge and ledger entry (of one line: its charges' entries) as CSV, oldest
        first; None when ``line_id`` is not a line bound to the user."""
        zone = await self._zone_for(user_id)
        async with self._db.read() as conn:
            lines = LinesRepository(conn, self._cipher)
            bound = await lines.for_owner(user_id)
            if line_id is not None and _scope(bound, line_id) is None:
                return None
            repo = HistoryRepository(conn, self._cipher)
            charges = await repo.charges(user_id, line_id, newest_first=False)
            movements = await repo.movements(user_id, line_id, newest_first=False)
            labels = await _labels(lines, user_id, bound, _line_ids(charges, movements, []))
        records = sorted(
            [(c.created_at, 0, c.id, _charge_cells(c, labels, zone)) for c in charges]
            + [(m.created_at, 1, m.id, _movement_cells(m, labels, zone)) for m in movements])
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(cells for *_order, cells in records)
        day = self._clock.now().astimezone(zone).date().isoformat()
        scope = "all-lines" if line_id is None else f"line-{line_id}"
        return CsvExport(filename=f"history-{scope}-{day}.csv",
                         content=out.getvalue().encode("utf-8-sig"), rows=len(records))

    # --- the month -----------------------------------------------------------------------

    async def month(self, user_id: int, month: Month | None = None) -> MonthlySummary | None:
        """A month's figures per line and in total (this month, so far, by default); None
        for a month that has not begun."""
        zone = await self._zone_for(user_id)
        current = Month.of(self._clock.now(), zone)
        month = month or current
        if month > current:
            return None
        async with self._db.read() as conn:
            summary = await self._summary(conn, user_id, month, zone, current=current)
            push = await UsersRepository(conn).opted_in(user_id, OptIn.MONTHLY_SUMMARY)
        return dataclasses.replace(summary, push=push)

    async def set_push(self, user_id: int, on: bool) -> bool:
        """Opts in to (or out of) the summary on the 1st (audited); the new setting."""
        now = self._clock.now()
        async with self._db.write() as conn:
            users = UsersRepository(conn)
            await users.ensure(user_id, language=None, now=now)
            await users.set_opted_in(user_id, OptIn.MONTHLY_SUMMARY, on, now=now)
            await AuditRepository(conn).record(at=now, actor=f"user:{user_id}",
                                               action="user.monthly_summary",
                                               details={"on": on})
        return on

    async def queue_monthly_summaries(self, now: datetime | None = None) -> int:
        """Queues last month's summary for each opted-in user whose 1st it is (from 09:00,
        their time; after their quiet hours); how many were queued. Safe to run any time
        and on several workers: one summary per user and month (the outbox key)."""
        now = now or self._clock.now()
        if not summaries_may_be_due(now):
            return 0
        queued, after = 0, 0
        while True:
            async with self._db.read() as conn:
                users = UsersRepository(conn)
                opted = await users.opted_in_ids(OptIn.MONTHLY_SUMMARY, after=after,
                                                 limit=PUSH_BATCH)
                owners = await users.get_many(opted)
                due = {user_id: month for user_id in opted
                       if (month := self._due(owners.get(user_id), now)) is not None}
                done = await HistoryRepository(conn, self._cipher).queued(
                    [summary_key(user_id, month) for user_id, month in due.items()])
            for user_id, month in due.items():
                if summary_key(user_id, month) not in done:
                    queued += await self._push(owners[user_id], month, now)
            if len(opted) < PUSH_BATCH:
                return queued
            after = opted[-1]

    def _due(self, owner: UserRecord | None, now: datetime) -> Month | None:
        if owner is None:
            return None
        return summary_due(now.astimezone(zone_and_quiet_hours(owner, self._default_zone)[0]))

    async def _push(self, owner: UserRecord, month: Month, now: datetime) -> bool:
        zone, quiet = zone_and_quiet_hours(owner, self._default_zone)
        # Read outside the write, which then only queues: a writer holds SQLite alone.
        async with self._db.read() as conn:
            summary = await self._summary(conn, owner.id, month, zone,
                                          current=Month.of(now, zone))
        total = summary.total
        async with self._db.write() as conn:
            return await queue(
                NotificationsRepository(conn),
                MonthlySummaryReady(month=month.key, top_ups=total.top_ups, spent=total.spent,
                                    capped=total.capped, cap=total.cap,
                                    warnings=total.warnings, added=total.added,
                                    lines=len(summary.lines)),
                user_id=owner.id, chat_id=owner.id, dedupe_key=summary_key(owner.id, month),
                now=now, send_at=quiet_hours_end(now, quiet, zone) if quiet else now)

    async def _summary(self, conn: AsyncConnection, user_id: int, month: Month,
                       zone: ZoneInfo, *, current: Month) -> MonthlySummary:
        start, end = month.bounds(zone)
        repo = HistoryRepository(conn, self._cipher)
        lines = LinesRepository(conn, self._cipher)
        figures = await repo.month_by_line(user_id, self.currency, start, end)
        caps: dict[int, int] = {}
        for rule in await RulesRepository(conn).for_owner(user_id):
            if rule.status is RuleStatus.ACTIVE and rule.currency == self.currency:
                caps[rule.line_id] = caps.get(rule.line_id, 0) + rule.monthly_cap.minor
        bound = await lines.for_owner(user_id)
        shown = sorted({line.id for line in bound} | figures.keys() | caps.keys())
        labels = await _labels(lines, user_id, bound, shown)
        per_line = [self._line_summary(LineChoice(line_id, labels.get(line_id, "?")),
                                       figures.get(line_id, LineMonth()), caps.get(line_id))
                    for line_id in shown]
        joined = await UsersRepository(conn).get(user_id)
        return MonthlySummary(
            month=month, current=month == current, lines=per_line,
            total=self._total(per_line, await repo.credited(user_id, self.currency, start,
                                                            end)),
            push=False,
            earliest=joined is None or Month.of(joined.created_at, zone) >= month)

    def _line_summary(self, line: LineChoice, figures: LineMonth,
                      cap_minor: int | None) -> LineSummary:
        money = self._money
        return LineSummary(line=line, top_ups=figures.top_ups, spent=money(figures.spent_minor),
                           capped=money(figures.capped_minor),
                           cap=money(cap_minor) if cap_minor is not None else None,
                           warnings=figures.warnings)

    def _total(self, lines: list[LineSummary], added: Money) -> SummaryTotals:
        caps = [line.cap for line in lines if line.cap is not None]
        return SummaryTotals(
            top_ups=sum(line.top_ups for line in lines),
            spent=self._money(sum(line.spent.minor for line in lines)),
            capped=self._money(sum(line.capped.minor for line in lines)),
            cap=self._money(sum(cap.minor for cap in caps)) if caps else None,
            warnings=sum(line.warnings for line in lines), added=added)

    def _money(self, minor: int) -> Money:
        return Money(minor, self.currency)


# --- helpers -------------------------------------------------------------------------------


def _choice(line: LineRecord) -> LineChoice:
    return LineChoice(line.id, line.label)


def _scope(bound: list[LineRecord], line_id: int | None) -> LineChoice | None:
    found = next((line for line in bound if line.id == line_id), None)
    return _choice(found) if found is not None else None


def _line_ids(charges: Iterable[ChargeRow], movements: Iterable[MovementRow],
              warnings: Iterable[WarningRow]) -> set[int]:
    ids = {charge.line_id for charge in charges}
    ids |= {m.line_id for m in movements if m.line_id is not None}
    return ids | {w.line_id for w in warnings if w.line_id is not None}


async def _labels(lines: LinesRepository, user_id: int, bound: list[LineRecord],
                  wanted: Iterable[int]) -> dict[int, str]:
    """How each line reads: as /lines shows it while it is the user's; a line that has
    moved to someone else by its masked number only (the new owner's name is theirs)."""
    labels = {line.id: line.label for line in bound}
    for line_id in set(wanted) - labels.keys():
        line = await lines.get(line_id)
        if line is not None:
            labels[line_id] = line.label_seen_by(user_id)
    return labels


def _items(charges: list[ChargeRow], movements: list[MovementRow], warnings: list[WarningRow],
           labels: dict[int, str]) -> list[HistoryItem]:
    items: list[HistoryItem] = [
        ChargeItem(at=c.created_at, line=labels.get(c.line_id, "?"), amount=c.amount,
                   state=c.state, automatic=c.rule_id is not None, reference=c.reference)
        for c in charges]
    items += [MovementItem(at=m.created_at, kind=m.kind, amount=m.amount,
                           line=labels.get(m.line_id, "?") if m.line_id is not None else None,
                           reference=_movement_reference(m)) for m in movements]
    items += [WarningItem(at=w.sent_at, warning=w.warning, line=_warned_line(w, labels))
              for w in warnings]
    return items


def _warned_line(warning: WarningRow, labels: dict[int, str]) -> str:
    """The line as it reads now; as the warning named it when the line is gone."""
    named = warning.line_label or "?"
    return labels.get(warning.line_id, named) if warning.line_id is not None else named


_RANK = {ChargeItem: 0, MovementItem: 1, WarningItem: 2}


def _newest(item: HistoryItem) -> tuple[datetime, int]:
    # A charge and its hold share a moment: the hold reads as after it. Items of one source
    # at one moment keep the order storage gave them (newest id first): the sort is stable.
    return item.at, _RANK[type(item)]


def _movement_reference(movement: MovementRow) -> str | None:
    if movement.charge_reference is not None:
        return movement.charge_reference
    if movement.payment_reference is not None:
        # Only the end of a payment's reference, as its receipt shows it.
        return masked_reference(movement.payment_reference)
    return None


def _charge_cells(charge: ChargeRow, labels: dict[int, str], zone: ZoneInfo) -> list[str]:
    return [RECORD_CHARGE, str(charge.id), charge.created_at.astimezone(zone).isoformat(),
            charge.cause, charge.state.value, _cell(labels.get(charge.line_id, "")),
            decimal_amount(charge.amount), charge.amount.currency, charge.reference, ""]


def _movement_cells(movement: MovementRow, labels: dict[int, str],
                    zone: ZoneInfo) -> list[str]:
    line = labels.get(movement.line_id, "") if movement.line_id is not None else ""
    payment = movement.payment_reference
    return [RECORD_LEDGER, str(movement.id), movement.created_at.astimezone(zone).isoformat(),
            movement.kind.value, "", _cell(line), decimal_amount(movement.amount),
            movement.amount.currency, movement.charge_reference or "",
            masked_reference(payment) if payment is not None else ""]


def _cell(text: str) -> str:
    """User-chosen text that a spreadsheet would take for a formula, quoted as text."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
