"""Helpers shared by the flow tests: binding a line, reading rows back, moving an update to
another chat, sending what the outbox holds, and looking at what the bot sent (inline
keyboards, the last edit, the last callback answer)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.services.notifications import NotificationDispatcher
from handlers.outbox import TelegramDeliverer
from storage.lines import LineRecord, LinesRepository
from storage.tables import notifications
from storage.users import UserRecord, UsersRepository
from tests.flow.conftest import BotHarness
from tests.flow.recording import contact_update, text_update


async def bind(harness: BotHarness, phone: str, user_id: int = 555) -> int:
    """Binds ``phone`` to ``user_id`` by sharing their own contact (no SMS); the line id."""
    await harness.send(text_update("/start", user_id=user_id))
    await harness.send(text_update("/bind", user_id=user_id))
    await harness.send(contact_update(phone, user_id=user_id, contact_user_id=user_id))
    lines = await harness.components.lines.for_user(user_id)
    assert lines and lines[-1].number.e164 == phone
    return lines[-1].id


async def user_row(harness: BotHarness, user_id: int = 555) -> UserRecord:
    """The stored user ``user_id``; it must exist."""
    async with harness.components.db.read() as conn:
        user = await UsersRepository(conn).get(user_id)
    assert user is not None
    return user


async def line_row(harness: BotHarness, line_id: int) -> LineRecord:
    """The stored line ``line_id``; it must exist."""
    async with harness.components.db.read() as conn:
        line = await LinesRepository(conn, harness.components.cipher).get(line_id)
    assert line is not None
    return line


def in_chat(update: dict[str, Any], chat_id: int) -> dict[str, Any]:
    """The same message or button press in another chat: a supergroup (an admin group, say)
    for a negative id, a private chat otherwise."""
    part = update.get("message") or update["callback_query"]
    if chat_id > 0 and chat_id == int(part["from"]["id"]):
        return update
    moved = copy.deepcopy(update)
    message = moved["message"] if "message" in moved else moved["callback_query"]["message"]
    message["chat"] = ({"id": chat_id, "type": "supergroup", "title": "Operators"}
                       if chat_id < 0 else {"id": chat_id, "type": "private"})
    return moved


def keyboard(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, callback_data) of every inline button of a sent or edited message."""
    markup = params.get("reply_markup")
    if isinstance(markup, str):
        markup = json.loads(markup)
    if not markup:
        return []
    return [(str(button["text"]), str(button.get("callback_data", "")))
            for row in markup.get("inline_keyboard", []) for button in row]


def last_edit(harness: BotHarness) -> dict[str, Any]:
    """The params of the last editMessageText; there must be one."""
    edits = harness.api.sent("editMessageText")
    assert edits, "nothing was edited"
    return edits[-1]


def last_answer(harness: BotHarness) -> dict[str, Any]:
    """The params of the last answerCallbackQuery; there must be one."""
    answers = harness.api.sent("answerCallbackQuery")
    assert answers, "the button press was not answered"
    return answers[-1]


async def deliver(harness: BotHarness, *, rounds: int = 1) -> None:
    """Sends what the outbox holds, as the dispatcher job would. A chat gets one message a
    second, so with ``rounds`` > 1 the clock moves on 1.1 s between rounds while something
    is still pending (the receipt and then the edit of a KHQR's picture, say)."""
    c = harness.components
    dispatcher = NotificationDispatcher(
        c.db, c.clock, TelegramDeliverer(harness.app.bot, c.users, c.i18n, c.esims,
                                         c.support))
    for done in range(1, rounds + 1):
        await dispatcher.run()
        async with c.db.read() as conn:
            pending = (await conn.execute(select(func.count()).select_from(notifications)
                                          .where(notifications.c.status == "pending"))
                       ).scalar_one()
        if not pending or done == rounds:
            return
        assert isinstance(c.clock, ManualClock)
        c.clock.advance(timedelta(seconds=1.1))
