"""Forgetting a user (/forget): what stands in the way, what is stored, and the deletion.

Every table that can hold something of a user is handled here, one decision each:

- deleted: their lines (unless charges reference them), readings, rules, support requests
  and messages, outbox messages (but copies of an offer, which only the broadcast's tally
  reads and which hold the offer's text), conversation drafts and states, SMS codes that no
  longer count against a number;
- scrubbed: a line charges still reference becomes a tombstone (no number, blind index,
  ICCID, name or plan; unbound), and the user's charges on a line that has since moved to
  someone else move to a tombstone of their own; codes that still count against a number
  (sent in the last hour, or a lockout still running) lose their user until the purge job
  deletes them; a KHQR loses the payer's account; the user's row loses every setting; audit
  rows about them lose the details that could name them (labels, masked numbers,
  settings), and another user's rows lose the user's id as their line's previous owner;
- kept as they are: charges (but the line's balance after them), holds, ledger entries,
  payments, invoices, disputes, paid KHQRs' references, reconciliation: amounts, dates and
  references under the user's id, which the accounts need.

The simulated carrier's and eSIM provider's tables stand for the providers' own systems (a
real provider keeps its records on its side) and are not touched.

``DECISIONS`` states that decision for every table, with the columns that can hold something
personal; tests/unit/test_privacy_service.py fails when a table (in storage.tables or in the
migrated database) or such a column has none, so a table added later cannot be missed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.broadcasts import OFFER_KIND
from bot.domain.charges import OPEN_STATES
from bot.domain.money import Money
from bot.domain.phone import PhoneError, parse_cambodian_mobile
from bot.domain.privacy import (
    PREVIOUS_OWNER_KEYS,
    Erased,
    Obstacles,
    Stored,
    number_shapes,
    scrub_details,
    unlink_details,
)
from storage.crypto import FieldCipher
from storage.otp import OtpRepository
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
# Audit ids are taken when a row is inserted and seen when its transaction commits: on
# PostgreSQL a row can become visible after one with a higher id. The pass inside the
# forgetting transaction looks this far back from the newest id the first pass saw.
AUDIT_ID_OVERLAP = 1000

# The reading a rule's charge fired on (migration 0014): the line's figures, cleared.
TRIGGER_COLUMNS = ("trigger_source", "trigger_read_at", "trigger_balance_minor",
                   "trigger_currency", "trigger_data_mb", "trigger_validity_end",
                   "trigger_read_by")


# --- what a forget does, table by table -----------------------------------------------------


class Fate(enum.StrEnum):
    DELETED = "deleted"  # the user's rows go
    SCRUBBED = "scrubbed"  # the rows stay, without what names the user
    KEPT = "kept"  # kept as they are: what the accounts need, naming nobody
    PROVIDERS = "providers'"  # the simulated providers' own records, as a provider keeps them
    NOBODYS = "nobody's"  # holds nothing of any user


@dataclass(frozen=True)
class Decision:
    fate: Fate
    why: str
    # Every column that can hold something of a user, and what becomes of it.
    columns: Mapping[str, str] = field(default_factory=dict)


_ROW_GOES = "deleted with the row"
DECISIONS: Mapping[str, Decision] = {
    "users": Decision(Fate.SCRUBBED, "the id is the ledger's key; the settings go", {
        "language": "cleared", "timezone": "cleared", "quiet_start_minute": "cleared",
        "quiet_end_minute": "cleared", "monthly_summary": "off", "promotions": "off"}),
    "lines": Decision(
        Fate.DELETED, "a line its charges reference stays as a tombstone (they need its id); "
        "the user's charges on a line now someone else's move to a new tombstone of theirs", {
            "phone_enc": "cleared", "phone_index": "cleared", "iccid_enc": "cleared",
            "iccid_index": "cleared", "nickname": "cleared", "plan_product_id": "cleared",
            "warn_balance_minor": "cleared", "warn_data_mb": "cleared",
            "verified_at": "cleared"}),
    "line_readings": Decision(Fate.DELETED, "a line's balance, data and validity"),
    "recharge_rules": Decision(Fate.DELETED, "the user's rules (their charges lose the link)"),
    "otp_challenges": Decision(
        Fate.DELETED, "a code still counting against its number (the hourly cap, a lockout) "
        "stays without its user until the purge job deletes it", {
            "phone_index": _ROW_GOES + " (or by the purge, an hour at most)",
            "code_hash": _ROW_GOES, "subject": "cleared"}),
    "audit_log": Decision(
        Fate.SCRUBBED, "who did what when stays; details that could name the user go", {
            "details": "settings, labels, masked numbers, anything mentioning the user's "
                       "numbers, ICCIDs or names removed; a previous owner's id removed",
            "subject": "ids only (kind:<id>)"}),
    "ptb_conversations": Decision(Fate.DELETED, "the user's conversation states", {
        "key": _ROW_GOES, "state": _ROW_GOES, "name": "a flow's name, not a person's"}),
    "ptb_user_data": Decision(Fate.DELETED, "drafts", {"data_enc": _ROW_GOES}),
    "ptb_chat_data": Decision(Fate.DELETED, "a private chat's data is its user's",
                              {"data_enc": _ROW_GOES}),
    "ptb_bot_data": Decision(Fate.NOBODYS, "not persisted (no flow uses bot data)",
                             {"data_enc": "about no user"}),
    "charges": Decision(Fate.KEPT, "the accounts: amounts, dates, states, references", {
        "provider_tx_enc": "kept: the provider's reference",
        "balance_after_minor": "cleared: the line's", "validity_end_after": "cleared",
        **dict.fromkeys(TRIGGER_COLUMNS, "cleared: the line's reading the charge fired on"),
        "rule_id": "cleared (the rule goes)", "idempotency_key": "kept: ids and a period",
        "line_id": "kept, or a tombstone of the user's when the line is now someone else's",
        "reference": "kept: ours, a hash"}),
    "holds": Decision(Fate.KEPT, "the accounts"),
    "ledger_entries": Decision(Fate.KEPT, "the accounts", {"memo": "kept: an amount paid"}),
    "wallet_payments": Decision(Fate.KEPT, "the accounts", {
        "external_id": "kept: the blind index of the payment's reference",
        "external_ref_enc": "kept: the payment's reference",
        "provider_charge_enc": "kept: the provider's reference",
        "payload": "kept: the invoice's id and MAC"}),
    "wallet_invoices": Decision(Fate.KEPT, "the accounts"),
    "khqr_invoices": Decision(Fate.SCRUBBED, "the accounts; the payer's account may name them", {
        "payer_account_enc": "cleared", "transaction_index": "kept: Bakong's reference",
        "transaction_hash_enc": "kept: Bakong's reference",
        "payload": "kept: our account and the amount"}),
    "payment_disputes": Decision(Fate.KEPT, "the accounts (a held one blocks the forget)", {
        "charge_index": "kept: a reference's blind index", "charge_enc": "kept: a reference",
        "provider_charge_enc": "kept: a reference"}),
    "notifications": Decision(
        Fate.DELETED, "messages to or about the user, sent or not; an offer's copies stay "
        "(withdrawn if waiting) for the broadcast's tally", {
            "params": _ROW_GOES + " (an offer's: the offer's text, kept)"}),
    "support_tickets": Decision(Fate.DELETED, "the user's requests"),
    "support_messages": Decision(Fate.DELETED, "with their request (ON DELETE CASCADE)",
                                 {"text_enc": _ROW_GOES}),
    "scheduler_runs": Decision(Fate.NOBODYS, "what the sweepers did",
                               {"failures": "kinds and counts"}),
    "provider_float_episodes": Decision(Fate.NOBODYS, "our float at the provider"),
    "reconciliation_runs": Decision(Fate.NOBODYS, "a day's totals"),
    "reconciliation_differences": Decision(Fate.KEPT, "the accounts: charge ids, references "
                                           "and amounts", {"reference": "kept: ours, a hash"}),
    "sim_lines": Decision(Fate.PROVIDERS, "the simulated carrier's lines", {
        "phone_enc": "the provider's", "phone_index": "the provider's"}),
    "sim_topups": Decision(Fate.PROVIDERS, "the simulated carrier's top-ups", {
        "phone_index": "the provider's", "reference": "the provider's copy of ours"}),
    "sim_esims": Decision(Fate.PROVIDERS, "the simulated eSIM provider's eSIMs", {
        "iccid_enc": "the provider's", "iccid_index": "the provider's"}),
    "sim_esim_orders": Decision(Fate.PROVIDERS, "the simulated eSIM provider's orders",
                                {"iccid_index": "the provider's"}),
}


def _conversation_of(user_id: int) -> ColumnElement[bool]:
    """The stored conversation keys (persistence: the key tuple as JSON) of the user's
    private chat, whatever the handler keys by: chat and user ``[u, u]``, one of them
    ``[u]``, and with a message id ``[u, u, m]`` or ``[u, m]``. A positive chat id is a
    private chat, whose id is its user's."""
    return or_(ptb_conversations.c.key == json.dumps([user_id]),
               ptb_conversations.c.key.startswith(f"[{user_id}, ", autoescape=True))


@dataclass(frozen=True)
class AuditFound:
    """Audit rows about a user, found before the forgetting transaction."""

    about: list[int]  # by them, or about them or their things: scrubbed
    linked: list[int]  # naming them only as a line's previous owner: that link goes
    codes: list[int]  # their SMS codes, as far as the log tells
    newest: int  # the newest id there was


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

    async def _audit_subjects(self, user_id: int, *, after: int,
                              codes: Iterable[int]) -> tuple[list[ColumnElement[bool]],
                                                             list[int]]:
        """Audit rows about the user's things: their lines, rules, SMS codes, charges and
        support requests (subjects are ids, or ``kind:<id>``); and the ids of their codes. A code
        whose SMS failed is deleted at once, so its ``otp.sms_failed`` row (the masked
        number, by "system") is found through the code's ``otp.sent`` row, which is theirs:
        ``codes`` are those found before, the rest are looked for after ``after``."""
        line_ids = await self._line_ids(user_id)
        rule_ids = await self._rule_ids(user_id)
        code_ids = set(codes)
        code_ids.update((await self._conn.execute(select(otp_challenges.c.id).where(
            otp_challenges.c.user_id == user_id))).scalars())
        code_ids.update(int(subject) for subject in (await self._conn.execute(
            select(audit_log.c.subject).where(
                audit_log.c.id > after, audit_log.c.actor == f"user:{user_id}",
                audit_log.c.action == "otp.sent"))).scalars()
            if subject is not None and subject.isdigit())
        ticket_ids = list((await self._conn.execute(select(support_tickets.c.id).where(
            support_tickets.c.user_id == user_id))).scalars())
        charge_ids = list((await self._conn.execute(select(charges.c.id).where(
            charges.c.user_id == user_id))).scalars())
        conditions = []
        for prefix, ids in (("line.", line_ids), ("rule.", rule_ids),
                            ("otp.", sorted(code_ids)), ("charge.", charge_ids)):
            if ids:
                conditions.append(and_(audit_log.c.action.startswith(prefix),
                                       audit_log.c.subject.in_([str(i) for i in ids])))
        if ticket_ids:
            conditions.append(audit_log.c.subject.in_([f"ticket:{i}" for i in ticket_ids]))
        return conditions, sorted(code_ids)

    def _detail_is(self, key: str, user_id: int) -> ColumnElement[bool]:
        """The audit row's ``details[key]`` is ``user_id``."""
        value = audit_log.c.details[key]
        if self._conn.dialect.name == "postgresql":
            is_user: ColumnElement[bool] = value.as_string() == str(user_id)
        else:
            is_user = value.as_integer() == user_id
        return is_user

    async def audit_about(self, user_id: int, *, after: int = 0,
                          codes: Iterable[int] = ()) -> AuditFound:
        """The audit rows about the user with id > ``after``: those by them or about them
        or their things, and those that name them only as a line's previous owner.
        ``codes``: the user's SMS codes found by an earlier pass."""
        newest = int((await self._conn.execute(
            select(func.coalesce(func.max(audit_log.c.id), 0)))).scalar_one())
        subjects, code_ids = await self._audit_subjects(user_id, after=after, codes=codes)
        about = or_(audit_log.c.actor == f"user:{user_id}", self._detail_is("user_id", user_id),
                    *subjects)
        about_ids = list((await self._conn.execute(
            select(audit_log.c.id).where(audit_log.c.id > after, about)
            .order_by(audit_log.c.id))).scalars())
        previous_owner = or_(*(self._detail_is(key, user_id)
                               for key in sorted(PREVIOUS_OWNER_KEYS)))
        found = set(about_ids)
        linked = [row_id for row_id in (await self._conn.execute(
            select(audit_log.c.id).where(audit_log.c.id > after, previous_owner)
            .order_by(audit_log.c.id))).scalars() if row_id not in found]
        return AuditFound(about=about_ids, linked=linked, codes=code_ids, newest=newest)

    async def _scrub_audit(self, ids: Iterable[int], needles: Sequence[str], *,
                           user_id: int, fully: bool,
                           stand_ins: Mapping[int, int] | None = None) -> int:
        """Scrubs the details of rows ``ids``: ``fully`` what could name the user (see
        ``scrub_details``), and a ``line`` id that has a stand-in becomes the stand-in's;
        else only their id as a previous owner."""
        wanted = sorted(set(ids))
        scrubbed = 0
        for start in range(0, len(wanted), 500):
            rows = (await self._conn.execute(
                select(audit_log.c.id, audit_log.c.details)
                .where(audit_log.c.id.in_(wanted[start:start + 500])))).all()
            for row_id, details in rows:
                if not isinstance(details, dict):
                    continue
                clean = (scrub_details(details, needles, user_id=user_id) if fully
                         else unlink_details(details, user_id))
                line_id = clean.get("line")
                if fully and stand_ins and isinstance(line_id, int) and line_id in stand_ins:
                    clean = {**clean, "line": stand_ins[line_id]}
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

    async def forget(self, user_id: int, *, now: datetime, audit: AuditFound) -> Erased:
        """Deletes and scrubs everything of the user but what the ledger keeps (see the
        module's docstring). Run it in the write transaction that checked ``obstacles``
        (with ``lock``): nothing may be open. ``audit`` holds the audit rows about the user
        found beforehand (``audit_about``), so the whole log is not read inside this
        transaction; rows written since (and ``AUDIT_ID_OVERLAP`` before) are looked for
        here."""
        found = await self._lines(user_id)
        needles = self._needles(found)
        line_ids = [line.id for line in found]
        later = await self.audit_about(user_id, after=max(0, audit.newest - AUDIT_ID_OVERLAP),
                                       codes=audit.codes)
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
        # A line that moved to someone else still carries the user's charges on it, which
        # would tie them to its number: each gets a stand-in, a tombstone of the user's, and
        # their charges (and those charges' audit rows) point at it instead.
        stand_ins: dict[int, int] = {}
        moved = (await self._conn.execute(
            select(lines.c.id, lines.c.kind, lines.c.operator).where(
                lines.c.id.in_(select(charges.c.line_id).where(charges.c.user_id == user_id)),
                lines.c.owner_id != user_id).order_by(lines.c.id))).all()
        for moved_id, kind, operator in moved:
            stand_ins[moved_id] = int((await self._conn.execute(
                insert(lines).values(owner_id=user_id, operator=operator, kind=kind,
                                     next_check_at=None, created_at=now, updated_at=now,
                                     unbound_at=now, forgotten_at=now)
                .returning(lines.c.id))).scalar_one())
            await self._conn.execute(update(charges).where(
                charges.c.user_id == user_id, charges.c.line_id == moved_id)
                .values(line_id=stand_ins[moved_id]))
        # What the provider said the line had after a top-up, and the reading a rule charged
        # on, are the line's, not the money's.
        await self._conn.execute(update(charges).where(charges.c.user_id == user_id).values(
            balance_after_minor=None, validity_end_after=None,
            **dict.fromkeys(TRIGGER_COLUMNS, None)))

        # SMS codes: the lockout and the hourly cap belong to the number, so a code that
        # still counts (bot.domain.otp.still_counts) stays, naming nobody, until the purge
        # job deletes it (bot.jobs.schedule_code_purge); the others go now.
        codes_deleted = await OtpRepository(self._conn, self._cipher).purge(
            now=now, limit=None, user_id=user_id)
        codes_detached = (await self._conn.execute(
            update(otp_challenges).where(otp_challenges.c.user_id == user_id)
            .values(user_id=None, subject=None))).rowcount or 0

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
        await self._conn.execute(delete(ptb_conversations).where(_conversation_of(user_id)))

        # The user's row: the id stays (the ledger's key), their settings go.
        await self._conn.execute(update(users).where(users.c.id == user_id).values(
            language=None, timezone=None, quiet_start_minute=None, quiet_end_minute=None,
            monthly_summary=False, promotions=False, forgotten_at=now, updated_at=now))

        about = {*audit.about, *later.about}
        audit_scrubbed = await self._scrub_audit(about, needles, user_id=user_id, fully=True,
                                                 stand_ins=stand_ins)
        audit_scrubbed += await self._scrub_audit(
            {*audit.linked, *later.linked} - about, needles, user_id=user_id, fully=False)
        return Erased(lines_deleted=deleted, lines_scrubbed=scrubbed, readings=readings,
                      rules=rules_deleted, tickets=tickets_deleted, support_messages=messages,
                      notifications=outbox, offers_withdrawn=withdrawn,
                      lines_stood_in=len(stand_ins),
                      codes_deleted=codes_deleted, codes_detached=codes_detached,
                      drafts=drafts, audit_scrubbed=audit_scrubbed, kept=kept)
