"""What the end-to-end tests share: a deployment (one Bot API test server, one data directory,
`topup-bot run` processes in turn), a user's chat with the bot, and binding a line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.i18n import Gettext, Translations
from storage.crypto import FieldCipher, resolve_keys
from tests.e2e.botapi import BotApiServer, BotMessage, TelegramUser
from tests.e2e.process import BotProcess, run_cli

CELLCARD_TYPED = "012 345 678"
CELLCARD = "+85512345678"
MASKED = "012 ••• 678"
ZONE = ZoneInfo("Asia/Phnom_Penh")  # DEFAULT_TIMEZONE
CATALOGS = Translations()

GREETING = (
    "Hello, {name}! I keep your Cambodian prepaid and eSIM lines alive.\n\n"
    "Add your Smart, Cellcard, Metfone or Seatel number, pick a plan, and I top it "
    "up for you: on a calendar, when the balance runs low, or just before the line "
    "would expire. You approve charges with one tap, and I send balance warnings and "
    "receipts right here.\n\n/help lists what I can do.")
CODE_SENT = ("I sent a 6-digit code by SMS to {line} ({operator}). Type it here to prove the "
             "line is yours.")
BOUND = ("Done: {line} ({operator}) is bound to you. Next: pick a plan or set up "
         "auto-recharge from /lines.")
ASK_NUMBER = ("Which line should I look after? Tap \"Share my number\" for this phone's line, "
              "or type the number (012 345 678 or +855 12 345 678).")


# -- the deployment: one Bot API server, one data directory, bot processes in turn -----------


class Deployment:
    """Starts `topup-bot run` processes on one data directory; ends them all at teardown."""

    def __init__(self, server: BotApiServer, data_dir: Path) -> None:
        self.server = server
        self.data_dir = data_dir
        self.processes: list[BotProcess] = []

    @property
    def bot(self) -> BotProcess:
        """The `topup-bot run` process started last."""
        return [process for process in self.processes if process.command == "run"][-1]

    def cipher(self) -> FieldCipher:
        """The field cipher of the bot's generated keys (DATA_DIR/keys.json)."""
        return FieldCipher(resolve_keys(self.data_dir, [], None))

    @property
    def db(self) -> Path:
        return self.data_dir / "topup.db"

    def start(self, env: dict[str, str] | None = None) -> BotProcess:
        """A new process, once it polls for updates (the previous one must have ended)."""
        running = [p for p in self.processes if p.command == "run" and p.running]
        assert not running, "stop or kill the running bot first"
        process = BotProcess(self.server, self.data_dir, env=env)
        self.processes.append(process)
        process.start()
        process.wait_until_polling()
        return process

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> BotProcess:
        """A `topup-bot worker` beside the bot, once it logs that it runs."""
        process = BotProcess(self.server, self.data_dir, env=env, command=f"worker --name {name}")
        self.processes.append(process)
        process.start()
        process.wait_for_stderr(rf"Worker {name} running", timeout=30)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An operator's `topup-bot` command on this deployment's data."""
        return run_cli(self.server, self.data_dir, *args)

    def cleanup(self) -> None:
        for process in self.processes:
            process.cleanup()

    def assert_healthy(self) -> None:
        """No process logged an error or a traceback, and no user was told "went wrong"."""
        for process in self.processes:
            bad = [line for line in process.stderr_lines()
                   if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
            assert not bad, f"{process} logged errors:\n" + "\n".join(bad) + \
                f"\n{process.output_tail()}"
        with self.server.state.lock:
            chats = list(self.server.state.chats)
        for chat_id in chats:
            for message in self.server.chat_messages(chat_id):
                assert "went wrong" not in message.content, message.content

    # -- the database, read as an operator would (sqlite3, no bot code) ---------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.db, timeout=10)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Polls the database through ``condition`` until it holds (the bot writes on its
        own schedule, which no Bot API call announces)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g} s: {what}\n"
                                     f"{self.bot.output_tail()}")
            time.sleep(0.05)  # between two looks at the database, until the deadline

    def persisted(self, conversation: str, user_id: int) -> tuple[str | None, dict[str, Any]]:
        """The stored state of ``conversation`` for a private chat, and the user's user_data."""
        state = None
        for key, value in self.query("SELECT key, state FROM ptb_conversations WHERE name = ?",
                                     conversation):
            if json.loads(key) == [user_id, user_id]:  # (chat id, user id)
                state = json.loads(value)
        rows = self.query("SELECT data_enc FROM ptb_user_data WHERE user_id = ?", user_id)
        data = json.loads(self.cipher().decrypt(rows[0][0])) if rows else {}
        return state, data

    def wait_until_persisted(self, conversation: str, user_id: int, state: str | None,
                             user_data: Callable[[dict[str, Any]], bool],
                             timeout: float = 10.0) -> dict[str, Any]:
        """Polls the persistence tables until the bot wrote that conversation state and
        user_data (PTB writes them every second); the user_data. ``state`` None: the
        conversation has ended."""
        deadline = time.monotonic() + timeout
        while True:
            found_state, data = self.persisted(conversation, user_id)
            if found_state == state and user_data(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{conversation!r} for user {user_id} was not persisted as {state!r} "
                    f"within {timeout:g} s: state {found_state!r}, user_data {data!r}\n"
                    f"{self.bot.output_tail()}")
            time.sleep(0.05)  # between two looks at the database, until the deadline


UNTHROTTLED = pytest.mark.parametrize("deployment", ["unthrottled"], indirect=True)


# -- the user's side ---------------------------------------------------------------------------


class Chat:
    """One user's private chat with the bot: say something or tap a button, and read the
    bot's very next message (or edit), which must contain what the test expects."""

    def __init__(self, deployment: Deployment, user: TelegramUser) -> None:
        self.deployment = deployment
        self.user = user

    def next(self, expected: str, *, edits: bool = False, timeout: float = 10.0) -> BotMessage:
        message = self.user.wait_for_message(None, timeout, edits=edits)
        assert expected in message.content, (
            f"expected {expected!r} in the bot's next message, got {message.content!r}\n"
            f"chat:\n{self.user.transcript()}\n{self.deployment.bot.output_tail()}")
        return message

    def say(self, text: str, expected: str, *, edits: bool = False) -> BotMessage:
        if text.startswith("/"):
            self.user.send_command(text)
        else:
            self.user.send_text(text)
        return self.next(expected, edits=edits)

    def tap(self, message: BotMessage, button: str, expected: str, *,
            edits: bool = False) -> BotMessage:
        query = self.user.press(message, button_text=button)
        self.user.wait_for_answer(query)
        return self.next(expected, edits=edits)

    def tap_answer(self, message: BotMessage, button: str) -> str | None:
        """Taps a button and returns the text of the bot's callback answer (a toast)."""
        return self.user.wait_for_answer(self.user.press(message, button_text=button)).text


def english(text: str) -> str:
    return text


def bind_cellcard(chat: Chat, _: Gettext = english) -> None:
    """/bind, type the number, type the code from the SMS: the line is bound."""
    bot = chat.deployment.bot
    chat.say("/bind", _(ASK_NUMBER))
    mark = bot.mark()
    chat.say(CELLCARD_TYPED, _(CODE_SENT).format(line=MASKED, operator="Cellcard"))
    code = bot.sms_code(CELLCARD, after=mark)
    chat.say(code, _(BOUND).format(line=MASKED, operator="Cellcard"))
