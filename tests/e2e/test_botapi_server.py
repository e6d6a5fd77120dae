"""The Bot API test server, exercised through python-telegram-bot's own Bot and raw HTTP."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    LabeledPrice,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from tests.e2e.botapi import BotApiServer
from tests.e2e.botapi.formatting import parse_formatted
from tests.e2e.conftest import bot_for

YES_NO = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="v1:ap:7:ok"),
                                InlineKeyboardButton("No", callback_data="v1:ap:7:no")]])


def png(width: int, height: int) -> bytes:
    """A valid PNG image of that size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def next_updates(bot: Bot, offset: int | None = None) -> list[Update]:
    """Updates now queued, confirming none (short poll)."""
    return list(await bot.get_updates(offset=offset, timeout=0))


async def take_updates(bot: Bot) -> list[Update]:
    """Updates now queued, confirmed so the next call does not see them again."""
    updates = await next_updates(bot)
    if updates:
        await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    return updates


# -- basics -------------------------------------------------------------------------------


async def test_get_me_returns_a_bot_user(bot: Bot, botapi: BotApiServer) -> None:
    me = await bot.get_me()
    assert me.is_bot is True
    assert me.id == botapi.bot_id
    assert me.username == botapi.bot_username
    assert me.can_join_groups is False and me.supports_inline_queries is False


async def test_wrong_token_is_unauthorized(botapi: BotApiServer) -> None:
    wrong = bot_for(botapi, token="7000000001:not-the-right-token")
    with pytest.raises(InvalidToken):
        await wrong.get_me()
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{botapi.base_url}/bot123:wrong/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_unknown_method_and_path_are_404(botapi: BotApiServer) -> None:
    async with httpx.AsyncClient() as client:
        unknown = await client.post(f"{botapi.api_url}/sendTelepathy", data={"chat_id": "1"})
        elsewhere = await client.get(f"{botapi.base_url}/favicon.ico")
    not_found = {"ok": False, "error_code": 404, "description": "Not Found"}
    assert unknown.status_code == 404 and unknown.json() == not_found
    assert elsewhere.status_code == 404 and elsewhere.json() == not_found
    assert botapi.calls[-1].method == "sendTelepathy" and botapi.calls[-1].error_code == 404


async def test_parameters_arrive_in_every_encoding_and_any_case(botapi: BotApiServer) -> None:
    user = botapi.user(501, "Sokha")
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    async with httpx.AsyncClient() as client:
        as_json = await client.post(f"{botapi.api_url}/sendMessage",
                                    json={"chat_id": user.id, "text": "json",
                                          "reply_markup": markup})
        as_form = await client.post(f"{botapi.api_url}/SENDMESSAGE",
                                    data={"chat_id": str(user.id), "text": "form",
                                          "reply_markup": json.dumps(markup)})
        as_multipart = await client.post(f"{botapi.api_url}/sendmessage",
                                         data={"chat_id": str(user.id), "text": "multipart"},
                                         files={"unused": ("a.txt", b"x", "text/plain")})
        as_query = await client.get(f"{botapi.api_url}/getMe?unused=1")
    for response in (as_json, as_form, as_multipart, as_query):
        assert response.status_code == 200, response.text
        assert response.json()["ok"] is True
    assert as_form.json()["result"]["reply_markup"] == markup
    assert [m.text for m in user.messages()] == ["json", "form", "multipart"]
    assert [c.method for c in botapi.calls] == ["sendMessage"] * 3 + ["getMe"]
    assert botapi.calls[1].params["reply_markup"] == markup
    assert botapi.calls[1].params["chat_id"] == user.id


async def test_error_shapes_are_telegrams(botapi: BotApiServer) -> None:
    async with httpx.AsyncClient() as client:
        no_chat = await client.post(f"{botapi.api_url}/sendMessage",
                                    data={"chat_id": "999", "text": "hi"})
    assert no_chat.status_code == 400
    assert no_chat.json() == {"ok": False, "error_code": 400,
                              "description": "Bad Request: chat not found"}


# -- getting updates -----------------------------------------------------------------------


async def test_long_poll_returns_as_soon_as_the_user_writes(bot: Bot,
                                                            botapi: BotApiServer) -> None:
    user = botapi.user(1001, "Dara", language_code="km")
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await botapi.wait_for_long_poll_async(timeout=5)
    started = time.monotonic()
    user.send_text("hello bot")
    updates = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 1.5
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None and message.text == "hello bot"
    assert message.from_user is not None and message.from_user.language_code == "km"
    assert message.chat.type == "private" and message.chat.id == user.id
    assert abs(message.date.timestamp() - time.time()) < 5  # seconds, not milliseconds

    # Not confirmed yet: the same update again; an offset past it confirms it.
    again = await next_updates(bot)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await next_updates(bot, offset=updates[0].update_id + 1) == []
    assert botapi.pending_updates == []


async def test_offsets_limits_and_negative_offsets(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(1002)
    for text in ("one", "two", "three", "four"):
        user.send_text(text)
    first_two = await bot.get_updates(limit=2, timeout=0)
    assert [u.message.text for u in first_two if u.message] == ["one", "two"]
    ids = [u.update_id for u in first_two]
    assert ids[1] == ids[0] + 1
    rest = await bot.get_updates(offset=ids[1] + 1, timeout=0)
    assert [u.message.text for u in rest if u.message] == ["three", "four"]
    last = await bot.get_updates(offset=-1, timeout=0)
    assert [u.message.text for u in last if u.message] == ["four"]
    assert len(botapi.pending_updates) == 1  # -1 forgot all but the last


async def test_commands_carry_a_bot_command_entity(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(1003)
    user.send_command("/start ref_42")
    user.send_text("see /help for more")
    start, text = await take_updates(bot)
    assert start.message is not None and start.message.text == "/start ref_42"
    assert [(e.type, e.offset, e.length) for e in start.message.entities] == [
        ("bot_command", 0, 6)]
    assert text.message is not None
    assert [(e.type, e.offset, e.length) for e in text.message.entities] == [
        ("bot_command", 4, 5)]


async def test_allowed_updates_filters_later_updates(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(1004)
    await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    user.send_text("ignored")
    assert await next_updates(bot) == []
    await bot.get_updates(timeout=0, allowed_updates=Update.ALL_TYPES)
    user.send_text("seen")
    [update] = await next_updates(bot)
    assert update.message is not None and update.message.text == "seen"


# -- messages, keyboards, callback queries -------------------------------------------------


async def test_press_gives_a_callback_query_that_can_be_answered_once(
        bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2001, "Vanna")
    sent = await bot.send_message(user.id, "Approve $5 top-up?", reply_markup=YES_NO)
    assert sent.reply_markup == YES_NO
    assert sent.from_user is not None and sent.from_user.is_bot

    query_id = user.press(sent.message_id, button_text="Yes")
    [update] = await take_updates(bot)
    query = update.callback_query
    assert query is not None and query.id == query_id
    assert query.data == "v1:ap:7:ok"
    assert query.chat_instance
    assert query.from_user.id == user.id
    assert query.message is not None and query.message.message_id == sent.message_id

    assert await query.answer("Approved", show_alert=True) is True
    answer = botapi.callback_answers[query_id]
    assert answer.text == "Approved" and answer.show_alert is True
    assert user.wait_for_answer(query_id, timeout=1).text == "Approved"
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query_id, text="again")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("no-such-query")


async def test_callback_queries_expire_after_fifteen_minutes() -> None:
    now = [time.time()]
    with BotApiServer(clock=lambda: now[0]) as server:
        user = server.user(2002)
        async with bot_for(server) as bot:
            sent = await bot.send_message(user.id, "Pick", reply_markup=YES_NO)
            query_id = user.press(sent, callback_data="v1:ap:7:no")
            with pytest.raises(BadRequest, match=r"(?i)MESSAGE_TOO_LONG"):
                await bot.answer_callback_query(query_id, text="x" * 201)
            now[0] += 15 * 60 + 1
            with pytest.raises(BadRequest, match=r"(?i)query is too old"):
                await bot.answer_callback_query(query_id)
    assert server.callback_answers == {}


async def test_edits_return_the_message_and_identical_edits_fail(
        bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2003)
    sent = await bot.send_message(user.id, "Approve?", reply_markup=YES_NO)
    edited = await bot.edit_message_text("Approved ✅", chat_id=user.id,
                                         message_id=sent.message_id)
    assert not isinstance(edited, bool)
    assert edited.text == "Approved ✅" and edited.edit_date is not None
    assert edited.reply_markup is None  # no reply_markup given: the keyboard goes
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("Approved ✅", chat_id=user.id,
                                    message_id=sent.message_id)
    relabelled = await bot.edit_message_reply_markup(user.id, sent.message_id,
                                                     reply_markup=YES_NO)
    assert not isinstance(relabelled, bool) and relabelled.reply_markup == YES_NO
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_reply_markup(user.id, sent.message_id, reply_markup=YES_NO)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=user.id, message_id=9999)

    [current] = user.messages()
    assert current.text == "Approved ✅" and current.button_texts == ["Yes", "No"]
    assert [v.text for v in current.history] == ["Approve?", "Approved ✅"]
    assert user.wait_for_message("Approve?", timeout=1).message_id == sent.message_id
    assert user.wait_for_message(edits=True, timeout=1).text == "Approved ✅"


async def test_message_text_limits(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2004)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(user.id, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(user.id, "  \n ")
    longest = await bot.send_message(user.id, "x" * 4096)
    assert longest.text is not None and len(longest.text) == 4096
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(424242, "hello?")


async def test_callback_data_is_limited_to_64_bytes(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2005)

    def keyboard(data: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("B", callback_data=data)]])

    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(user.id, "t", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(user.id, "t", reply_markup=keyboard("é" * 33))  # 66 bytes
    ok = await bot.send_message(user.id, "t", reply_markup=keyboard("x" * 64))
    assert ok.reply_markup is not None


async def test_reply_keyboard_and_contact_sharing(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2006, "Srey", phone_number="+85512345678")
    keyboard = ReplyKeyboardMarkup([[KeyboardButton("Share my number", request_contact=True)]],
                                   one_time_keyboard=True)
    sent = await bot.send_message(user.id, "Tap to share your number", reply_markup=keyboard)
    assert sent.reply_markup is None  # Telegram echoes inline keyboards only
    assert user.reply_keyboard()[0][0]["request_contact"] is True
    user.press_keyboard("Share my number")
    user.send_contact("+85598765432", own=False, first_name="Mum")
    own, other = await take_updates(bot)
    assert own.message is not None and own.message.contact is not None
    assert own.message.contact.user_id == user.id
    assert own.message.contact.phone_number == "+85512345678"
    assert other.message is not None and other.message.contact is not None
    assert other.message.contact.user_id is None
    await bot.send_message(user.id, "Thanks", reply_markup=ReplyKeyboardRemove())
    assert user.reply_keyboard() == []


async def test_formatting_is_parsed_like_telegram(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2007)
    html = await bot.send_message(user.id, "<b>Balance</b>: $5 &amp; <i>30 days</i>",
                                  parse_mode=ParseMode.HTML)
    assert html.text == "Balance: $5 & 30 days"
    assert [(e.type, e.offset, e.length) for e in html.entities] == [
        ("bold", 0, 7), ("italic", 14, 7)]
    md = await bot.send_message(user.id, "📱 *Smart* line 012\\.345", parse_mode="MarkdownV2")
    assert md.text == "📱 Smart line 012.345"
    assert [(e.type, e.offset, e.length) for e in md.entities] == [("bold", 3, 5)]  # UTF-16
    with pytest.raises(BadRequest, match=r"(?i)Character '.' is reserved"):
        await bot.send_message(user.id, "Total: $5.00", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(user.id, "<br>", parse_mode="HTML")
    assert user.messages()[0].parse_mode == "HTML"


def test_markup_parsers_handle_nesting_links_and_code() -> None:
    text, entities = parse_formatted(
        '<a href="https://t.me/x">link</a> <pre><code class="language-py">x&lt;1</code></pre>',
        "HTML")
    assert text == "link x<1"
    assert entities == [{"type": "text_link", "offset": 0, "length": 4, "url": "https://t.me/x"},
                        {"type": "pre", "offset": 5, "length": 3, "language": "py"}]
    text, entities = parse_formatted("*bold _both_* [site](https://a.b/\\)) `a\\`b`",
                                     "MarkdownV2")
    assert text == "bold both site a`b"
    assert [(e["type"], e["offset"], e["length"]) for e in entities] == [
        ("bold", 0, 9), ("italic", 5, 4), ("text_link", 10, 4), ("code", 15, 3)]
    assert entities[2]["url"] == "https://a.b/)"
    text, entities = parse_formatted(">quoted\n>lines\nafter", "MarkdownV2")
    assert text == "quoted\nlines\nafter"
    assert entities == [{"type": "blockquote", "offset": 0, "length": 12}]


async def test_delete_message_marks_it_deleted(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2008)
    sent = await bot.send_message(user.id, "Your code is 123456")
    assert await bot.delete_message(user.id, sent.message_id) is True
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(user.id, sent.message_id)
    [message] = user.messages()
    assert message.deleted is True
    assert user.messages(include_deleted=False) == []


async def test_chat_actions_are_recorded(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2009)
    assert await bot.send_chat_action(user.id, "typing") is True
    with pytest.raises(BadRequest, match=r"(?i)wrong parameter action"):
        await bot.send_chat_action(user.id, "dancing")
    assert user.chat_actions() == ["typing"]


async def test_a_user_who_blocked_the_bot_is_forbidden(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(2010)
    user.block()
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(user.id, "Low balance!")
    [update] = await take_updates(bot)
    assert update.my_chat_member is not None
    assert update.my_chat_member.new_chat_member.status == "kicked"
    user.unblock()
    assert (await bot.send_message(user.id, "Welcome back")).text == "Welcome back"


def test_wait_for_message_times_out_with_the_transcript(botapi: BotApiServer) -> None:
    user = botapi.user(2011, "Kosal")
    user.send_text("/start")
    with pytest.raises(AssertionError, match=r"(?s)no matching message.*user #1: '/start'"):
        user.wait_for_message("Welcome", timeout=0.2)


async def test_wait_for_message_wakes_when_the_bot_sends(bot: Bot,
                                                         botapi: BotApiServer) -> None:
    user = botapi.user(2012)
    waiter = asyncio.create_task(user.wait_for_message_async(lambda m: "Receipt" in m.content,
                                                             timeout=5))
    await asyncio.sleep(0)
    await bot.send_message(user.id, "Processing…")
    await bot.send_message(user.id, "Receipt: $5 to 012 345 678")
    message = await waiter
    assert message.text == "Receipt: $5 to 012 345 678"


# -- flood limits --------------------------------------------------------------------------


RETRY_AFTER_IS_INT = "ignore:.*retry_after.*:DeprecationWarning"


@pytest.mark.filterwarnings(RETRY_AFTER_IS_INT)
async def test_five_messages_at_once_to_one_chat_get_retry_after(
        bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(3001)
    results = await asyncio.gather(*(bot.send_message(user.id, f"n{i}") for i in range(5)),
                                   return_exceptions=True)
    refused = [r for r in results if isinstance(r, RetryAfter)]
    assert len(refused) == 2 and len(results) - len(refused) == 3
    assert all(retry_seconds(r) >= 1 for r in refused)
    stats = botapi.stats
    assert stats.accepted == 3 and stats.rejected == 2
    assert stats.rejected_by_chat == {user.id: 2}
    assert len(stats.send_times) == 3


@pytest.mark.filterwarnings(RETRY_AFTER_IS_INT)
async def test_the_global_rate_is_enforced_across_chats() -> None:
    # 5 at once, then one every 2 s: the 3 sends over the burst are refused for 2 s.
    with BotApiServer(global_rate=0.5, global_burst=5) as server:
        users = [server.user(3100 + i) for i in range(9)]
        async with bot_for(server) as bot:
            results = await asyncio.gather(*(bot.send_message(u.id, "notice")
                                             for u in users[:8]), return_exceptions=True)
        refused = [r for r in results if isinstance(r, RetryAfter)]
        assert len(refused) == 3
        assert all(retry_seconds(r) == 2 for r in refused)
        assert server.stats.accepted == 5 and server.stats.rejected == 3
        assert server.stats.max_in_window(1.0) == 5

        async with httpx.AsyncClient() as client:
            response = await client.post(f"{server.api_url}/sendMessage",
                                         data={"chat_id": str(users[8].id), "text": "raw"})
        assert response.status_code == 429
        assert response.json() == {"ok": False, "error_code": 429,
                                   "description": "Too Many Requests: retry after 2",
                                   "parameters": {"retry_after": 2}}
        assert server.stats.rejected_by_chat[users[8].id] == 1


async def test_rate_limits_can_be_switched_off() -> None:
    with BotApiServer(rate_limits=False) as server:
        user = server.user(3200)
        async with bot_for(server) as bot:
            await asyncio.gather(*(bot.send_message(user.id, f"n{i}") for i in range(10)))
        assert server.stats.accepted == 10 and server.stats.rejected == 0
        assert len(user.messages()) == 10


async def test_injected_errors_reach_the_bot(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(3300)
    botapi.inject_error("sendMessage", 502, "Bad Gateway")
    with pytest.raises(NetworkError, match=r"(?i)Bad Gateway"):
        await bot.send_message(user.id, "first try")
    assert (await bot.send_message(user.id, "second try")).text == "second try"


# -- files ----------------------------------------------------------------------------------


async def test_photos_and_documents_are_stored_and_downloadable(
        bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(4001)
    image = png(3, 2)
    photo_message = await bot.send_photo(user.id, image, caption="Your KHQR")
    largest = photo_message.photo[-1]
    assert (largest.width, largest.height, largest.file_size) == (3, 2, len(image))
    assert photo_message.caption == "Your KHQR"
    assert botapi.file_bytes(largest.file_id) == image
    assert user.messages()[0].data == image

    again = await bot.send_photo(user.id, largest.file_id)
    assert again.photo[-1].file_id == largest.file_id

    receipt = b"%PDF-1.4 receipt"
    doc_message = await bot.send_document(user.id, receipt, filename="receipt.pdf")
    document = doc_message.document
    assert document is not None
    assert (document.file_name, document.mime_type, document.file_size) == (
        "receipt.pdf", "application/pdf", len(receipt))
    assert document.file_id and document.file_unique_id
    downloaded = await (await bot.get_file(document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == receipt

    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await bot.send_photo(user.id, image, caption="c" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
        await bot.send_document(user.id, "no-such-file-id")


async def test_files_a_user_sends_can_be_fetched(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(4002)
    user.send_document(b"Balance: $1.25", "sms.txt", caption="my balance SMS")
    [update] = await take_updates(bot)
    assert update.message is not None and update.message.document is not None
    file = await update.message.document.get_file()
    assert bytes(await file.download_as_bytearray()) == b"Balance: $1.25"


# -- payments -------------------------------------------------------------------------------


async def test_a_stars_invoice_is_paid_refunded_and_can_be_replayed(
        bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(5001, "Bopha")
    invoice = await bot.send_invoice(user.id, "Wallet top-up", "Add 100 Stars to your wallet",
                                     "wallet:5001:1", "XTR", [LabeledPrice("Top-up", 100)],
                                     provider_token="")
    assert invoice.invoice is not None
    assert (invoice.invoice.currency, invoice.invoice.total_amount) == ("XTR", 100)

    attempt = user.pay(invoice.message_id)
    [update] = await take_updates(bot)
    query = update.pre_checkout_query
    assert query is not None and query.id == attempt.query_id
    assert (query.invoice_payload, query.total_amount, query.currency) == (
        "wallet:5001:1", 100, "XTR")
    assert attempt.status == "pending"
    assert await query.answer(ok=True) is True
    assert attempt.status == "approved"

    [paid] = await take_updates(bot)
    assert paid.message is not None
    payment = paid.message.successful_payment
    assert payment is not None
    assert (payment.invoice_payload, payment.total_amount, payment.currency) == (
        "wallet:5001:1", 100, "XTR")
    assert payment.telegram_payment_charge_id == botapi.payments[0].telegram_payment_charge_id

    replayed_id = attempt.replay()
    [replayed] = await take_updates(bot)
    assert replayed.update_id == replayed_id > paid.update_id
    assert replayed.message is not None and replayed.message.successful_payment == payment

    second = user.pay(invoice)
    [second_query] = await take_updates(bot)
    assert second_query.pre_checkout_query is not None
    await second_query.pre_checkout_query.answer(ok=False, error_message="Limit reached")
    assert second.status == "declined" and second.answer is not None
    assert second.answer.error_message == "Limit reached"
    assert await next_updates(bot) == []  # no successful_payment for a declined one

    charge = payment.telegram_payment_charge_id
    assert await bot.refund_star_payment(user.id, charge) is True
    assert [r.telegram_payment_charge_id for r in botapi.refunds] == [charge]
    with pytest.raises(BadRequest, match=r"(?i)CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(user.id, charge)


async def test_invoice_validation(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(5002)
    with pytest.raises(BadRequest, match=r"(?i)STARS_INVOICE_INVALID"):
        await bot.send_invoice(user.id, "Top-up", "Two prices", "p", "XTR",
                               [LabeledPrice("a", 1), LabeledPrice("b", 2)])
    with pytest.raises(BadRequest, match=r"(?i)INVOICE_TITLE_INVALID"):
        await bot.send_invoice(user.id, "T" * 33, "d", "p", "XTR", [LabeledPrice("a", 1)])
    with pytest.raises(BadRequest, match=r"(?i)INVOICE_PAYLOAD_INVALID"):
        await bot.send_invoice(user.id, "T", "d", "p" * 129, "XTR", [LabeledPrice("a", 1)])
    with pytest.raises(BadRequest, match=r"(?i)PAYMENT_PROVIDER_INVALID"):
        await bot.send_invoice(user.id, "T", "d", "p", "USD", [LabeledPrice("a", 500)])
    usd = await bot.send_invoice(user.id, "T", "d", "p", "USD", [LabeledPrice("a", 500)],
                                 provider_token="284685063:TEST:abc")
    assert usd.invoice is not None and usd.invoice.total_amount == 500


async def test_late_pre_checkout_answers_fail() -> None:
    now = [time.time()]
    with BotApiServer(clock=lambda: now[0]) as server:
        user = server.user(5003)
        async with bot_for(server) as bot:
            invoice = await bot.send_invoice(user.id, "T", "d", "p", "XTR",
                                             [LabeledPrice("a", 5)])
            attempt = user.pay(invoice)
            now[0] += 11
            with pytest.raises(BadRequest, match=r"(?i)query is too old"):
                await bot.answer_pre_checkout_query(attempt.query_id, ok=True)
        assert attempt.status == "expired" and attempt.payment is None


# -- commands -------------------------------------------------------------------------------


async def test_commands_are_stored_and_validated(bot: Bot, botapi: BotApiServer) -> None:
    assert await bot.get_my_commands() == ()
    commands = [BotCommand("start", "What this bot does"), BotCommand("help", "All commands")]
    assert await bot.set_my_commands(commands) is True
    assert tuple(await bot.get_my_commands()) == tuple(commands)
    assert botapi.commands == [{"command": "start", "description": "What this bot does"},
                               {"command": "help", "description": "All commands"}]
    await bot.set_my_commands([BotCommand("start", "ចាប់ផ្តើម")], language_code="km")
    assert botapi.commands_for(language_code="km")[0]["description"] == "ចាប់ផ្តើម"
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("TopUp", "camelCase is not allowed")])
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("/start", "no slash")])
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_DESCRIPTION_INVALID"):
        await bot.set_my_commands([BotCommand("topup", "")])


# -- webhooks -------------------------------------------------------------------------------


class _Receiver:
    """A webhook endpoint on 127.0.0.1 that records every POST."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.condition:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.received.append((dict(self.headers), json.loads(body)))
                    receiver.condition.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], Any]]:
        with self.condition:
            if not self.condition.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"the webhook got {len(self.received)} of {count} posts")
            return list(self.received)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    endpoint = _Receiver()
    yield endpoint
    endpoint.close()


async def test_webhook_gets_updates_with_the_secret_and_polling_conflicts(
        bot: Bot, botapi: BotApiServer, receiver: _Receiver) -> None:
    user = botapi.user(6001)
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await botapi.wait_for_long_poll_async(timeout=5)
    assert await bot.set_webhook(receiver.url, secret_token="s3cr3t_Token-1") is True
    with pytest.raises(Conflict, match=r"(?i)terminated by setWebhook"):
        await poll
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates(timeout=0)

    user.send_text("via webhook")
    [(headers, update)] = await asyncio.to_thread(receiver.wait, 1)
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cr3t_Token-1"
    assert headers["Content-Type"] == "application/json"
    assert update["message"]["text"] == "via webhook"

    await asyncio.to_thread(botapi.wait_until, lambda: not botapi.pending_updates, 5)
    info = await bot.get_webhook_info()
    assert info.url == receiver.url and info.pending_update_count == 0

    assert await bot.delete_webhook() is True
    user.send_text("via polling")
    [polled] = await next_updates(bot)
    assert polled.message is not None and polled.message.text == "via polling"
    assert polled.update_id == update["update_id"] + 1
    with pytest.raises(BadRequest, match=r"(?i)secret token contains unallowed characters"):
        await bot.set_webhook(receiver.url, secret_token="not:allowed")


async def test_webhook_retries_after_a_failure() -> None:
    endpoint = _Receiver(statuses=[500, 502])
    try:
        with BotApiServer(webhook_retry_delays=(0.05, 0.05, 0.05)) as server:
            user = server.user(6002)
            async with bot_for(server) as bot:
                await bot.set_webhook(endpoint.url)
                user.send_text("eventually")
                [(_, update)] = await asyncio.to_thread(endpoint.wait, 1)
                assert update["message"]["text"] == "eventually"
                await asyncio.to_thread(server.wait_until, lambda: not server.pending_updates)
                info = await bot.get_webhook_info()
            assert [d.status for d in server.webhook_deliveries] == [500, 502, 200]
            assert info.last_error_message is not None and "502" in info.last_error_message
    finally:
        endpoint.close()


async def test_delete_webhook_can_drop_pending_updates(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(6003)
    user.send_text("stale")
    assert await bot.delete_webhook(drop_pending_updates=True) is True
    assert await next_updates(bot) == []


async def test_every_call_is_recorded(bot: Bot, botapi: BotApiServer) -> None:
    user = botapi.user(7001)
    await bot.send_message(user.id, "hi", reply_markup=YES_NO)
    with pytest.raises(TelegramError):
        await bot.send_message(user.id, "")
    methods = [(c.method, c.ok) for c in botapi.calls]
    assert methods == [("getMe", True), ("sendMessage", True), ("sendMessage", False)]
    sent = botapi.calls_of("sendmessage")[0]
    assert sent.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "v1:ap:7:ok"
    assert botapi.wait_for_call("sendMessage", lambda c: not c.ok, timeout=1).error_code == 400
