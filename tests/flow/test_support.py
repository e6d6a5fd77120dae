"""/support through the real Application: a user reports a charge charged twice, the admin
group gets it with the user's masked lines, wallet and the charge, an admin answers by
replying to it, the user writes back with "Reply", /tickets lists the flagged request until
/resolve. Plus: a report at the length limit still reaches the admins in one message; what
must change nothing (a 4,000-character message, /cancel, someone else's charge, a resolved
request) and where admins' commands and replies count."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.broadcasts import message_length
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.support import MAX_MESSAGE_CHARS
from bot.services.charging import Approved, Requested
from handlers.common import user_ui
from storage.audit import AuditRepository
from storage.tables import notifications, support_messages, support_tickets
from tests.flow.conftest import BotHarness, open_harness
from tests.flow.helpers import bind, deliver, in_chat, keyboard, last_answer, last_edit
from tests.flow.recording import BOT_ID, callback_update, text_update

USER, OTHER, ADMIN, PRIVATE_ADMIN = 555, 666, 42, 4343
ADMIN_GROUP, OTHER_GROUP = -100_900_900, -100_200_300
CELLCARD = "+85512345678"


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    """The admins work in a group of their own; one of them also in a private chat."""
    env = {"ADMIN_CHAT_IDS": f"{ADMIN_GROUP},{PRIVATE_ADMIN}"}
    async with open_harness(tmp_path, clock, monkeypatch, env) as opened:
        yield opened


def replying(update: dict[str, Any], message_id: int, text: str = "…") -> dict[str, Any]:
    """The same message as a reply to the bot's message ``message_id`` in its chat."""
    moved = copy.deepcopy(update)
    message = moved["message"]
    message["reply_to_message"] = {
        "message_id": message_id, "date": int(time.time()), "chat": message["chat"],
        "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"}, "text": text}
    return moved


def answer(text: str, message_id: int, *, user_id: int = ADMIN,
           chat_id: int = ADMIN_GROUP) -> dict[str, Any]:
    """``user_id`` writes ``text`` in ``chat_id`` (the admin group) as a reply to the bot's
    message ``message_id`` there."""
    return replying(in_chat(text_update(text, user_id=user_id), chat_id), message_id)


async def sent_as(harness: BotHarness, kind: str, chat_id: int) -> list[int]:
    """Telegram's ids of the messages of ``kind`` the outbox sent to ``chat_id``."""
    async with harness.components.db.read() as conn:
        rows = await conn.execute(select(notifications.c.message_id).where(
            notifications.c.kind == kind, notifications.c.chat_id == chat_id,
            notifications.c.status == "sent").order_by(notifications.c.id))
        return [int(row.message_id) for row in rows]


def texts(harness: BotHarness, chat_id: int) -> list[str]:
    return harness.api.texts(chat_id)


def sent_to(harness: BotHarness, chat_id: int) -> list[dict[str, Any]]:
    return [p for p in harness.api.sent() if int(p["chat_id"]) == chat_id]


async def count(harness: BotHarness, table: Any) -> int:
    async with harness.components.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def a_paid_top_up(harness: BotHarness) -> int:
    """The user's line, $12.00 credited and a $5.00 top-up that went through; its id."""
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=USER)
    await c.wallet.credit_operator(USER, Money(1200, "USD"), "cash-1", actor="cli")
    requested = await c.charging.request_manual(USER, line_id, Money(500, "USD"), None, "n1")
    assert isinstance(requested, Requested)
    approved = await c.charging.approve(USER, requested.charge.id)
    assert isinstance(approved, Approved) and approved.charge.state is ChargeState.SUCCEEDED
    await deliver(harness, rounds=10)  # the receipts: out of the way
    return requested.charge.id


async def something_else(harness: BotHarness) -> None:
    """/support, then "Something else": the next text is the request."""
    await harness.send(text_update("/support", user_id=USER))
    await harness.send(callback_update("v1:sp:o:0", user_id=USER))


async def general_request(harness: BotHarness, text: str = "Hello?") -> int:
    """A request about nothing in particular, delivered to the admin chats; the id of its
    message in the admin group."""
    await something_else(harness)
    await harness.send(text_update(text, user_id=USER))
    await deliver(harness, rounds=10)
    [ticket_message] = await sent_as(harness, "support_ticket", ADMIN_GROUP)
    return ticket_message


async def open_request(harness: BotHarness, charge_id: int, text: str) -> None:
    await harness.send(text_update("/support", user_id=USER))
    await harness.send(callback_update(f"v1:sp:c:{charge_id}", user_id=USER))
    await harness.send(callback_update("v1:spk:charged_twice", user_id=USER))
    await harness.send(text_update(text, user_id=USER))


async def test_support_round_trip_from_a_report_to_resolved(harness: BotHarness) -> None:
    c = harness.components
    charge_id = await a_paid_top_up(harness)
    charge = await c.charging.get(charge_id)
    assert charge is not None

    # /support offers the recent top-up, and something else.
    await harness.send(text_update("/support", user_id=USER))
    menu = sent_to(harness, USER)[-1]
    assert "What is it about?" in menu["text"]
    choices = keyboard(menu)
    assert [data for _label, data in choices] == [f"v1:sp:c:{charge_id}", "v1:sp:o:0"]
    assert "$5.00 · 012 ••• 678 · succeeded" in choices[0][0]

    await harness.send(callback_update(f"v1:sp:c:{charge_id}", user_id=USER))
    assert "What went wrong with this top-up?" in last_edit(harness)["text"]
    assert [data for _label, data in keyboard(last_edit(harness))] == [
        "v1:spk:failed", "v1:spk:charged_twice", "v1:spk:not_received"]
    await harness.send(callback_update("v1:spk:charged_twice", user_id=USER))
    assert "Write what is wrong" in last_edit(harness)["text"]
    report = "I was charged twice for the $5 top-up on 012 345 678"
    await harness.send(text_update(report, user_id=USER))
    assert texts(harness, USER)[-1] == ("✅ Sent to our support team as request #1. The "
                                        "answer will come here, in this chat.")

    # Each admin chat gets the request with the lines (masked), wallet and the charge.
    await deliver(harness, rounds=10)
    [ticket] = texts(harness, ADMIN_GROUP)
    shown_at = (await user_ui(c.users, c.i18n, ADMIN_GROUP, None)).when(charge.created_at)
    assert ticket == "\n".join([
        f"🆘 Support request #1 from user {USER}",
        "⚑ Flagged: I was charged twice",
        "Lines: 012 ••• 678 (Cellcard)",
        "Wallet: $7.00",
        f"Top-up #{charge_id}: succeeded, $5.00, 012 ••• 678 (Cellcard), {shown_at}, "
        f"reference {charge.reference}",
        "", report, "",
        "Reply to this message to answer the user; /resolve 1 when it is done."])
    assert texts(harness, PRIVATE_ADMIN) == [ticket]
    async with c.db.read() as conn:
        params = repr((await conn.execute(select(notifications.c.params))).all())
    assert "charged twice for the" not in params  # the outbox holds no message text

    # An admin answers by replying to it in the group; the answer reaches the user.
    [ticket_message] = await sent_as(harness, "support_ticket", ADMIN_GROUP)
    sorry = "Sorry about that: the second $5.00 is back in your /wallet."
    await harness.send(answer(sorry, ticket_message))
    assert texts(harness, ADMIN_GROUP)[-1] == f"Sent to user {USER} (request #1)."
    await deliver(harness, rounds=10)
    to_user = sent_to(harness, USER)[-1]
    assert to_user["text"] == f"💬 Support answered your request #1:\n\n{sorry}"
    assert keyboard(to_user) == [("✍️ Reply", "v1:sp:t:1")]

    # The user writes back; the admins get it, and a reply to that reaches the user too.
    await harness.send(callback_update("v1:sp:t:1", user_id=USER))
    assert texts(harness, USER)[-1].startswith("Write what you want to add to request #1")
    await harness.send(text_update("Thank you, I see it now.", user_id=USER))
    assert texts(harness, USER)[-1].startswith("✅ Added to request #1.")
    await deliver(harness, rounds=10)
    assert texts(harness, ADMIN_GROUP)[-1] == "\n".join([
        f"💬 User {USER} added to flagged request #1:", "", "Thank you, I see it now.", "",
        "Reply to this message to answer the user."])
    [follow_up] = await sent_as(harness, "support_user_message", ADMIN_GROUP)
    await harness.send(answer("You are welcome!", follow_up))
    await deliver(harness, rounds=10)
    assert texts(harness, USER)[-1].endswith("You are welcome!")

    # The flagged request is on the admins' list until it is resolved.
    await harness.send(in_chat(text_update("/tickets", user_id=ADMIN), ADMIN_GROUP))
    listing = texts(harness, ADMIN_GROUP)[-1]
    assert listing.startswith("Open support requests: 1\n⚑ #1 · user 555 · I was charged "
                              f"twice · top-up #{charge_id} · last message ")
    for bad in ("/resolve ¹", "/resolve one", "/resolve 1 2"):  # nothing resolved by these
        await harness.send(in_chat(text_update(bad, user_id=ADMIN), ADMIN_GROUP))
        assert texts(harness, ADMIN_GROUP)[-1].startswith("Usage: /resolve REQUEST_NUMBER")
    await harness.send(in_chat(text_update("/resolve 1", user_id=ADMIN), ADMIN_GROUP))
    assert texts(harness, ADMIN_GROUP)[-1] == "Request #1 is resolved; user 555 is told."
    await deliver(harness, rounds=10)
    assert texts(harness, USER)[-1] == ("✅ Your support request #1 is resolved. If "
                                        "something is still wrong, send /support.")
    await harness.send(in_chat(text_update("/tickets", user_id=ADMIN), ADMIN_GROUP))
    assert texts(harness, ADMIN_GROUP)[-1] == "No open support requests."
    await harness.send(in_chat(text_update("/resolve 1", user_id=ADMIN), ADMIN_GROUP))
    assert texts(harness, ADMIN_GROUP)[-1].startswith(
        f"Request #1 was resolved before (admin:{ADMIN}, ")

    # The conversation is stored (encrypted) and audited.
    async with c.db.read() as conn:
        directions = (await conn.execute(select(support_messages.c.direction).order_by(
            support_messages.c.id))).scalars().all()
        stored = repr((await conn.execute(select(support_messages))).all())
        actions = [e.action for e in await AuditRepository(conn).latest()
                   if e.action.startswith("support.")]
    assert directions == ["user", "admin", "user", "admin"]
    assert "Thank you" not in stored and "welcome" not in stored
    assert actions == ["support.resolved", "support.admin_reply", "support.user_message",
                       "support.admin_reply", "support.opened"]

    # "Reply" on an answer to a resolved request adds nothing.
    await harness.send(callback_update("v1:sp:t:1", user_id=USER))
    assert last_answer(harness)["text"] == ("Request #1 is resolved. Send /support to open "
                                            "a new one.")
    assert await count(harness, support_messages) == 4


async def test_a_4000_character_message_gets_a_clear_answer_and_changes_nothing(
        harness: BotHarness) -> None:
    await something_else(harness)
    queued_before = await count(harness, notifications)

    await harness.send(text_update("x" * 4000, user_id=USER))

    assert texts(harness, USER)[-1] == ("That is too long for one message: please keep it "
                                        "under 3000 characters. Nothing was sent yet.")
    assert await count(harness, support_tickets) == 0
    assert await count(harness, notifications) == queued_before
    # Still writing: a shorter one is taken.
    await harness.send(text_update("The app says my wallet is empty", user_id=USER))
    assert texts(harness, USER)[-1].startswith("✅ Sent to our support team as request #1")
    async with harness.components.db.read() as conn:
        [(category, flagged, charge)] = (await conn.execute(select(
            support_tickets.c.category, support_tickets.c.flagged,
            support_tickets.c.charge_id))).all()
    assert (category, flagged, charge) == ("general", False, None)


async def test_a_report_at_the_limit_reaches_the_admins_in_one_message(
        harness: BotHarness) -> None:
    charge_id = await a_paid_top_up(harness)
    for number in ("+85510345678", "+85597345678", "+85511345679"):  # lines to list too
        await bind(harness, number, user_id=USER)
    longest = "📵" * (MAX_MESSAGE_CHARS // 2)  # two UTF-16 units each, as Telegram counts
    await open_request(harness, charge_id, longest + "📵")
    assert texts(harness, USER)[-1].startswith("That is too long for one message")

    await harness.send(text_update(longest, user_id=USER))  # still writing: this one fits

    assert texts(harness, USER)[-1].startswith("✅ Sent to our support team as request #1")
    await deliver(harness, rounds=10)
    [ticket] = texts(harness, ADMIN_GROUP)
    assert longest in ticket and "Lines: 012 ••• 678 (Cellcard), " in ticket
    assert message_length(ticket) <= 4096


async def test_an_admins_answer_that_is_too_long_or_not_text_is_not_sent(
        harness: BotHarness) -> None:
    ticket_message = await general_request(harness)

    await harness.send(answer("y" * 4000, ticket_message))
    sticker = answer("-", ticket_message)
    del sticker["message"]["text"]
    sticker["message"]["sticker"] = {"file_id": "s", "file_unique_id": "s", "width": 512,
                                     "height": 512, "is_animated": False,
                                     "is_video": False, "type": "regular"}
    await harness.send(sticker)

    assert texts(harness, ADMIN_GROUP)[-2:] == [
        "That is too long for one answer: please keep it under 3000 characters. Nothing was "
        "sent.",
        "Only text reaches the user: write your answer as a text reply."]
    assert await count(harness, support_messages) == 1
    async with harness.components.db.read() as conn:
        replies = (await conn.execute(select(func.count()).select_from(notifications).where(
            notifications.c.kind == "support_reply"))).scalar_one()
    assert replies == 0


async def test_cancel_and_other_input_in_the_middle_store_nothing(
        harness: BotHarness) -> None:
    charge_id = await a_paid_top_up(harness)
    await harness.send(text_update("/support", user_id=USER))
    await harness.send(text_update("my top-up", user_id=USER))
    assert texts(harness, USER)[-1] == "Tap one of the buttons above, or send /cancel."
    await harness.send(callback_update(f"v1:sp:c:{charge_id}", user_id=USER))
    await harness.send(callback_update("v1:spk:not_received", user_id=USER))
    await harness.send(text_update("/support", user_id=USER))
    assert "middle of something" in texts(harness, USER)[-1]
    await harness.send(text_update("/cancel", user_id=USER))

    assert texts(harness, USER)[-1] == "Cancelled. Nothing was changed."
    assert await count(harness, support_tickets) == 0
    # After /cancel, text is no longer a report.
    await harness.send(text_update("it never arrived", user_id=USER))
    assert await count(harness, support_tickets) == 0


async def test_someone_elses_charge_or_request_is_refused(harness: BotHarness) -> None:
    charge_id = await a_paid_top_up(harness)
    await open_request(harness, charge_id, "charged twice")
    assert await count(harness, support_tickets) == 1

    await harness.send(text_update("/support", user_id=OTHER))
    assert [data for _label, data in keyboard(sent_to(harness, OTHER)[-1])] == ["v1:sp:o:0"]
    await harness.send(callback_update(f"v1:sp:c:{charge_id}", user_id=OTHER))
    assert last_answer(harness)["text"] == ("That top-up is not yours, or cannot be asked "
                                            "about.")
    await harness.send(callback_update("v1:sp:t:1", user_id=OTHER))
    assert last_answer(harness)["text"] == "That request is not yours."
    await harness.send(text_update("let me in", user_id=OTHER))
    assert await count(harness, support_messages) == 1


async def test_a_report_of_a_charge_with_an_open_request_is_added_to_it(
        harness: BotHarness) -> None:
    charge_id = await a_paid_top_up(harness)
    await open_request(harness, charge_id, "charged twice")
    await harness.send(text_update("/support", user_id=USER))
    assert [data for _label, data in keyboard(sent_to(harness, USER)[-1])] == [
        "v1:sp:t:1", f"v1:sp:c:{charge_id}", "v1:sp:o:0"]

    await open_request(harness, charge_id, "still twice")

    assert texts(harness, USER)[-1].startswith("✅ Added to your open request #1 about this "
                                               "top-up.")
    assert (await count(harness, support_tickets), await count(harness, support_messages)) \
        == (1, 2)


async def test_admin_commands_and_answers_count_only_in_admin_chats(
        harness: BotHarness) -> None:
    ticket_message = await general_request(harness)

    # Not an admin chat: /tickets and /resolve are unknown, a reply is nobody's answer.
    await harness.send(text_update("/tickets", user_id=USER))
    assert texts(harness, USER)[-1] == "I don't know that command. /help lists what I can do."
    await harness.send(in_chat(text_update("/resolve 1", user_id=OTHER), OTHER_GROUP))
    await harness.send(answer("I answer", ticket_message, user_id=OTHER,
                              chat_id=OTHER_GROUP))
    assert all("resolved" not in text for text in texts(harness, OTHER_GROUP))
    assert await count(harness, support_messages) == 1
    assert [t.id for t in (await harness.components.support.open_list()).tickets] == [1]

    # In the admin group, a reply to another of the bot's messages says so.
    await harness.send(answer("ok", ticket_message + 500))
    assert texts(harness, ADMIN_GROUP)[-1].startswith("That message is not a support request")
    # A command given as a reply is still only an admin command or nothing.
    await harness.send(answer("/wallet", ticket_message))
    assert "private chat" in texts(harness, ADMIN_GROUP)[-1]
    assert await count(harness, support_messages) == 1

    # An admin in a private admin chat answers the same way; other replies there are
    # their own chat as usual.
    [private_message] = await sent_as(harness, "support_ticket", PRIVATE_ADMIN)
    await harness.send(answer("Answered privately", private_message,
                              user_id=PRIVATE_ADMIN, chat_id=PRIVATE_ADMIN))
    assert texts(harness, PRIVATE_ADMIN)[-1] == f"Sent to user {USER} (request #1)."
    await harness.send(answer("what is this?", private_message + 500,
                              user_id=PRIVATE_ADMIN, chat_id=PRIVATE_ADMIN))
    assert texts(harness, PRIVATE_ADMIN)[-1] == ("I did not understand that. /help lists what "
                                                 "I can do.")
    assert await count(harness, support_messages) == 2


async def test_the_same_answer_handled_twice_reaches_the_user_once(
        harness: BotHarness) -> None:
    hello = answer("Hi!", await general_request(harness))

    await harness.send(hello)
    await harness.send(hello)  # Telegram delivered it again (a lost offset)
    await deliver(harness, rounds=10)

    assert [t for t in texts(harness, USER) if t.startswith("💬")] == [
        "💬 Support answered your request #1:\n\nHi!"]
    assert await count(harness, support_messages) == 2


async def test_support_says_so_when_no_admin_chat_is_set(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADMIN_CHAT_IDS", raising=False)
    async with open_harness(tmp_path, clock, monkeypatch) as harness:
        await harness.send(text_update("/support", user_id=USER))
        await harness.send(text_update("hello", user_id=USER))
        assert texts(harness, USER)[0] == "Support by chat is not set up here yet, sorry."
        assert await count(harness, support_tickets) == 0


async def test_only_text_is_taken_as_the_report(harness: BotHarness) -> None:
    await something_else(harness)
    photo = text_update("-", user_id=USER)
    del photo["message"]["text"]
    photo["message"]["photo"] = [{"file_id": "p", "file_unique_id": "p", "width": 9,
                                  "height": 9}]
    await harness.send(photo)
    assert texts(harness, USER)[-1] == "Please write it as a text message, or send /cancel."
    assert await count(harness, support_tickets) == 0
