"""Private chats only, new messages only: groups, channels and edits through the real
Application."""

from __future__ import annotations

import copy
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from bot.clock import ManualClock
from storage.lines import LinesRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import deliver
from tests.flow.recording import (
    callback_update,
    contact_update,
    successful_payment_update,
    text_update,
)

GROUP = -100_200_300
ADMIN_GROUP = -100_900_900
CELLCARD = "+85512345678"


@pytest.fixture(autouse=True)
def _admin_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the harness reads settings: the admins work in a group of their own."""
    monkeypatch.setenv("ADMIN_CHAT_IDS", str(ADMIN_GROUP))


def in_group(update: dict[str, Any], chat_id: int = GROUP) -> dict[str, Any]:
    """The same update, sent in a supergroup instead of the user's private chat."""
    moved = copy.deepcopy(update)
    message = moved.get("message") or moved["callback_query"]["message"]
    message["chat"] = {"id": chat_id, "type": "supergroup", "title": "Expats in Phnom Penh"}
    return moved


def edited(update: dict[str, Any]) -> dict[str, Any]:
    """The same message, edited by its sender."""
    moved = copy.deepcopy(update)
    moved["edited_message"] = moved.pop("message")
    moved["edited_message"]["edit_date"] = int(time.time())
    return moved


async def lines_of(harness: BotHarness, user_id: int = 555) -> list[str]:
    async with harness.components.db.read() as conn:
        lines = await LinesRepository(conn, harness.components.cipher).for_owner(user_id)
    return [line.number.e164 for line in lines]


def group_messages(harness: BotHarness, chat_id: int = GROUP) -> list[dict[str, Any]]:
    return [p for p in harness.api.sent() if int(p["chat_id"]) == chat_id]


async def test_wallet_in_a_group_posts_nothing_personal_and_points_to_a_private_chat(
        harness: BotHarness, clock: ManualClock) -> None:
    await harness.components.wallet.credit_operator(555, harness.components.wallet
                                                    .offered_amounts()[0], "cash-1", "cli")
    await harness.send(in_group(text_update("/wallet")))

    (note,) = group_messages(harness)
    assert "private chat" in note["text"]
    assert "$" not in note["text"]
    markup = note["reply_markup"]
    markup = json.loads(markup) if isinstance(markup, str) else markup
    assert markup["inline_keyboard"][0][0]["url"] == "https://t.me/topup_bot?start=from_group"

    # Said once: more commands in the same minutes get no more messages there.
    await harness.send(in_group(text_update("/wallet")))
    await harness.send(in_group(text_update("/lines")))
    assert len(group_messages(harness)) == 1
    clock.advance(timedelta(minutes=11))
    await harness.send(in_group(text_update("/help")))
    assert len(group_messages(harness)) == 2
    assert all("$" not in p["text"] for p in harness.api.sent())


async def test_bind_and_own_contact_in_a_group_bind_nothing(harness: BotHarness) -> None:
    await harness.send(in_group(text_update("/bind")))
    await harness.send(in_group(contact_update("85512345678", contact_user_id=555)))
    await harness.send(in_group(text_update("012 345 678")))

    assert await lines_of(harness) == []
    assert harness.sms.sent == []
    assert len(group_messages(harness)) == 1  # the one pointer to the private chat
    # Nothing was started either: the private chat begins afresh.
    await harness.send(text_update("012 345 678"))
    assert harness.sms.sent == []


async def test_plain_chatter_in_a_group_gets_no_answer(harness: BotHarness) -> None:
    await harness.send(in_group(text_update("anyone know a good SIM shop?")))
    assert harness.api.sent() == []


async def test_a_button_pressed_in_a_group_is_answered_and_does_nothing(
        harness: BotHarness) -> None:
    offered = harness.components.wallet.offered_amounts()[0]
    await harness.send(in_group(callback_update(f"v1:wf:{offered.minor}")))

    (answer,) = harness.api.sent("answerCallbackQuery")
    assert "private chat" in answer["text"]
    assert answer["show_alert"] is True
    assert harness.api.sent("sendInvoice") == []
    assert harness.api.sent() == []


async def test_channel_posts_are_ignored(harness: BotHarness) -> None:
    post = {"message_id": 5, "date": int(time.time()), "text": "/wallet",
            "chat": {"id": -100_555, "type": "channel", "title": "News"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 7}]}
    await harness.send({"update_id": 90_001, "channel_post": post})
    await harness.send({"update_id": 90_002, "edited_channel_post": {
        **post, "edit_date": int(time.time())}})
    assert [call.method for call in harness.api.calls
            if call.method not in ("getMe", "setMyCommands", "deleteWebhook")] == []


async def test_being_added_to_a_group_says_once_where_to_talk(harness: BotHarness) -> None:
    added = {"update_id": 90_010, "my_chat_member": {
        "chat": {"id": GROUP, "type": "group", "title": "Family"},
        "from": {"id": 555, "is_bot": False, "first_name": "Dara"},
        "date": int(time.time()),
        "old_chat_member": {"status": "left",
                            "user": {"id": 7_000_000_001, "is_bot": True, "first_name": "T"}},
        "new_chat_member": {"status": "member",
                            "user": {"id": 7_000_000_001, "is_bot": True, "first_name": "T"}}}}
    await harness.send(added)
    (note,) = group_messages(harness)
    assert "private chat" in note["text"]


async def test_an_edited_number_sends_no_code_and_asks_for_a_new_message(
        harness: BotHarness) -> None:
    await harness.send(text_update("/bind"))
    typed = text_update("012 345 678")
    await harness.send(edited(typed))

    assert harness.sms.sent == []
    assert "new message" in harness.api.texts()[-1]
    # The flow is still waiting for the number, and a new message is taken.
    await harness.send(text_update("012 345 678"))
    assert len(harness.sms.sent) == 1
    code = harness.sms.last_code(CELLCARD)
    await harness.send(edited(text_update(code)))
    assert await lines_of(harness) == []
    await harness.send(text_update(code))
    assert await lines_of(harness) == [CELLCARD]


async def test_an_edited_command_is_not_run(harness: BotHarness) -> None:
    await harness.send(edited(text_update("/bind")))
    await harness.send(text_update("012 345 678"))  # not in the bind flow: not sent a code
    assert harness.sms.sent == []


async def test_admin_commands_work_in_the_admin_group_and_nothing_else_does(
        harness: BotHarness) -> None:
    await harness.send(in_group(text_update("/credit 555 5 cash-7", user_id=42), ADMIN_GROUP))
    assert "Credited" in group_messages(harness, ADMIN_GROUP)[-1]["text"]
    assert (await harness.components.wallet.available(555)).minor == 500

    await harness.send(in_group(text_update("/wallet", user_id=42), ADMIN_GROUP))
    assert "private chat" in group_messages(harness, ADMIN_GROUP)[-1]["text"]
    # /credit elsewhere is nobody's admin command: refused like any group command.
    await harness.send(in_group(text_update("/credit 555 5 cash-8")))
    assert (await harness.components.wallet.available(555)).minor == 500


async def test_a_payment_message_in_a_group_is_still_recorded_and_answered_privately(
        harness: BotHarness) -> None:
    wallet = harness.components.wallet
    invoice = await wallet.issue_invoice(555, wallet.offered_amounts()[0])
    await harness.send(in_group(successful_payment_update(
        invoice.payload, total_amount=invoice.total_amount, charge_id="tg-group-1",
        currency=invoice.currency)))

    assert await wallet.available(555) == invoice.amount
    await deliver(harness)
    assert group_messages(harness) == []
    assert "Receipt: $5.00 added to your wallet" in harness.api.texts(555)[-1]
