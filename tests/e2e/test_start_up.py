"""Start-up against the Bot API test server: the token refused, the Bot API unreachable.

`topup-bot run` and `topup-bot worker` end with one line on stderr naming the setting and
exit status 2 (a refused token is a bad setting) or 3 (nothing answers); `check-config
--online` makes the same getMe check. Nothing here touches the internet: the unreachable
Bot API is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest

from storage.crypto import generate_fernet_key
from tests.e2e.botapi import BotApiServer
from tests.e2e.process import BotProcess, run_cli

REFUSED_TOKEN = "7000000002:AAH-a-token-this-server-does-not-know-xyz"
# Configured keys: no key file is generated, so no warning line joins the one we expect.
KEYS = {"ENCRYPTION_KEYS": generate_fernet_key(),
        "BLIND_INDEX_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
COMMANDS = [pytest.param("run", id="run"), pytest.param("worker --name w1", id="worker")]


def tables(database: Path) -> set[str]:
    if not database.exists():
        return set()
    with sqlite3.connect(database) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return names


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_token_stops_start_up_with_one_line_and_status_2(
        botapi: BotApiServer, tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    with BotProcess(botapi, data, env={**KEYS, "TELEGRAM_BOT_TOKEN": REFUSED_TOKEN},
                    command=command) as bot:
        status = bot.wait_for_exit()
    assert status == 2, bot.output_tail()
    assert bot.stderr_lines() == [f"topup-bot: TELEGRAM_BOT_TOKEN: the Bot API at "
                                  f"{botapi.base_url} refused the token (Unauthorized)"]
    assert bot.stdout == ""
    assert REFUSED_TOKEN.split(":")[1] not in bot.stderr
    assert [call.error_code for call in botapi.calls_of("getMe")] == [401]
    assert [call.method for call in botapi.calls] == ["getMe"]  # nothing after the refusal
    assert "alembic_version" not in tables(data / "topup.db")  # refused before migrating


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_bot_api_stops_start_up_with_one_line_and_status_3(
        botapi: BotApiServer, tmp_path: Path, closed_port: int, command: str) -> None:
    nowhere = f"http://127.0.0.1:{closed_port}"
    with BotProcess(botapi, tmp_path / "data", command=command,
                    env={**KEYS, "TELEGRAM_API_BASE_URL": nowhere}) as bot:
        status = bot.wait_for_exit()
    assert status == 3, bot.output_tail()
    assert bot.stderr_lines() == [f"topup-bot: TELEGRAM_API_BASE_URL: cannot reach the Bot API "
                                  f"at {nowhere} (connection refused)"]


def test_run_asks_getme_once_and_then_polls(botapi: BotApiServer, tmp_path: Path) -> None:
    with BotProcess(botapi, tmp_path / "data", env=KEYS) as bot:
        bot.wait_until_polling()
        assert len(botapi.calls_of("getMe")) == 1  # the check's; initialize() reuses it
        assert bot.stop() == 0
    assert "Traceback" not in bot.stderr


def test_check_config_online_asks_getme(botapi: BotApiServer, tmp_path: Path) -> None:
    done = run_cli(botapi, tmp_path / "data", "check-config", "--online", env=KEYS)
    assert done.returncode == 0, done.stderr
    assert (f"Bot API: {botapi.base_url} accepts the token (@{botapi.bot_username})"
            in done.stdout.splitlines())
    assert done.stdout.rstrip().endswith("Configuration is valid.")
    assert [call.ok for call in botapi.calls_of("getMe")] == [True]
    assert [call.method for call in botapi.calls] == ["getMe"]


def test_check_config_without_online_does_not_ask(botapi: BotApiServer,
                                                  tmp_path: Path) -> None:
    done = run_cli(botapi, tmp_path / "data", "check-config", env=KEYS)
    assert done.returncode == 0, done.stderr
    assert botapi.calls == []


def test_check_config_online_refused_token_is_status_2(botapi: BotApiServer,
                                                      tmp_path: Path) -> None:
    done = run_cli(botapi, tmp_path / "data", "check-config", "--online",
                   env={**KEYS, "TELEGRAM_BOT_TOKEN": REFUSED_TOKEN})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"topup-bot: TELEGRAM_BOT_TOKEN: the Bot API at "
                                        f"{botapi.base_url} refused the token (Unauthorized)"]


def test_check_config_online_unreachable_bot_api_is_status_3(
        botapi: BotApiServer, tmp_path: Path, closed_port: int) -> None:
    nowhere = f"http://127.0.0.1:{closed_port}"
    done = run_cli(botapi, tmp_path / "data", "check-config", "--online",
                   env={**KEYS, "TELEGRAM_API_BASE_URL": nowhere})
    assert done.returncode == 3
    assert done.stderr.splitlines() == [f"topup-bot: TELEGRAM_API_BASE_URL: cannot reach the "
                                        f"Bot API at {nowhere} (connection refused)"]


def test_run_against_an_unreachable_database_is_status_3(
        botapi: BotApiServer, tmp_path: Path, closed_port: int) -> None:
    url = f"postgresql+asyncpg://u@127.0.0.1:{closed_port}/x"
    with BotProcess(botapi, tmp_path / "data", env={**KEYS, "DATABASE_URL": url}) as bot:
        status = bot.wait_for_exit()
    assert status == 3, bot.output_tail()
    assert bot.stderr_lines() == [f"topup-bot: DATABASE_URL: cannot reach the database at "
                                  f"127.0.0.1:{closed_port} (connection refused)"]
    assert botapi.calls == []  # the database is checked first
