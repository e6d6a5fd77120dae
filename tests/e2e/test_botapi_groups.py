"""Groups on the Bot API test server, through python-telegram-bot's own Bot: the bot sends to
a group, a member replies (the update carries reply_to_message, one level deep), privacy
mode decides what the bot receives, and a group's own flood limit (20 messages a minute)."""

from __future__ import annotations

import pytest
from telegram import Bot, Update
from telegram.constants import ChatType
from telegram.error import Forbidden, RetryAfter

from tests.e2e.botapi import BotApiServer

ADMINS = -1001234567890


async def take_updates(bot: Bot) -> list[Update]:
    """Updates now queued, confirmed so the next call does not see them again."""
    updates = list(await bot.get_updates(timeout=0))
    if updates:
        await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    return updates


async def test_a_member_replies_to_the_bots_message_in_a_supergroup(
        bot: Bot, botapi: BotApiServer) -> None:
    dara = botapi.user(1001, "Dara")
    group = botapi.group(ADMINS, "Operators", members=(dara,))
    asked = await bot.send_message(ADMINS, "Request #1: reply to answer")
    answered = await bot.send_message(ADMINS, "Sent.", reply_to_message_id=asked.message_id)
    assert asked.chat.type == ChatType.SUPERGROUP and asked.chat.title == "Operators"

    reply_id = group.send_text(dara, "We refunded it", reply_to=answered.message_id)

    [update] = await take_updates(bot)
    message = update.message
    assert message is not None and message.message_id == reply_id
    assert (message.chat.id, message.chat.type, message.from_user.id) == (
        ADMINS, ChatType.SUPERGROUP, dara.id)
    replied = message.reply_to_message
    assert replied is not None and replied.message_id == answered.message_id
    assert replied.from_user is not None and replied.from_user.id == botapi.bot_id
    assert replied.text == "Sent."
    # One level only: the replied message's own reply is left out, as Telegram does.
    assert replied.reply_to_message is None
    assert [m.content for m in group.messages()] == ["Request #1: reply to answer", "Sent."]
    assert botapi.chat_messages(ADMINS)[-1].message_id == answered.message_id


async def test_privacy_mode_lets_through_commands_and_replies_to_the_bot_only(
        bot: Bot, botapi: BotApiServer) -> None:
    dara, sokha = botapi.user(1001, "Dara"), botapi.user(1002, "Sokha")
    group = botapi.group(ADMINS, "Operators", members=(dara, sokha))
    mine = await bot.send_message(ADMINS, "hello")

    group.send_text(dara, "good morning everyone")
    theirs = group.send_text(sokha, "morning!")
    group.send_text(dara, "same to you", reply_to=theirs)
    group.send_command(dara, f"/tickets@{botapi.bot_username}")
    group.send_command(dara, "/tickets@some_other_bot")
    group.send_command(sokha, "/resolve 1")
    group.send_text(sokha, "done", reply_to=mine.message_id)

    seen = [update.message.text for update in await take_updates(bot) if update.message]
    assert seen == [f"/tickets@{botapi.bot_username}", "/resolve 1", "done"]
    assert "privacy mode" in group.transcript()


async def test_an_administrator_bot_sees_every_message(bot: Bot, botapi: BotApiServer) -> None:
    dara = botapi.user(1001, "Dara")
    group = botapi.group(ADMINS, "Operators", members=(dara,), bot_is_admin=True)
    group.send_text(dara, "good morning everyone")
    [update] = await take_updates(bot)
    assert update.message is not None and update.message.text == "good morning everyone"


async def test_only_members_write_and_replies_name_a_message_of_the_group(
        botapi: BotApiServer) -> None:
    dara, stranger = botapi.user(1001, "Dara"), botapi.user(1003, "Stranger")
    group = botapi.group(ADMINS, "Operators", members=(dara,))
    with pytest.raises(LookupError, match="not a member"):
        group.send_text(stranger, "let me in")
    with pytest.raises(LookupError, match="no message 99"):
        group.send_text(dara, "re", reply_to=99)
    with pytest.raises(ValueError, match="negative"):
        botapi.group(5, "not a group")


async def test_a_group_takes_20_messages_a_minute_and_a_removed_bot_none(
        bot: Bot, botapi: BotApiServer) -> None:
    fast = BotApiServer(chat_rate=100.0, chat_burst=100)
    with fast:
        fast.group(ADMINS, "Operators")
        async with Bot(fast.token, base_url=f"{fast.base_url}/bot") as client:
            for number in range(20):
                await client.send_message(ADMINS, f"alert {number}")
            with pytest.raises(RetryAfter):
                await client.send_message(ADMINS, "one too many")
        assert fast.stats.rejected_by_chat == {ADMINS: 1}

    botapi.group(ADMINS, "Operators")
    with botapi.state.lock:
        botapi.state.chats[ADMINS].blocked = True
    with pytest.raises(Forbidden, match="kicked from the supergroup chat"):
        await bot.send_message(ADMINS, "anyone?")
