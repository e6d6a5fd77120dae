"""bot/startup.py: each start-up failure as a setting, a cause in words and an exit status."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot.settings import StorageSettings, TelegramSettings
from bot.startup import (
    EXIT_BAD_SETTING,
    EXIT_UNREACHABLE,
    StartupFailure,
    bot_api_failures,
    check_database,
    os_cause,
)
from storage.db import Database
from tests.conftest import NO_POSTGRES, POSTGRES_URL

TOKEN = "123456789:AAH-example_token_abcdefghijklmnop"
ROOT = "http://127.0.0.1:8081"


def telegram() -> TelegramSettings:
    return TelegramSettings(_env_file=None, TELEGRAM_BOT_TOKEN=TOKEN,  # type: ignore[call-arg]
                            TELEGRAM_API_BASE_URL=ROOT)


async def failure_of(error: Exception) -> StartupFailure:
    with pytest.raises(StartupFailure) as caught:
        async with bot_api_failures(telegram()):
            raise error
    return caught.value


def refused_connection() -> NetworkError:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
        except OSError as os_error:
            raise NetworkError("httpx.ConnectError: All connection attempts failed") \
                from os_error
    except NetworkError as wrapped:
        return wrapped


@pytest.mark.parametrize(("error", "setting", "cause", "status"), [
    pytest.param(InvalidToken(f"The token `{TOKEN}` was rejected by the server."),
                 "TELEGRAM_BOT_TOKEN", f"the Bot API at {ROOT} refused the token (The token "
                 "`***` was rejected by the server.)", EXIT_BAD_SETTING, id="invalid-token"),
    pytest.param(refused_connection(), "TELEGRAM_API_BASE_URL",
                 f"cannot reach the Bot API at {ROOT} (connection refused)", EXIT_UNREACHABLE,
                 id="refused"),
    pytest.param(TimedOut(), "TELEGRAM_API_BASE_URL",
                 f"cannot reach the Bot API at {ROOT} (timed out)", EXIT_UNREACHABLE,
                 id="timed-out"),
    pytest.param(NetworkError("Bad Gateway"), "TELEGRAM_API_BASE_URL",
                 f"cannot reach the Bot API at {ROOT} (Bad Gateway)", EXIT_UNREACHABLE,
                 id="bad-gateway"),
    pytest.param(RetryAfter(30), "TELEGRAM_API_BASE_URL",
                 f"the Bot API at {ROOT} asks to wait (Flood control exceeded. Retry in 30 "
                 "seconds)", EXIT_UNREACHABLE, id="retry-after"),
    pytest.param(BadRequest("Method not found"), "TELEGRAM_API_BASE_URL",
                 f"the Bot API at {ROOT} refused the request (Method not found)",
                 EXIT_BAD_SETTING, id="bad-request"),
    pytest.param(Forbidden("Forbidden"), "TELEGRAM_API_BASE_URL",
                 f"unexpected answer from the Bot API at {ROOT} (Forbidden)", EXIT_BAD_SETTING,
                 id="forbidden"),
    pytest.param(TelegramError("Invalid server response"), "TELEGRAM_API_BASE_URL",
                 f"unexpected answer from the Bot API at {ROOT} (Invalid server response)",
                 EXIT_BAD_SETTING, id="not-a-bot-api"),
])
async def test_bot_api_failures(error: Exception, setting: str, cause: str,
                                status: int) -> None:
    failure = await failure_of(error)
    assert (failure.setting, failure.cause, failure.exit_status) == (setting, cause, status)
    assert str(failure) == f"{setting}: {cause}"
    assert TOKEN not in str(failure)


async def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError):
        async with bot_api_failures(telegram()):
            raise KeyError("not a Bot API failure")


@pytest.mark.parametrize(("error", "cause"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 1)"),
     "connection refused"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "unknown host: name or service not known"),
    (TimeoutError(), "timed out"),
    (OSError(errno.ENETUNREACH, "whatever the library says"), "network is unreachable"),
    (RuntimeError("no operating system reason"), None),
])
def test_os_cause(error: BaseException, cause: str | None) -> None:
    assert os_cause(error) == cause


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES)
async def test_a_database_the_server_does_not_have_is_a_bad_setting(tmp_path: Path) -> None:
    url = POSTGRES_URL.rpartition("/")[0] + "/no_such_database_here"
    storage = StorageSettings(_env_file=None, DATA_DIR=tmp_path,  # type: ignore[call-arg]
                              DATABASE_URL=url)
    db = Database(url)
    try:
        with pytest.raises(StartupFailure) as caught:
            await check_database(db, storage)
    finally:
        await db.dispose()
    assert caught.value.exit_status == EXIT_BAD_SETTING
    assert caught.value.setting == "DATABASE_URL"
    assert caught.value.cause.endswith(
        'refused the connection (database "no_such_database_here" does not exist)')
