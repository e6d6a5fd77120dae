"""/start, /help and unknown commands through the real Application."""

from __future__ import annotations

import pytest
from telegram.ext import CommandHandler, ConversationHandler

from handlers import callback_data as cb
from handlers.start import COMMANDS
from storage.users import UsersRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard
from tests.flow.recording import callback_update, text_update


async def test_start_greets_and_registers_the_user(harness: BotHarness) -> None:
    await harness.send(text_update("/start", user_id=901, language="km", first_name="Sokha"))

    texts = harness.api.texts(chat_id=901)
    assert len(texts) == 1
    assert "Sokha" in texts[0]
    assert "/help" in texts[0]
    async with harness.components.db.read() as conn:
        user = await UsersRepository(conn).get(901)
    assert user is not None
    assert user.language == "km"


async def test_start_with_an_unknown_deep_link_payload_still_greets(harness: BotHarness) -> None:
    await harness.send(text_update("/start bogus-payload-<script>", user_id=902))

    texts = harness.api.texts(chat_id=902)
    assert len(texts) == 1
    assert "Cambodian" in texts[0]


async def test_start_twice_keeps_one_user(harness: BotHarness) -> None:
    await harness.send(text_update("/start", user_id=903, language="en"))
    await harness.send(text_update("/start", user_id=903, language="zh-hans"))

    async with harness.components.db.read() as conn:
        user = await UsersRepository(conn).get(903)
    assert user is not None
    assert user.language == "en"
    assert len(harness.api.texts(chat_id=903)) == 2


async def test_help_lists_every_command_a_user_has_from_one_table(
        harness: BotHarness) -> None:
    await harness.send(text_update("/help", user_id=904))

    (text,) = harness.api.texts(chat_id=904)
    listed = {line.split(" - ")[0].lstrip("/") for line in text.splitlines()[1:]}
    assert {"start", "help", "wallet", "lines", "esim"} <= listed
    # Every command the Application answers outside the admin chats is in the table, and
    # nothing else: /help and the command menu cannot drift from the handlers.
    registered: set[str] = set()
    admin_only: set[str] = set()
    for group in harness.app.handlers.values():
        for handler in group:
            found = list(_commands_of(handler))
            # Admin commands carry a chat filter (ADMIN_CHAT_IDS): they are not a user's.
            if isinstance(handler, CommandHandler) and handler.filters is not None \
                    and "Chat" in repr(handler.filters):
                admin_only.update(found)
            else:
                registered.update(found)
    assert registered - admin_only == {command for command, _ in COMMANDS}
    assert listed == {command for command, _ in COMMANDS}


def _commands_of(handler: object) -> set[str]:
    """The commands a handler (or a conversation's entry points and fallbacks) answers."""
    if isinstance(handler, CommandHandler):
        return set(handler.commands)
    if isinstance(handler, ConversationHandler):
        found: set[str] = set()
        for inner in [*handler.entry_points, *handler.fallbacks]:
            found |= _commands_of(inner)
        return found
    return set()


async def test_unknown_command_is_answered_and_writes_nothing(harness: BotHarness) -> None:
    await harness.send(text_update("/frobnicate", user_id=905))

    (text,) = harness.api.texts(chat_id=905)
    assert "/help" in text
    async with harness.components.db.read() as conn:
        assert await UsersRepository(conn).get(905) is None


async def test_start_command_menu_is_set_at_start_up(harness: BotHarness) -> None:
    await harness.app.post_init(harness.app)  # type: ignore[misc]

    calls = harness.api.sent("setMyCommands")
    assert [call.get("language_code") for call in calls] == [None, "km", "zh"]
    assert all("start" in str(call["commands"]) for call in calls)


async def test_a_server_without_set_my_commands_does_not_stop_start_up(
        harness: BotHarness, caplog: pytest.LogCaptureFixture) -> None:
    harness.api.unsupported.add("setMyCommands")

    await harness.app.post_init(harness.app)  # type: ignore[misc]

    assert "setMyCommands failed" in caplog.text
    await harness.send(text_update("/help", user_id=906))
    assert len(harness.api.texts(chat_id=906)) == 1


async def test_an_error_in_a_handler_is_logged_and_the_user_told(
        harness: BotHarness, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("database exploded")

    monkeypatch.setattr(harness.components.users, "greet", broken)

    await harness.send(text_update("/start", user_id=907))

    (text,) = harness.api.texts(chat_id=907)
    assert "went wrong" in text
    assert "database exploded" not in text
    assert "database exploded" in caplog.text


@pytest.mark.parametrize(("telegram_code", "language"), [("en", "en"), ("km", "km"),
                                                          ("zh-hans", "zh_Hans")])
async def test_an_unexpected_error_is_logged_and_told_in_the_users_language(
        harness: BotHarness, telegram_code: str, language: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(update: object, context: object) -> None:
        raise RuntimeError("a bug")

    harness.app.add_handler(CommandHandler("boom", broken), group=-5)
    await harness.send(text_update("/boom", language=telegram_code))

    expected = harness.components.i18n.gettext(language)(
        "Sorry, something went wrong on my side. Nothing was charged; please try again.")
    assert expected in harness.api.texts()
    assert language == "en" or "went wrong" not in expected
    assert any(record.exc_info and "a bug" in str(record.exc_info[1])
               for record in caplog.records)


async def test_start_for_a_returning_user_shows_their_lines_wallet_and_main_actions(
        harness: BotHarness) -> None:
    line_id = await bind(harness, "+85512345678", user_id=555)
    await harness.send(text_update("/start", user_id=555))

    welcome = harness.api.sent()[-1]
    assert welcome["text"].startswith("Welcome back, Dara! Tap a line to see it")
    assert "Wallet: $0.00" in welcome["text"] and "/autorecharge" in welcome["text"]
    assert keyboard(welcome) == [("012 ••• 678 · Cellcard", cb.encode("ln", line_id, "show")),
                       ("➕ Add a line", cb.encode("mnb", "bind"))]
    await harness.send(callback_update(cb.encode("ln", line_id, "show"), user_id=555))
    assert "012 ••• 678" in harness.api.sent("editMessageText")[-1]["text"]
