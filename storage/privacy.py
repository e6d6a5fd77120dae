"""Forgetting a user (/forget): what stands in the way, what is stored, and the deletion.

Every table that can hold something of a user is handled here, one decision each:

- deleted: their lines (unless charges reference them), readings, rules, support requests
  and messages, outbox messages (but copies of an offer, which only the broadcast's tally
  reads and which hold the offer's text), conversation drafts and states, SMS codes that no
  longer count against a number;
- scrubbed: a line charges still reference becomes a tombstone (no number, blind index,
  ICCID, name or plan; unbound); codes that still count against a number (sent in the last
  hour, or a lockout still running) lose their user; a KHQR loses the payer's account; the
  user's row loses every setting; audit rows about them lose the details that could name
  them (labels, masked numbers, settings);
- kept as they are: charges (but the line's balance after them), holds, ledger entries,
  payments, invoices, disputes, paid KHQRs' references, reconciliation: amounts, dates and
  references under the user's id, which the accounts need.

The simulated carrier's and eSIM provider's tables stand for the providers' own systems (a
real provider keeps its records on its side) and are not touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.broadcasts import OFFER_KIND
from bot.domain.charges import OPEN_STATES
from bot.domain.money import Money
from bot.domain.phone import PhoneError, parse_cambodian_mobile
from bot.domain.privacy import Erased, Obstacles, Stored, number_shapes, scrub_details
from storage.crypto import FieldCipher
from storage.promotions import PromotionsRepository
from storage.tables import (
    audit_log,
    charges,
    holds,
    khqr_invoices,
    ledger_entries,
    line_readings,
    lines,
    notifications,
    otp_challenges,
    payment_disputes,
    ptb_chat_data,
    ptb_conversations,
    ptb_user_data,
    recharge_rules,
    support_messages,
    support_tickets,
    users,
    wallet_payments,
)
from storage.wallet import HoldStatus

_OPEN_CHARGE = charges.c.state.in_([state.value for state in OPEN_STATES])


@dataclass(frozen=True)
class _Line:
    id: int
    kind: str
    phone_enc: str | None
    iccid_enc: str | None
    nickname: str | None


class PrivacyRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    async def _count(self, table: Any, *where: ColumnElement[bool]) -> int:
        return int((await self._conn.execute(
            select(func.count()).select_from(table).where(*where))).scalar_one())

    # --- the user --------------------------------------------------------------------------

    async def forgotten_at(self, user_id: int, *,
                           lock: bool = False) -> tuple[bool, datetime | None]:
        """(the user has a row, when they were last forgotten); ``lock`` holds the row (a
        second forget waits for the first)."""
        query = select(users.c.forgotten_at).where(users.c.id == user_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return (row is not None, row.forgotten_at if row is not None else None)

    async def _line_ids(self, user_id: int, *, lock: bool = False) -> list[int]:
        query = select(lines.c.id).where(lines.c.owner_id == user_id).order_by(lines.c.id)
        if lock:
            query = query.with_for_update()
        return list((await self._conn.execute(query)).scalars())

    async def _rule_ids(self, user_id: int, *, lock: bool = False) -> list[int]:
        query = (select(recharge_rules.c.id).where(recharge_rules.c.owner_id == user_id)
                 .order_by(recharge_rules.c.id))
        if lock:
            query = query.with_for_update()
        return list((await self._conn.execute(query)).scalars())

    # --- what stands in the way ------------------------------------------------------------

    async def obstacles(self, user_id: int, *, khqr_grace_minutes: int,
                        lock: bool = False) -> Obstacles:
        """Money the user still has or may still get, and charges not settled. ``lock``
        (in the forgetting transaction) holds their lines and rules first, so no charge is
        created on them meanwhile (a rule's charge locks the rule)."""
        line_ids = await self._line_ids(user_id, lock=lock)
        await self._rule_ids(user_id, lock=lock)
        balances = (await self._conn.execute(
            select(ledger_entries.c.currency, func.sum(ledger_entries.c.amount_minor))
            .where(ledger_entries.c.user_id == user_id)
            .group_by(ledger_entries.c.currency).order_by(ledger_entries.c.currency))).all()
        held = (await self._conn.execute(
            select(holds.c.currency, func.sum(holds.c.amount_minor))
            .where(holds.c.user_id == user_id, holds.c.status == HoldStatus.OPEN.value)
            .group_by(holds.c.currency).order_by(holds.c.currency))).all()
        on_lines = charges.c.line_id.in_(line_ids) if line_ids else false()
        open_charges = await self._count(charges, _OPEN_CHARGE,
                                         or_(charges.c.user_id == user_id, on_lines))
        last_expiry = (await self._conn.execute(
            select(func.max(khqr_invoices.c.expires_at)).where(
                khqr_invoices.c.user_id == user_id,
                khqr_invoices.c.next_check_at.is_not(None)))).scalar_one()
        disputes = await self._count(payment_disputes, payment_disputes.c.user_id == user_id,
                                     payment_disputes.c.status == "held")
        return Obstacles(
            balances=tuple(Money(int(total), currency) for currency, total in balances
                           if int(total or 0) != 0),
            held=tuple(Money(int(total), currency) for currency, total in held
                       if int(total or 0) != 0),
            charges_open=open_charges,
            khqr_checked_until=(last_expiry + timedelta(minutes=khqr_grace_minutes)
                                if last_expiry is not None else None),
            disputes_held=disputes)

    # --- what is stored --------------------------------------------------------------------

    async def stored(self, user_id: int) -> Stored:
        line_ids = await self._line_ids(user_id)
        tickets = select(support_tickets.c.id).where(support_tickets.c.user_id == user_id)
        return Stored(
            lines=len(line_ids),
            readings=(await self._count(line_readings, line_readings.c.line_id.in_(line_ids))
                      if line_ids else 0),
            rules=await self._count(recharge_rules, recharge_rules.c.owner_id == user_id),
            tickets=await self._count(support_tickets, support_tickets.c.user_id == user_id),
            support_messages=await self._count(support_messages,
                                               support_messages.c.ticket_id.in_(tickets)),
            charges=await self._count(charges, charges.c.user_id == user_id),
            payments=await self._count(wallet_payments, wallet_payments.c.user_id == user_id),
            movements=await self._count(ledger_entries, ledger_entries.c.user_id == user_id))

    # --- the audit log ---------------------------------------------------------------------

    async def _audit_subjects(self, user_id: int) -> list[ColumnElement[bool]]:
        """Audit rows about the user's things: their lines, rules, codes, requests, charges
        and payments (subjects are ids, or ``kind:<id>``)."""
        line_ids = await self._line_ids(user_id)
        rule_ids = await self._rule_ids(user_id)
        code_ids = list((await self._conn.execute(select(otp_challenges.c.id).where(
            otp_challenges.c.user_id == user_id))).scalars())
        ticket_ids = list((await self._conn.execute(select(support_tickets.c.id).where(
            support_tickets.c.user_id == user_id))).scalars())
        conditions = []
        for prefix, ids in (("line.", line_ids), ("rule.", rule_ids), ("otp.", code_ids)):
            if ids:
                conditions.append(and_(audit_log.c.action.startswith(prefix),
                                       audit_log.c.subject.in_([str(i) for i in ids])))
        if ticket_ids:
            conditions.append(audit_log.c.subject.in_([f"ticket:{i}" for i in ticket_ids]))
        return conditions

    def _names_user(self, user_id: int) -> ColumnElement[bool]:
        if self._conn.dialect.name == "postgresql":
            mentioned = audit_log.c.details["user_id"].as_string() == str(user_id)
        else:
            mentioned = audit_log.c.details["user_id"].as_integer() == user_id
        return or_(audit_log.c.actor == f"user:{user_id}", mentioned)

    async def audit_about(self, user_id: int, *, after: int = 0,
                          up_to: int | None = None) -> tuple[list[int], int]:
        """The ids of the audit rows about the user with ``after`` < id <= ``up_to`` (None:
        every later one), and the newest id there is (so a later pass reads only the rows
        written since)."""
        newest = int((await self._conn.execute(
            select(func.coalesce(func.max(audit_log.c.id), 0)))).scalar_one())
        window = [audit_log.c.id > after]
        if up_to is not None:
            window.append(audit_log.c.id <= up_to)
        about = or_(self._names_user(user_id), *await self._audit_subjects(user_id))
        ids = list((await self._conn.execute(
            select(audit_log.c.id).where(*window, about).order_by(audit_log.c.id))).scalars())
        return ids, newest

    async def _scrub_audit(self, ids: Iterable[int], needles: Sequence[str]) -> int:
        wanted = sorted(set(ids))
        scrubbed = 0
        for start in range(0, len(wanted), 500):
            rows = (await self._conn.execute(
                select(audit_log.c.id, audit_log.c.details)
                .where(audit_log.c.id.in_(wanted[start:start + 500])))).all()
            for row_id, details in rows:
                if not isinstance(details, dict):
                    continue
                clean = scrub_details(details, needles)
                if clean != details:
                    await self._conn.execute(update(audit_log).where(audit_log.c.id == row_id)
                                             .values(details=clean))
                    scrubbed += 1
        return scrubbed

    # --- forgetting ------------------------------------------------------------------------

    async def _lines(self, user_id: int) -> list[_Line]:
        rows = await self._conn.execute(
            select(lines.c.id, lines.c.kind, lines.c.phone_enc, lines.c.iccid_enc,
                   lines.c.nickname).where(lines.c.owner_id == user_id).order_by(lines.c.id))
        return [_Line(*row) for row in rows.all()]

    def _needles(self, found: list[_Line]) -> list[str]:
        """Every way the user's lines could be written down: numbers, ICCIDs, names."""
        needles: list[str] = []
        for line in found:
            if line.phone_enc:
                e164 = self._cipher.decrypt(line.phone_enc)
                try:
                    needles += number_shapes(parse_cambodian_mobile(e164))
                except PhoneError:
                    needles.append(e164)
            if line.iccid_enc:
                needles.append(self._cipher.decrypt(line.iccid_enc))
            if line.nickname:
                needles.append(line.nickname)
        return [needle for needle in needles if len(needle) >= 3]

    async def forget(self, user_id: int, *, now: datetime, codes_count_since: datetime,
                     audit_ids: Iterable[int], audit_seen_up_to: int) -> Erased:
        """Deletes and scrubs everything of the user but what the ledger keeps (see the
        module's docstring). Run it in the write transaction that checked ``obstacles``
        (with ``lock``): nothing may be open. ``audit_ids`` are the audit rows about the
        user up to ``audit_seen_up_to``, found beforehand (``audit_about``) so the whole log
        is not read inside this transaction; later rows are looked for here."""
        found = await self._lines(user_id)
        needles = self._needles(found)
        line_ids = [line.id for line in found]
        later_audit, _ = await self.audit_about(user_id, after=audit_seen_up_to)
        audit_rows = [*audit_ids, *later_audit]
        kept = await self.stored(user_id)

        # Rules: the charges they caused are kept, without them.
        rule_ids = await self._rule_ids(user_id)
        if rule_ids:
            await self._conn.execute(update(charges).where(charges.c.rule_id.in_(rule_ids))
                                     .values(rule_id=None))
        rules_deleted = (await self._conn.execute(delete(recharge_rules).where(
            recharge_rules.c.owner_id == user_id))).rowcount or 0

        # Lines: their readings go; a line charges reference stays as a tombstone.
        readings = 0
        deleted = scrubbed = 0
        if line_ids:
            readings = (await self._conn.execute(delete(line_readings).where(
                line_readings.c.line_id.in_(line_ids)))).rowcount or 0
            charged = set((await self._conn.execute(
                select(charges.c.line_id).where(charges.c.line_id.in_(line_ids))
                .distinct())).scalars())
            tombstones = [line_id for line_id in line_ids if line_id in charged]
            gone = [line_id for line_id in line_ids if line_id not in charged]
            if gone:
                deleted = (await self._conn.execute(
                    delete(lines).where(lines.c.id.in_(gone)))).rowcount or 0
            if tombstones:
                scrubbed = (await self._conn.execute(
                    update(lines).where(lines.c.id.in_(tombstones)).values(
                        phone_enc=None, phone_index=None, iccid_enc=None, iccid_index=None,
                        nickname=None, plan_product_id=None, warn_balance_minor=None,
                        warn_data_mb=None, verified_at=None, next_check_at=None,
                        check_claimed_until=None, check_error=None, check_failures=0,
                        check_failure_told=False, balance_low=False, data_low=False,
                        unbound_at=func.coalesce(lines.c.unbound_at, now),
                        forgotten_at=now, updated_at=now))).rowcount or 0
        # What the provider said the line had after a top-up is the line's, not the money's.
        await self._conn.execute(update(charges).where(charges.c.user_id == user_id).values(
            balance_after_minor=None, validity_end_after=None))

        # SMS codes: the lockout and the hourly cap belong to the number, so a code that
        # still counts stays, naming nobody; the others go (and so do codes of users
        # forgotten before that no longer count).
        counts = or_(otp_challenges.c.created_at > codes_count_since,
                     and_(otp_challenges.c.locked_until.is_not(None),
                          otp_challenges.c.locked_until > now))
        codes_deleted = (await self._conn.execute(delete(otp_challenges).where(
            otp_challenges.c.user_id == user_id, ~counts))).rowcount or 0
        codes_detached = (await self._conn.execute(
            update(otp_challenges).where(otp_challenges.c.user_id == user_id)
            .values(user_id=None, subject=None))).rowcount or 0
        await self._conn.execute(delete(otp_challenges).where(
            otp_challenges.c.user_id.is_(None), ~counts))

        # Support requests and their messages (ON DELETE CASCADE).
        tickets = select(support_tickets.c.id).where(support_tickets.c.user_id == user_id)
        messages = await self._count(support_messages, support_messages.c.ticket_id.in_(tickets))
        tickets_deleted = (await self._conn.execute(delete(support_tickets).where(
            support_tickets.c.user_id == user_id))).rowcount or 0

        # The outbox: every message to or about the user goes, sent or not (labels, masked
        # numbers); an offer's copies stay for its tally (waiting ones withdrawn).
        withdrawn = await PromotionsRepository(self._conn).withdraw_offers(user_id, now=now)
        outbox = (await self._conn.execute(delete(notifications).where(
            notifications.c.user_id == user_id,
            notifications.c.kind != OFFER_KIND))).rowcount or 0

        # A KHQR's payer account may carry a name; the bank and the references stay.
        await self._conn.execute(update(khqr_invoices).where(
            khqr_invoices.c.user_id == user_id).values(payer_account_enc=None))

        # Conversation drafts and states (private chats: the chat is the user).
        drafts = (await self._conn.execute(delete(ptb_user_data).where(
            ptb_user_data.c.user_id == user_id))).rowcount or 0
        await self._conn.execute(delete(ptb_chat_data).where(ptb_chat_data.c.chat_id == user_id))
        await self._conn.execute(delete(ptb_conversations).where(
            ptb_conversations.c.key == json.dumps([user_id, user_id])))

        # The user's row: the id stays (the ledger's key), their settings go.
        await self._conn.execute(update(users).where(users.c.id == user_id).values(
            language=None, timezone=None, quiet_start_minute=None, quiet_end_minute=None,
            monthly_summary=False, promotions=False, forgotten_at=now, updated_at=now))

        audit_scrubbed = await self._scrub_audit(audit_rows, needles)
        return Erased(lines_deleted=deleted, lines_scrubbed=scrubbed, readings=readings,
                      rules=rules_deleted, tickets=tickets_deleted, support_messages=messages,
                      notifications=outbox, offers_withdrawn=withdrawn,
                      codes_deleted=codes_deleted, codes_detached=codes_detached,
                      drafts=drafts, audit_scrubbed=audit_scrubbed, kept=kept)
