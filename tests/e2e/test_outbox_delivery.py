"""The outbox's Telegram side (handlers/outbox.py) against our Bot API test server: what it
sends, edits in place, and how Telegram's real error answers map to the dispatcher's
outcomes (sent, throttled, unreachable, transient, rejected)."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from telegram import Bot

from bot.clock import ManualClock
from bot.i18n import Translations
from bot.services.charging import APPROVAL_REQUEST, CHARGE_EXPIRED, RECEIPT
from bot.services.notifications import (
    Delivered,
    NotificationDispatcher,
    Outgoing,
    Rejected,
    Throttled,
    Transient,
    Unreachable,
)
from bot.services.users import UsersService
from handlers.outbox import TelegramDeliverer
from storage.db import Database
from storage.notifications import NotificationsRepository, NotificationStatus
from tests.e2e.botapi import BotApiServer

CHAT = 3101
PARAMS = {"charge_id": 7, "line": "Home (012 ••• 678)", "amount_minor": 500,
          "currency": "USD", "reason": "manual", "wallet_minor": 1000,
          "wallet_currency": "USD", "cause": "manual"}


def outgoing(kind: str, *, chat: int = CHAT, replaces: int | None = None,
             params: dict[str, object] | None = None) -> Outgoing:
    return Outgoing(id=1, user_id=chat, chat_id=chat, kind=kind,
                    params=dict(params or PARAMS), dedupe_key=f"{kind}:7",
                    replaces_message_id=replaces)


@pytest.fixture
def deliver(bot: Bot, db: Database, clock: ManualClock) -> TelegramDeliverer:
    users = UsersService(db, clock, ZoneInfo("Asia/Phnom_Penh"))
    return TelegramDeliverer(bot, users, Translations())


async def test_a_request_is_sent_with_its_buttons_and_an_expiry_edits_it(
        deliver: TelegramDeliverer, botapi: BotApiServer) -> None:
    user = botapi.user(CHAT)
    sent = await deliver(outgoing(APPROVAL_REQUEST))
    assert isinstance(sent, Delivered) and sent.message_id is not None
    request = user.message(sent.message_id)
    assert "Top up Home (012 ••• 678)?" in request.content
    assert request.button_texts == ["✅ Approve", "✖️ Decline"]

    expired = await deliver(outgoing(CHARGE_EXPIRED, replaces=sent.message_id))

    assert expired == Delivered(sent.message_id)
    edited = user.message(sent.message_id)
    assert "expired" in edited.content and edited.button_texts == []
    assert len(user.messages()) == 1  # edited in place, nothing new


async def test_a_message_that_cannot_be_edited_goes_out_as_a_new_one(
        deliver: TelegramDeliverer, botapi: BotApiServer) -> None:
    user = botapi.user(CHAT)
    result = await deliver(outgoing(CHARGE_EXPIRED, replaces=987654))
    assert isinstance(result, Delivered) and result.message_id != 987654
    assert "expired" in user.messages()[-1].content


async def test_a_user_who_blocked_the_bot_is_unreachable(
        deliver: TelegramDeliverer, botapi: BotApiServer) -> None:
    botapi.user(CHAT).block()
    result = await deliver(outgoing(APPROVAL_REQUEST))
    assert isinstance(result, Unreachable) and "blocked" in result.reason


async def test_an_unknown_chat_is_unreachable(deliver: TelegramDeliverer) -> None:
    assert isinstance(await deliver(outgoing(APPROVAL_REQUEST, chat=999_999)), Unreachable)


async def test_flood_control_is_throttled_with_telegrams_wait(
        deliver: TelegramDeliverer, botapi: BotApiServer) -> None:
    botapi.user(CHAT)
    botapi.inject_error("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    result = await deliver(outgoing(APPROVAL_REQUEST))
    assert result == Throttled(3.0)


async def test_server_trouble_is_transient_and_a_bad_message_is_rejected(
        deliver: TelegramDeliverer, botapi: BotApiServer) -> None:
    botapi.user(CHAT)
    botapi.inject_error("sendMessage", 502, "Bad Gateway")
    assert isinstance(await deliver(outgoing(APPROVAL_REQUEST)), Transient)
    botapi.inject_error("sendMessage", 400, "Bad Request: message is too long")
    rejected = await deliver(outgoing(APPROVAL_REQUEST))
    assert isinstance(rejected, Rejected) and "too long" in rejected.reason
    assert isinstance(await deliver(outgoing("no_such_kind")), Rejected)


async def test_the_message_is_in_the_readers_language(
        deliver: TelegramDeliverer, botapi: BotApiServer, db: Database,
        clock: ManualClock) -> None:
    user = botapi.user(CHAT, language_code="km")
    await UsersService(db, clock, ZoneInfo("Asia/Phnom_Penh")).greet(CHAT, "km")
    clock.advance(timedelta(seconds=1))
    result = await deliver(outgoing(APPROVAL_REQUEST))
    assert isinstance(result, Delivered)
    khmer = Translations().gettext("km")
    assert khmer("✅ Approve") in user.messages()[-1].button_texts


async def test_params_that_are_no_notice_of_their_kind_are_rejected_and_the_chat_goes_on(
        deliver: TelegramDeliverer, botapi: BotApiServer, db: Database,
        clock: ManualClock) -> None:
    """A stored message that does not decode (a key missing or of a wrong type) is refused
    for good, with the reason, and never shows as "?" text; the chat's next message goes."""
    user = botapi.user(CHAT)
    rejected = await deliver(outgoing(RECEIPT, params={**PARAMS, "amount_minor": "five"}))
    assert isinstance(rejected, Rejected) and "receipt: amount_minor" in rejected.reason
    assert user.messages() == []

    await UsersService(db, clock, ZoneInfo("Asia/Phnom_Penh")).greet(CHAT, "en")
    async with db.write() as conn:
        outbox = NotificationsRepository(conn)
        await outbox.enqueue(user_id=CHAT, chat_id=CHAT, dedupe_key="approval:6",
                             kind=APPROVAL_REQUEST, params={"charge_id": 6}, now=clock.now())
        await outbox.enqueue(user_id=CHAT, chat_id=CHAT, dedupe_key="approval:7",
                             kind=APPROVAL_REQUEST, params=PARAMS, now=clock.now())
    dispatcher = NotificationDispatcher(db, clock, deliver)

    first = await dispatcher.dispatch_round()
    clock.advance(timedelta(seconds=2))
    second = await dispatcher.dispatch_round()

    assert (first.failed, first.problems, second.sent) == (1, [], 1)
    async with db.read() as conn:
        outbox = NotificationsRepository(conn)
        broken, good = await outbox.by_key("approval:6"), await outbox.by_key("approval:7")
    assert broken is not None and broken.status is NotificationStatus.FAILED
    assert broken.last_error is not None and "approval_request: line is missing" in (
        broken.last_error)
    assert good is not None and good.status is NotificationStatus.SENT
    [sent] = user.messages()
    assert "Top up Home (012 ••• 678)?" in sent.content
