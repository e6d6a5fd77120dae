"""What a user's history reads: their charges, ledger entries and sent warnings, newest
first, for one line or all of them; a month's figures.

Only the user's own rows: charges and ledger entries by their ``user_id``, warnings by the
outbox row's, so the charges of a line's previous owner never show. A line's ledger entries
are those of its charges (wallet payments and refunds belong to no line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.wallet import CREDIT_KIND_OF_SOURCE, EntryKind
from bot.domain.watch import WarningKind
from storage.charges import CAP_STATES
from storage.crypto import FieldCipher
from storage.notifications import NotificationStatus
from storage.tables import charges, ledger_entries, notifications, wallet_payments

WARNING_KIND = "line_warning"  # bot.services.scheduler.WARNING (storage imports no service)
# The external ids of payments start with their source (a Telegram charge id has none).
_PAYMENT_PREFIXES = ("operator:", "khqr:")
_CREDIT_KINDS = [kind.value for kind in CREDIT_KIND_OF_SOURCE.values()]


@dataclass(frozen=True)
class ChargeRow:
    id: int
    line_id: int
    rule_id: int | None
    cause: str
    amount: Money
    state: ChargeState
    reference: str
    created_at: datetime


@dataclass(frozen=True)
class MovementRow:
    """A ledger entry, with the charge or payment it belongs to."""

    id: int
    kind: EntryKind
    amount: Money  # signed: + credit, - debit
    created_at: datetime
    charge_id: int | None
    charge_reference: str | None
    line_id: int | None  # the line of its charge
    payment_id: int | None
    payment_reference: str | None  # decrypted, without its source prefix


@dataclass(frozen=True)
class WarningRow:
    id: int
    sent_at: datetime
    line_id: int | None
    line_label: str | None  # as the warning named the line when it was sent
    warning: WarningKind | None  # None: a kind this version does not know


@dataclass(frozen=True)
class LineMonth:
    """One line's figures in a month (in one currency)."""

    top_ups: int = 0  # charges that succeeded
    spent_minor: int = 0  # what they cost
    capped_minor: int = 0  # rule charges that count against the rules' monthly caps
    warnings: int = 0


def _sent_warnings(user_id: int) -> tuple[ColumnElement[bool], ...]:
    """The user's warnings that went out. A warning goes to the user's own chat, so the
    chat names it too: the outbox is indexed by chat and status, not by user."""
    return (notifications.c.chat_id == user_id, notifications.c.user_id == user_id,
            notifications.c.status == NotificationStatus.SENT.value,
            notifications.c.kind == WARNING_KIND, notifications.c.sent_at.is_not(None))


def _warning_line() -> ColumnElement[int]:
    """The line a queued warning is about (its LineShown's ``line_id``), read in SQL."""
    return cast(ColumnElement[int], notifications.c.params["line_id"].as_integer())


class HistoryRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    # --- the three sources, newest first ------------------------------------------------

    def _charges(self, user_id: int, line_id: int | None) -> Select[Any]:
        query = select(charges).where(charges.c.user_id == user_id)
        return query.where(charges.c.line_id == line_id) if line_id is not None else query

    def _movements(self, user_id: int, line_id: int | None) -> Select[Any]:
        query = (
            select(ledger_entries, charges.c.reference.label("charge_reference"),
                   charges.c.line_id.label("charge_line_id"),
                   wallet_payments.c.external_ref_enc)
            .select_from(ledger_entries
                         .outerjoin(charges, charges.c.id == ledger_entries.c.charge_id)
                         .outerjoin(wallet_payments,
                                    wallet_payments.c.id == ledger_entries.c.payment_id))
            .where(ledger_entries.c.user_id == user_id))
        return query.where(charges.c.line_id == line_id) if line_id is not None else query

    def _warnings(self, user_id: int, line_id: int | None) -> Select[Any]:
        query = select(notifications.c.id, notifications.c.sent_at,
                       notifications.c.params).where(*_sent_warnings(user_id))
        return query.where(_warning_line() == line_id) if line_id is not None else query

    async def counts(self, user_id: int, line_id: int | None) -> int:
        """How many charges, ledger entries and sent warnings there are altogether."""
        total = 0
        for query in (self._charges(user_id, line_id), self._movements(user_id, line_id),
                      self._warnings(user_id, line_id)):
            total += int((await self._conn.execute(
                select(func.count()).select_from(query.subquery()))).scalar_one())
        return total

    async def charges(self, user_id: int, line_id: int | None = None, *,
                      limit: int | None = None, newest_first: bool = True) -> list[ChargeRow]:
        order = ((charges.c.created_at.desc(), charges.c.id.desc()) if newest_first
                 else (charges.c.created_at, charges.c.id))
        rows = await self._conn.execute(
            self._charges(user_id, line_id).order_by(*order).limit(limit))
        return [ChargeRow(id=r["id"], line_id=r["line_id"], rule_id=r["rule_id"],
                          cause=r["cause"], amount=Money(r["amount_minor"], r["currency"]),
                          state=ChargeState(r["state"]), reference=r["reference"],
                          created_at=r["created_at"]) for r in rows.mappings()]

    async def movements(self, user_id: int, line_id: int | None = None, *,
                        limit: int | None = None,
                        newest_first: bool = True) -> list[MovementRow]:
        entry = ledger_entries.c
        order = ((entry.created_at.desc(), entry.id.desc()) if newest_first
                 else (entry.created_at, entry.id))
        rows = await self._conn.execute(
            self._movements(user_id, line_id).order_by(*order).limit(limit))
        return [MovementRow(
            id=r["id"], kind=EntryKind(r["kind"]),
            amount=Money(r["amount_minor"], r["currency"]), created_at=r["created_at"],
            charge_id=r["charge_id"], charge_reference=r["charge_reference"],
            line_id=r["charge_line_id"], payment_id=r["payment_id"],
            payment_reference=(self._payment_reference(r["external_ref_enc"])
                               if r["external_ref_enc"] else None))
            for r in rows.mappings()]

    async def warnings(self, user_id: int, line_id: int | None = None, *,
                       limit: int | None = None) -> list[WarningRow]:
        rows = await self._conn.execute(self._warnings(user_id, line_id).order_by(
            notifications.c.sent_at.desc(), notifications.c.id.desc()).limit(limit))
        return [_warning(r["id"], r["sent_at"], r["params"]) for r in rows.mappings()]

    def _payment_reference(self, encrypted: str) -> str:
        reference = self._cipher.decrypt(encrypted)
        for prefix in _PAYMENT_PREFIXES:
            reference = reference.removeprefix(prefix)
        return reference

    # --- a month ------------------------------------------------------------------------

    async def month_by_line(self, user_id: int, currency: str, start: datetime,
                            end: datetime) -> dict[int, LineMonth]:
        """Each line's top-ups, spending against its rules' caps and warnings in
        [start, end); charges by when they were made, as the cap counts them."""
        figures: dict[int, dict[str, int]] = {}
        in_month = (charges.c.user_id == user_id, charges.c.currency == currency,
                    charges.c.created_at >= start, charges.c.created_at < end)
        succeeded = await self._conn.execute(
            select(charges.c.line_id, func.count(), func.sum(charges.c.amount_minor))
            .where(*in_month, charges.c.state == ChargeState.SUCCEEDED.value)
            .group_by(charges.c.line_id))
        for line_id, count, total in succeeded.all():
            figures.setdefault(line_id, {}).update(top_ups=int(count), spent_minor=int(total))
        capped = await self._conn.execute(
            select(charges.c.line_id, func.sum(charges.c.amount_minor))
            .where(*in_month, charges.c.rule_id.is_not(None),
                   charges.c.state.in_([state.value for state in CAP_STATES]))
            .group_by(charges.c.line_id))
        for line_id, total in capped.all():
            figures.setdefault(line_id, {})["capped_minor"] = int(total)
        line = _warning_line()
        warned = await self._conn.execute(
            select(line, func.count())
            .where(*_sent_warnings(user_id), notifications.c.sent_at >= start,
                   notifications.c.sent_at < end, line.is_not(None))
            .group_by(line))
        for line_id, count in warned.all():
            figures.setdefault(int(line_id), {})["warnings"] = int(count)
        return {line_id: LineMonth(**values) for line_id, values in figures.items()}

    async def credited(self, user_id: int, currency: str, start: datetime,
                       end: datetime) -> Money:
        """What payments and operator credits added to the wallet in [start, end)."""
        total = (await self._conn.execute(
            select(func.coalesce(func.sum(ledger_entries.c.amount_minor), 0)).where(
                ledger_entries.c.user_id == user_id, ledger_entries.c.currency == currency,
                ledger_entries.c.kind.in_(_CREDIT_KINDS),
                ledger_entries.c.created_at >= start, ledger_entries.c.created_at < end))
        ).scalar_one()
        return Money(int(total), currency)

    async def queued(self, dedupe_keys: list[str]) -> set[str]:
        """Which of these outbox keys were queued already (whatever became of them)."""
        if not dedupe_keys:
            return set()
        rows = await self._conn.execute(select(notifications.c.dedupe_key).where(
            notifications.c.dedupe_key.in_(dedupe_keys)))
        return set(rows.scalars())


def _warning(row_id: int, sent_at: datetime, params: dict[str, Any]) -> WarningRow:
    line_id, label, kind = params.get("line_id"), params.get("line"), params.get("warning")
    known = {warning.value for warning in WarningKind}
    return WarningRow(id=row_id, sent_at=sent_at,
                      line_id=line_id if isinstance(line_id, int) else None,
                      line_label=label if isinstance(label, str) else None,
                      warning=WarningKind(kind) if kind in known else None)
