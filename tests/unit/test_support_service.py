"""SupportService on every backend: a request stored with its text encrypted, audited and
queued to each admin chat (lines masked, wallet, the charge); flagged when a charge was
reported doubled or not received; the same Telegram message twice adds nothing; a charge
has one open request; an admin's reply found by the message it answers and queued to the
user; follow-ups to open requests only; resolving once; the admins' list flagged first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.support import SupportCategory, TicketStatus
from bot.services.keys import KeyRotationService
from bot.services.support import (
    Added,
    AlreadyResolved,
    NoSuchTicket,
    NotYours,
    Opened,
    Replied,
    Resolved,
    SupportReply,
    SupportResolved,
    SupportService,
    SupportTicketOpened,
    SupportUserMessage,
    TicketClosed,
)
from storage.audit import AuditRepository
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
from storage.db import Database
from storage.lines import LinesRepository
from storage.notifications import NotificationRecord, NotificationsRepository
from storage.payments import PaymentsRepository
from storage.tables import audit_log, notifications, support_messages, support_tickets
from storage.users import UsersRepository

ALICE, BOB = 7101, 7202
ADMINS = (-100_900, 9002)
ALICE_NUMBER = parse_cambodian_mobile("012345678")  # Cellcard
SECRET = "my PIN is 4242 and the top-up never came"


@pytest.fixture
def support(db: Database, cipher: FieldCipher, clock: ManualClock) -> SupportService:
    return SupportService(db, cipher, clock, admin_chat_ids=ADMINS)


async def alice_with_a_charge(db: Database, cipher: FieldCipher, clock: ManualClock,
                              state: ChargeState = ChargeState.SUCCEEDED) -> int:
    """Alice, her line, $12.00 in her wallet and a $5.00 charge in ``state``; its id."""
    now = clock.now()
    async with db.write() as conn:
        for user in (ALICE, BOB):
            await UsersRepository(conn).ensure(user, language="en", now=now)
        line = await LinesRepository(conn, cipher).add(owner_id=ALICE, number=ALICE_NUMBER,
                                                       now=now, nickname="Mum's phone")
        await PaymentsRepository(conn, cipher).record_payment(
            user_id=ALICE, source="operator", external_id="operator:cash-1",
            amount=Money(1200, "USD"), now=now, actor="cli")
        charges = ChargesRepository(conn, cipher)
        first = ChargeState.AWAITING_APPROVAL if state is ChargeState.AWAITING_APPROVAL \
            else ChargeState.APPROVED
        charge, _ = await charges.create(
            idempotency_key=f"manual:{ALICE}:n{state.value}", user_id=ALICE, line_id=line.id,
            amount=Money(500, "USD"), cause="manual", state=first, now=now)
        path = {ChargeState.SUBMITTED: [ChargeState.SUBMITTED],
                ChargeState.SUCCEEDED: [ChargeState.SUBMITTED, ChargeState.SUCCEEDED],
                ChargeState.FAILED: [ChargeState.SUBMITTED, ChargeState.FAILED]}.get(state, [])
        current = first
        for step in path:
            assert await charges.transition(charge.id, current, step, now)
            current = step
    return charge.id


async def queued(db: Database, kind: str) -> list[NotificationRecord]:
    async with db.read() as conn:
        ids = (await conn.execute(select(notifications.c.id).where(
            notifications.c.kind == kind).order_by(notifications.c.id))).scalars().all()
        outbox = NotificationsRepository(conn)
        return [note for note_id in ids if (note := await outbox.get(note_id)) is not None]


async def count(db: Database, table: object) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def sent(db: Database, note: NotificationRecord, message_id: int,
               clock: ManualClock) -> None:
    """As the dispatcher records it: Telegram's id of the message it sent."""
    async with db.write() as conn:
        await NotificationsRepository(conn).mark_sent(note.id, message_id=message_id,
                                                      now=clock.now())


async def test_a_request_about_a_charge_reaches_every_admin_chat_with_what_they_need(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)

    opened = await support.open_ticket(ALICE, SECRET, category=SupportCategory.CHARGED_TWICE,
                                       charge_id=charge_id, message_id=31)

    assert isinstance(opened, Opened) and not opened.added
    copies = await queued(db, "support_ticket")
    assert [(n.user_id, n.chat_id) for n in copies] == [(ALICE, chat) for chat in ADMINS]
    notice = SupportTicketOpened.from_params(copies[0].params)
    assert (notice.ticket_id, notice.user_id, notice.category, notice.flagged) == (
        opened.ticket_id, ALICE, SupportCategory.CHARGED_TWICE, True)
    # Masked, and not the nickname: the admins see no whole number and nothing personal.
    assert notice.lines == "012 ••• 678 (Cellcard)"
    assert notice.wallet == Money(1200, "USD")
    assert notice.charge is not None
    async with db.read() as conn:
        charge = await ChargesRepository(conn, cipher).get(charge_id)
    assert charge is not None
    assert (notice.charge.charge_id, notice.charge.charge_state, notice.charge.charge_amount,
            notice.charge.charge_reference, notice.charge.charge_at) == (
        charge_id, ChargeState.SUCCEEDED, Money(500, "USD"), charge.reference,
        charge.created_at)
    assert await support.message_text(notice.support_message_id) == SECRET
    # The text is nowhere in plain: not in the message row, the outbox or the audit log.
    async with db.read() as conn:
        dump = repr([(await conn.execute(select(table))).all()
                     for table in (support_messages, support_tickets, notifications,
                                   audit_log)])
        [entry] = await AuditRepository(conn).latest(action="support.opened")
    assert "4242" not in dump and "never came" not in dump
    assert (entry.actor, entry.subject) == (f"user:{ALICE}", f"ticket:{opened.ticket_id}")
    assert entry.details["flagged"] is True and entry.details["charge_id"] == charge_id


async def test_the_same_message_twice_opens_one_request(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)
    first = await support.open_ticket(ALICE, SECRET, category=SupportCategory.FAILED,
                                      charge_id=charge_id, message_id=31)
    again = await support.open_ticket(ALICE, SECRET, category=SupportCategory.FAILED,
                                      charge_id=charge_id, message_id=31)

    assert again == first
    assert (await count(db, support_tickets), await count(db, support_messages)) == (1, 1)
    assert len(await queued(db, "support_ticket")) == len(ADMINS)


async def test_a_charge_reported_again_goes_to_its_open_request_and_flags_it(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)
    first = await support.open_ticket(ALICE, "it failed", category=SupportCategory.FAILED,
                                      charge_id=charge_id, message_id=31)
    assert isinstance(first, Opened)
    [listed] = (await support.open_list()).tickets
    assert not listed.flagged

    again = await support.open_ticket(ALICE, "and I paid twice",
                                      category=SupportCategory.CHARGED_TWICE,
                                      charge_id=charge_id, message_id=35)

    assert again == Opened(first.ticket_id, added=True)
    assert await count(db, support_tickets) == 1
    [listed] = (await support.open_list()).tickets
    assert listed.flagged
    [note, _] = await queued(db, "support_user_message")
    assert SupportUserMessage.from_params(note.params).flagged


async def test_a_charge_that_took_nothing_or_is_not_yours_is_refused(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    waiting = await alice_with_a_charge(db, cipher, clock, ChargeState.AWAITING_APPROVAL)
    assert await support.charge(ALICE, waiting) is None
    assert await support.open_ticket(ALICE, SECRET, category=SupportCategory.FAILED,
                                     charge_id=waiting, message_id=1) == NotYours()
    assert await support.open_ticket(BOB, SECRET, category=SupportCategory.FAILED,
                                     charge_id=waiting, message_id=2) == NotYours()
    assert await count(db, support_tickets) == 0
    with pytest.raises(ValueError, match="needs a charge"):
        await support.open_ticket(ALICE, SECRET, category=SupportCategory.GENERAL,
                                  charge_id=waiting, message_id=3)


async def test_what_support_offers_is_the_users_recent_charges_and_open_requests(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock, ChargeState.FAILED)
    general = await support.open_ticket(ALICE, "hello", category=SupportCategory.GENERAL,
                                        charge_id=None, message_id=40)
    assert isinstance(general, Opened)

    start = await support.start(ALICE)

    [choice] = start.charges
    assert (choice.id, choice.state, choice.amount, choice.line) == (
        charge_id, ChargeState.FAILED, Money(500, "USD"), "Mum's phone")  # her own label
    assert [t.id for t in start.open_tickets] == [general.ticket_id]
    assert not start.open_tickets[0].flagged
    assert (await support.start(BOB)).charges == []
    assert await support.ticket(BOB, general.ticket_id) is None


async def test_an_admin_reply_is_found_by_the_message_it_answers_and_reaches_the_user(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)
    opened = await support.open_ticket(ALICE, SECRET, category=SupportCategory.NOT_RECEIVED,
                                       charge_id=charge_id, message_id=31)
    assert isinstance(opened, Opened)
    group_copy, _private_copy = await queued(db, "support_ticket")
    await sent(db, group_copy, 77, clock)

    assert await support.ticket_replied_to(ADMINS[0], 77) == opened.ticket_id
    assert await support.ticket_replied_to(ADMINS[1], 77) is None  # not sent there as 77
    assert await support.ticket_replied_to(ALICE, 77) is None  # not an admin chat
    assert await support.ticket_replied_to(ADMINS[0], 78) is None

    clock.advance(timedelta(minutes=5))
    answer = "Refunded: you will see $5.00 back in /wallet"
    replied = await support.reply(opened.ticket_id, answer, admin_id=42, chat_id=ADMINS[0],
                                  message_id=90)
    again = await support.reply(opened.ticket_id, answer, admin_id=42, chat_id=ADMINS[0],
                                message_id=90)

    assert replied == again == Replied(opened.ticket_id, ALICE)
    [to_user] = await queued(db, "support_reply")
    assert (to_user.user_id, to_user.chat_id) == (ALICE, ALICE)
    notice = SupportReply.from_params(to_user.params)
    assert await support.message_text(notice.support_message_id) == answer
    async with db.read() as conn:
        [entry] = await AuditRepository(conn).latest(action="support.admin_reply")
    assert (entry.actor, entry.details["chat_id"]) == ("admin:42", ADMINS[0])
    assert await support.reply(999, answer, admin_id=42, chat_id=ADMINS[0],
                               message_id=91) == NoSuchTicket(999)

    # The user's follow-up goes to the admins, and a reply to it is found too.
    added = await support.follow_up(ALICE, opened.ticket_id, "thanks, got it", message_id=33)
    assert added == Added(opened.ticket_id)
    followed = await queued(db, "support_user_message")
    assert [n.chat_id for n in followed] == list(ADMINS)
    await sent(db, followed[1], 12, clock)
    assert await support.ticket_replied_to(ADMINS[1], 12) == opened.ticket_id


async def test_follow_ups_go_to_the_users_open_requests_only(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    opened = await support.open_ticket(ALICE, "hello", category=SupportCategory.GENERAL,
                                       charge_id=None, message_id=40)
    assert isinstance(opened, Opened)
    assert await support.follow_up(BOB, opened.ticket_id, "me too",
                                   message_id=41) == NotYours()
    assert await support.follow_up(ALICE, 999, "where", message_id=42) == NotYours()

    assert await support.resolve(opened.ticket_id, admin_id=42) == Resolved(
        opened.ticket_id, ALICE)

    assert await support.follow_up(ALICE, opened.ticket_id, "one more",
                                   message_id=43) == TicketClosed(opened.ticket_id)
    assert await count(db, support_messages) == 1
    assert await queued(db, "support_user_message") == []


async def test_resolving_once_tells_the_user_and_takes_it_off_the_list(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)
    general = await support.open_ticket(ALICE, "a question", category=SupportCategory.GENERAL,
                                        charge_id=None, message_id=40)
    clock.advance(timedelta(minutes=1))
    doubled = await support.open_ticket(ALICE, SECRET, category=SupportCategory.CHARGED_TWICE,
                                        charge_id=charge_id, message_id=41)
    assert isinstance(general, Opened) and isinstance(doubled, Opened)

    listed = await support.open_list()
    assert [t.id for t in listed.tickets] == [doubled.ticket_id, general.ticket_id]
    assert listed.total == 2

    clock.advance(timedelta(minutes=1))
    assert await support.resolve(doubled.ticket_id, admin_id=42) == Resolved(
        doubled.ticket_id, ALICE)
    again = await support.resolve(doubled.ticket_id, admin_id=43)

    assert isinstance(again, AlreadyResolved)
    assert (again.ticket.status, again.ticket.resolved_by, again.ticket.resolved_at) == (
        TicketStatus.RESOLVED, "admin:42", clock.now())
    assert await support.resolve(999, admin_id=42) == NoSuchTicket(999)
    assert [t.id for t in (await support.open_list()).tickets] == [general.ticket_id]
    [told] = await queued(db, "support_resolved")
    assert (told.chat_id, SupportResolved.from_params(told.params).ticket_id) == (
        ALICE, doubled.ticket_id)
    async with db.read() as conn:
        entries = await AuditRepository(conn).latest(action="support.resolved")
    assert [(e.actor, e.subject) for e in entries] == [("admin:42",
                                                        f"ticket:{doubled.ticket_id}")]
    # Resolved, the charge can be reported again: a new request.
    new = await support.open_ticket(ALICE, "still wrong", category=SupportCategory.FAILED,
                                    charge_id=charge_id, message_id=45)
    assert isinstance(new, Opened) and not new.added and new.ticket_id != doubled.ticket_id


async def test_rotating_the_keys_covers_support_messages(
        db: Database, cipher: FieldCipher, clock: ManualClock, keys: KeyMaterial,
        support: SupportService) -> None:
    opened = await support.open_ticket(ALICE, SECRET, category=SupportCategory.GENERAL,
                                       charge_id=None, message_id=40)
    assert isinstance(opened, Opened)
    new_key = generate_fernet_key()
    both = FieldCipher(KeyMaterial(encryption_keys=(new_key, *keys.encryption_keys),
                                   blind_index_key=keys.blind_index_key))

    await KeyRotationService(db, both, clock).rotate()

    # The old key retired: the text still reads with the new one alone.
    new_only = FieldCipher(KeyMaterial(encryption_keys=(new_key,),
                                       blind_index_key=keys.blind_index_key))
    [note, _] = await queued(db, "support_ticket")
    message_id = SupportTicketOpened.from_params(note.params).support_message_id
    assert await SupportService(db, new_only, clock).message_text(message_id) == SECRET


async def test_a_charge_on_a_line_now_someone_elses_shows_its_masked_number_not_their_name(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        support: SupportService) -> None:
    charge_id = await alice_with_a_charge(db, cipher, clock)
    async with db.write() as conn:
        lines = LinesRepository(conn, cipher)
        (line,) = await lines.for_owner(ALICE)
        await lines.transfer(line.id, new_owner_id=BOB, now=clock.now())
        await lines.rename(line.id, "Bob's secret", now=clock.now())
    (choice,) = (await support.start(ALICE)).charges
    assert choice.line == ALICE_NUMBER.masked
    picked = await support.charge(ALICE, charge_id)
    assert picked is not None and picked.line == ALICE_NUMBER.masked
