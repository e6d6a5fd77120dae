"""Support requests: a user writes what is wrong (optionally about one of their recent
charges), the admin chats get it with the user's lines (masked), wallet and that charge;
an admin's reply to that message reaches the user; the user can add to an open request.

Every step is one transaction: the message (its text encrypted, keyed by the Telegram
message it came from, so an update handled twice adds nothing), the audit row and the
outgoing messages in the outbox. The outbox holds no message text: its notices name the
stored message, and the deliverer reads it when it sends (``message_text``).

A request about a charge reported as doubled or not received is flagged: the admins' list
shows it first until it is resolved. A charge has one open request; reporting it again adds
to that one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.invariants import present
from bot.domain.money import Money
from bot.domain.support import Direction, SupportCategory, TicketStatus
from bot.services.notices import Audience, Notice, NoticePart, money_keys, queue
from storage.audit import AuditRepository
from storage.charges import ChargeRecord, ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.notifications import NotificationsRepository
from storage.support import SupportRepository, TicketRecord
from storage.users import UsersRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)

TICKET_NOTIFICATION = "support_ticket"  # admins: a new request
USER_MESSAGE_NOTIFICATION = "support_user_message"  # admins: the user added to a request
REPLY_NOTIFICATION = "support_reply"  # the user: an admin answered
RESOLVED_NOTIFICATION = "support_resolved"  # the user: the request is resolved
# The admins' messages a reply can answer: each names its request.
ANSWERABLE = (TICKET_NOTIFICATION, USER_MESSAGE_NOTIFICATION)
CHOICES_SHOWN = 5  # recent charges offered
# Charges a user may ask about: money was held or taken, or a top-up was tried.
REPORTABLE_STATES = (ChargeState.APPROVED, ChargeState.SUBMITTED, ChargeState.SUCCEEDED,
                     ChargeState.FAILED)
LISTED = 30  # open requests /tickets shows


# --- the notifications (rendered by handlers/support.py) ----------------------------------


@dataclass(frozen=True, kw_only=True)
class ReportedCharge(NoticePart):
    """The charge a request is about, as the admins see it."""

    charge_id: int
    charge_state: ChargeState
    charge_amount: Money = field(metadata=money_keys("charge_amount_minor", "charge_currency"))
    charge_reference: str  # ours, as the provider knows it
    charge_line: str  # masked
    charge_at: datetime


@dataclass(frozen=True, kw_only=True)
class SupportText(Notice):
    """A notice that shows one stored message of a request: the outbox keeps its id, not
    its text, and the deliverer reads the text when it sends."""

    ticket_id: int
    support_message_id: int


@dataclass(frozen=True, kw_only=True)
class SupportTicketOpened(SupportText):
    """Admins: a new request, with what they need to answer it."""

    KIND: ClassVar[str] = TICKET_NOTIFICATION
    user_id: int
    category: SupportCategory
    flagged: bool
    lines: str  # the user's lines, masked, one per line ("" for none)
    wallet: Money = field(metadata=money_keys("wallet_minor", "wallet_currency"))
    charge: ReportedCharge | None = None
    audience: Audience = Audience.ADMIN
    at: datetime


@dataclass(frozen=True, kw_only=True)
class SupportUserMessage(SupportText):
    """Admins: the user added to an open request."""

    KIND: ClassVar[str] = USER_MESSAGE_NOTIFICATION
    user_id: int
    flagged: bool
    audience: Audience = Audience.ADMIN
    at: datetime


@dataclass(frozen=True, kw_only=True)
class SupportReply(SupportText):
    """The user: an admin answered their request."""

    KIND: ClassVar[str] = REPLY_NOTIFICATION
    at: datetime


@dataclass(frozen=True, kw_only=True)
class SupportResolved(Notice):
    """The user: their request is resolved."""

    KIND: ClassVar[str] = RESOLVED_NOTIFICATION
    ticket_id: int
    at: datetime


# --- what the Telegram side sees ----------------------------------------------------------


@dataclass(frozen=True)
class ChargeChoice:
    """One of the user's recent charges, as /support offers it."""

    id: int
    amount: Money
    state: ChargeState
    line: str  # the user's own label of the line
    at: datetime


@dataclass(frozen=True)
class TicketView:
    id: int
    user_id: int
    category: SupportCategory
    status: TicketStatus
    flagged: bool
    charge_id: int | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None

    @classmethod
    def of(cls, record: TicketRecord) -> TicketView:
        return cls(id=record.id, user_id=record.user_id, category=record.category,
                   status=record.status, flagged=record.flagged, charge_id=record.charge_id,
                   created_at=record.created_at, updated_at=record.updated_at,
                   resolved_at=record.resolved_at, resolved_by=record.resolved_by)

    @property
    def is_open(self) -> bool:
        return self.status is TicketStatus.OPEN


@dataclass(frozen=True)
class SupportStart:
    charges: list[ChargeChoice]  # newest first
    open_tickets: list[TicketView]  # the user's, oldest first


@dataclass(frozen=True)
class Opened:
    ticket_id: int
    added: bool = False  # the charge had an open request: the text went to that one


@dataclass(frozen=True)
class Added:
    ticket_id: int


@dataclass(frozen=True)
class TicketClosed:
    """The request is resolved: nothing was added."""

    ticket_id: int


@dataclass(frozen=True)
class NotYours:
    """The charge or request is someone else's or unknown: nothing was written."""


@dataclass(frozen=True)
class Replied:
    ticket_id: int
    user_id: int


@dataclass(frozen=True)
class Resolved:
    ticket_id: int
    user_id: int


@dataclass(frozen=True)
class AlreadyResolved:
    ticket: TicketView


@dataclass(frozen=True)
class NoSuchTicket:
    ticket_id: int


@dataclass(frozen=True)
class OpenList:
    tickets: list[TicketView]  # flagged first, oldest first within each
    total: int  # open requests, listed or not


def _source(chat_id: int, message_id: int) -> str:
    """The Telegram message a stored message came from (UNIQUE: an update twice adds it
    once)."""
    return f"tg:{chat_id}:{message_id}"


def masked_line(line: LineRecord) -> str:
    """A line as the admins see it: never its whole number, nor the user's nickname."""
    if line.number is not None:
        shown = line.number.masked
    else:
        shown = f"eSIM …{line.iccid[-4:]}" if line.iccid else "eSIM"
    return f"{shown} ({line.operator.display_name})"


class SupportService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock, *,
                 admin_chat_ids: Sequence[int] = (), wallet_currency: str = "USD") -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._admins = tuple(dict.fromkeys(admin_chat_ids))
        self._currency = wallet_currency

    @property
    def available(self) -> bool:
        """Whether anyone can answer: requests go to the admin chats."""
        return bool(self._admins)

    def is_admin_chat(self, chat_id: int) -> bool:
        return chat_id in self._admins

    # --- the user's side ----------------------------------------------------------------

    async def start(self, user_id: int) -> SupportStart:
        """What /support offers: the user's recent charges and their open requests."""
        async with self._db.read() as conn:
            records = await ChargesRepository(conn, self._cipher).recent_for_user(
                user_id, REPORTABLE_STATES, CHOICES_SHOWN)
            charges = [await self._choice(conn, record) for record in records]
            tickets = await SupportRepository(conn, self._cipher).open_for_user(user_id)
        return SupportStart(charges=charges, open_tickets=[TicketView.of(t) for t in tickets])

    async def charge(self, user_id: int, charge_id: int) -> ChargeChoice | None:
        """One of the user's charges they may ask about; None for any other."""
        async with self._db.read() as conn:
            record = await ChargesRepository(conn, self._cipher).get(charge_id)
            if record is None or record.user_id != user_id \
                    or record.state not in REPORTABLE_STATES:
                return None
            return await self._choice(conn, record)

    async def ticket(self, user_id: int, ticket_id: int) -> TicketView | None:
        """The user's request (open or not); None for anyone else's."""
        async with self._db.read() as conn:
            record = await SupportRepository(conn, self._cipher).get(ticket_id)
        return TicketView.of(record) if record is not None and record.user_id == user_id \
            else None

    async def open_ticket(self, user_id: int, text: str, *, category: SupportCategory,
                          charge_id: int | None, message_id: int) -> Opened | NotYours:
        """Stores a new request (its first message is ``text``, from the user's message
        ``message_id``) and tells the admin chats; a charge with an open request gets the
        text added to that one instead."""
        if category.needs_charge != (charge_id is not None):
            raise ValueError(f"a {category.value} request needs a charge exactly when it is "
                             "about one")
        now = self._clock.now()
        source = _source(user_id, message_id)
        async with self._db.write() as conn:
            repo = SupportRepository(conn, self._cipher)
            seen = await repo.message_by_source(source)
            if seen is not None:  # the same update again: done the first time
                return Opened(seen.ticket_id)
            charge = None
            if charge_id is not None:
                charge = await ChargesRepository(conn, self._cipher).get(charge_id)
                if charge is None or charge.user_id != user_id \
                        or charge.state not in REPORTABLE_STATES:
                    return NotYours()
                existing = await repo.open_for_charge(charge_id)
                if existing is not None:
                    if category.flagged and not existing.flagged:
                        await repo.flag(existing.id, now=now)
                    await self._add_user_message(conn, existing, text, source, now,
                                                 flagged=existing.flagged or category.flagged)
                    return Opened(existing.id, added=True)
            await UsersRepository(conn).ensure(user_id, language=None, now=now)
            ticket_id = await repo.create(user_id=user_id, charge_id=charge_id,
                                          category=category, now=now)
            stored = present(await repo.add_message(
                ticket_id=ticket_id, direction=Direction.USER, author=f"user:{user_id}",
                text=text, source=source, now=now),
                f"message {source}, not seen in this transaction, is added")
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="support.opened",
                subject=f"ticket:{ticket_id}",
                details={"category": category.value, "charge_id": charge_id,
                         "flagged": category.flagged, "message_id": stored})
            notice = SupportTicketOpened(
                ticket_id=ticket_id, support_message_id=stored, user_id=user_id,
                category=category, flagged=category.flagged,
                lines="\n".join(masked_line(line) for line in
                                await LinesRepository(conn, self._cipher).for_owner(user_id)),
                wallet=await WalletRepository(conn).available(user_id, self._currency),
                charge=await self._reported(conn, charge) if charge is not None else None,
                at=now)
            await self._tell_admins(conn, notice, user_id,
                                    f"{TICKET_NOTIFICATION}:{ticket_id}", now)
        if not self._admins:
            log.warning("Support request %s stored, but no ADMIN_CHAT_IDS to tell", ticket_id)
        return Opened(ticket_id)

    async def follow_up(self, user_id: int, ticket_id: int, text: str, *,
                        message_id: int) -> Added | TicketClosed | NotYours:
        """Adds the user's ``text`` to their open request and tells the admin chats."""
        now = self._clock.now()
        source = _source(user_id, message_id)
        async with self._db.write() as conn:
            repo = SupportRepository(conn, self._cipher)
            ticket = await repo.get(ticket_id, lock=True)
            if ticket is None or ticket.user_id != user_id:
                return NotYours()
            seen = await repo.message_by_source(source)
            if seen is not None:
                return Added(seen.ticket_id)
            if ticket.status is not TicketStatus.OPEN:
                return TicketClosed(ticket_id)
            await self._add_user_message(conn, ticket, text, source, now,
                                         flagged=ticket.flagged)
        return Added(ticket_id)

    async def _add_user_message(self, conn: AsyncConnection, ticket: TicketRecord,
                                text: str, source: str, now: datetime, *,
                                flagged: bool) -> None:
        stored = await SupportRepository(conn, self._cipher).add_message(
            ticket_id=ticket.id, direction=Direction.USER, author=f"user:{ticket.user_id}",
            text=text, source=source, now=now)
        if stored is None:  # (callers looked the source up in this transaction)
            return
        await AuditRepository(conn).record(
            at=now, actor=f"user:{ticket.user_id}", action="support.user_message",
            subject=f"ticket:{ticket.id}", details={"message_id": stored})
        await self._tell_admins(conn, SupportUserMessage(
            ticket_id=ticket.id, support_message_id=stored, user_id=ticket.user_id,
            flagged=flagged, at=now), ticket.user_id, f"{USER_MESSAGE_NOTIFICATION}:{stored}",
            now)

    # --- the admins' side ---------------------------------------------------------------

    async def ticket_replied_to(self, chat_id: int, message_id: int) -> int | None:
        """The request whose message in admin chat ``chat_id`` is Telegram's ``message_id``
        (a reply names the message it answers); None for any other message or chat."""
        if not self.is_admin_chat(chat_id):
            return None
        async with self._db.read() as conn:
            sent = await NotificationsRepository(conn).sent_as(chat_id, message_id, ANSWERABLE)
        if sent is None:
            return None
        ticket_id = sent.params.get("ticket_id")
        return ticket_id if isinstance(ticket_id, int) else None

    async def reply(self, ticket_id: int, text: str, *, admin_id: int, chat_id: int,
                    message_id: int) -> Replied | NoSuchTicket:
        """Stores an admin's answer (their message ``message_id`` in admin chat ``chat_id``)
        and sends it to the user. A resolved request can still be answered."""
        now = self._clock.now()
        source = _source(chat_id, message_id)
        actor = f"admin:{admin_id}"
        async with self._db.write() as conn:
            repo = SupportRepository(conn, self._cipher)
            ticket = await repo.get(ticket_id, lock=True)
            if ticket is None:
                return NoSuchTicket(ticket_id)
            stored = await repo.add_message(ticket_id=ticket_id, direction=Direction.ADMIN,
                                            author=actor, text=text, source=source, now=now)
            if stored is None:  # the same update again: sent the first time
                return Replied(ticket_id, ticket.user_id)
            await AuditRepository(conn).record(
                at=now, actor=actor, action="support.admin_reply",
                subject=f"ticket:{ticket_id}",
                details={"message_id": stored, "chat_id": chat_id})
            await queue(NotificationsRepository(conn), SupportReply(
                ticket_id=ticket_id, support_message_id=stored, at=now),
                user_id=ticket.user_id, chat_id=ticket.user_id,
                dedupe_key=f"{REPLY_NOTIFICATION}:{stored}", now=now)
        return Replied(ticket_id, ticket.user_id)

    async def resolve(self, ticket_id: int, *, admin_id: int,
                      ) -> Resolved | AlreadyResolved | NoSuchTicket:
        now = self._clock.now()
        actor = f"admin:{admin_id}"
        async with self._db.write() as conn:
            repo = SupportRepository(conn, self._cipher)
            ticket = await repo.get(ticket_id, lock=True)
            if ticket is None:
                return NoSuchTicket(ticket_id)
            if not await repo.resolve(ticket_id, actor=actor, now=now):
                return AlreadyResolved(TicketView.of(ticket))
            await AuditRepository(conn).record(
                at=now, actor=actor, action="support.resolved", subject=f"ticket:{ticket_id}",
                details={"flagged": ticket.flagged, "charge_id": ticket.charge_id})
            await queue(NotificationsRepository(conn), SupportResolved(
                ticket_id=ticket_id, at=now), user_id=ticket.user_id, chat_id=ticket.user_id,
                dedupe_key=f"{RESOLVED_NOTIFICATION}:{ticket_id}", now=now)
        return Resolved(ticket_id, ticket.user_id)

    async def open_list(self, limit: int = LISTED) -> OpenList:
        async with self._db.read() as conn:
            repo = SupportRepository(conn, self._cipher)
            return OpenList(tickets=[TicketView.of(t) for t in await repo.open_tickets(limit)],
                            total=await repo.count_open())

    # --- the deliverer ------------------------------------------------------------------

    async def message_text(self, support_message_id: int) -> str | None:
        """The text of a stored message, for the outbox to send; None when there is none."""
        async with self._db.read() as conn:
            message = await SupportRepository(conn, self._cipher).message(support_message_id)
        return message.text if message is not None else None

    # --- helpers ------------------------------------------------------------------------

    async def _choice(self, conn: AsyncConnection, record: ChargeRecord) -> ChargeChoice:
        line = await LinesRepository(conn, self._cipher).get(record.line_id)
        return ChargeChoice(id=record.id, amount=record.amount, state=record.state,
                            line=line.label_seen_by(record.user_id)
                            if line is not None else "?",
                            at=record.created_at)

    async def _reported(self, conn: AsyncConnection, charge: ChargeRecord) -> ReportedCharge:
        line = await LinesRepository(conn, self._cipher).get(charge.line_id)
        return ReportedCharge(charge_id=charge.id, charge_state=charge.state,
                              charge_amount=charge.amount, charge_reference=charge.reference,
                              charge_line=masked_line(line) if line is not None else "?",
                              charge_at=charge.created_at)

    async def _tell_admins(self, conn: AsyncConnection,
                           notice: SupportTicketOpened | SupportUserMessage, user_id: int,
                           dedupe: str, now: datetime) -> None:
        # notifications.user_id must be a user: the request's user is the subject; the
        # message goes to each admin chat.
        for chat_id in self._admins:
            await queue(NotificationsRepository(conn), notice, user_id=user_id,
                        chat_id=chat_id, dedupe_key=f"{dedupe}:admin:{chat_id}", now=now)
