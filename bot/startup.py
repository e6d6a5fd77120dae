"""The start-up checks: one set, made by `check-config` and before `run` and `worker` start.

In order, each failing with a ``StartupFailure`` that names the setting to fix:

1. the settings themselves (``bot.settings.load_settings``; the token for run, worker and
   check-config: ``TelegramSettings.require_token``);
2. ``DATA_DIR`` usable: a directory that exists or can be made, and can be written in when
   the bot keeps something there (the SQLite database, the generated key file);
3. the keys load (``ENCRYPTION_KEYS``, ``BLIND_INDEX_KEY`` or ``DATA_DIR/keys.json``);
4. the database is reachable and its schema is one this version knows;
5. the Bot API accepts the token (getMe): always before run and worker, with
   ``check-config --online``.

Steps 2 and 3 are made by ``bot.wiring.build_components`` (every command builds its
components through them), 4 and 5 by ``check_start_up``. A failure is a bad setting (exit
status 2) or something unreachable (exit status 3).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from bot.settings import Settings, StorageSettings, TelegramSettings
from storage import migrate
from storage.crypto import FieldCipher, KeyConfigError, resolve_keys
from storage.db import Database

if TYPE_CHECKING:
    from telegram import Bot, User

EXIT_BAD_SETTING = 2
EXIT_UNREACHABLE = 3
DATABASE_TIMEOUT_SECONDS = 10.0

# SQLSTATEs a PostgreSQL server (or the driver) gives when it cannot take the connection now:
# the setting is right, the database is not there yet. Any other answer refuses the setting.
_UNAVAILABLE_SQLSTATES = ("08", "57P03", "53300")


class StartupFailure(Exception):
    """A start-up check failed: ``setting`` to fix, ``cause`` in words, the exit status."""

    def __init__(self, setting: str, cause: str, exit_status: int) -> None:
        super().__init__(f"{setting}: {cause}")
        self.setting = setting
        self.cause = cause
        self.exit_status = exit_status


def bad_setting(setting: str, cause: str) -> StartupFailure:
    return StartupFailure(setting, cause, EXIT_BAD_SETTING)


def unreachable(setting: str, cause: str) -> StartupFailure:
    return StartupFailure(setting, cause, EXIT_UNREACHABLE)


# -- 2. DATA_DIR ---------------------------------------------------------------------------


def data_dir_in_use(settings: Settings) -> bool:
    """True when the bot keeps files in DATA_DIR: the default SQLite database, or a key
    that is not configured and so lives in DATA_DIR/keys.json."""
    security = settings.security
    return (settings.storage.database_url is None or not security.encryption_keys
            or not security.blind_index_key)


def prepare_data_dir(settings: Settings) -> Path:
    """DATA_DIR made if missing (as start-up always has), and proven writable when in use."""
    path = settings.storage.data_dir
    if path.exists() and not path.is_dir():
        raise bad_setting("DATA_DIR", f"{path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bad_setting("DATA_DIR", f"cannot create {path} ({os_cause(exc)})") from None
    if data_dir_in_use(settings):
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise bad_setting("DATA_DIR", f"cannot write in {path} ({os_cause(exc)})") from None
    return path


# -- 3. keys -------------------------------------------------------------------------------


def load_cipher(settings: Settings) -> FieldCipher:
    """The field cipher from the configured keys (or DATA_DIR/keys.json, made once)."""
    security = settings.security
    try:
        return FieldCipher(resolve_keys(
            settings.storage.data_dir,
            [key.get_secret_value() for key in security.encryption_keys],
            security.blind_index_key.get_secret_value() if security.blind_index_key else None))
    except KeyConfigError as exc:
        raise bad_setting(exc.setting, exc.cause) from None


# -- 4. database, 5. token -----------------------------------------------------------------


@dataclass(frozen=True)
class StartupReport:
    schema_revision: str | None  # None: an empty database (`run` creates the schema)
    bot: User | None  # who the token belongs to, when the Bot API was asked


async def check_start_up(settings: Settings, db: Database,
                         bot: Bot | None = None) -> StartupReport:
    """Checks 4 and 5: the database, then (with ``bot``) the token. After a successful
    token check ``bot`` is initialized (PTB's Application.initialize then skips getMe)."""
    revision = await check_database(db, settings.storage)
    me = None if bot is None else await check_token(bot, settings.telegram)
    return StartupReport(schema_revision=revision, bot=me)


def database_setting(storage: StorageSettings) -> str:
    """The setting that chose the database: DATABASE_URL, or DATA_DIR for the default."""
    return "DATABASE_URL" if storage.database_url is not None else "DATA_DIR"


async def check_database(db: Database, storage: StorageSettings) -> str | None:
    """The schema revision of a reachable database whose schema this version knows."""
    setting = database_setting(storage)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
            return await migrate.ensure_known(db)
    except migrate.SchemaError as exc:
        raise bad_setting(setting, str(exc)) from None
    except TimeoutError:
        raise unreachable(setting, f"cannot reach the database at {_where(db)} (no answer "
                                   f"within {DATABASE_TIMEOUT_SECONDS:g} s)") from None
    except Exception as exc:
        raise _database_failure(exc, setting, db) from None


def _database_failure(exc: Exception, setting: str, db: Database) -> StartupFailure:
    where = _where(db)
    if db.is_sqlite:
        return bad_setting(setting, f"cannot open the SQLite database {where} "
                                    f"({_first_line(getattr(exc, 'orig', None) or exc)})")
    answered = [link for link in _chain(exc) if getattr(link, "sqlstate", None)]
    if answered:  # the server (or the driver speaking for it) answered with an SQLSTATE
        answer = answered[-1]
        if str(getattr(answer, "sqlstate", "")).startswith(_UNAVAILABLE_SQLSTATES):
            return unreachable(setting, f"cannot reach the database at {where} "
                                        f"({_first_line(answer)})")
        return bad_setting(setting, f"the database at {where} refused the connection "
                                    f"({_first_line(answer)})")
    cause = os_cause(exc)
    if cause is not None:
        return unreachable(setting, f"cannot reach the database at {where} ({cause})")
    return bad_setting(setting, f"cannot use the database at {where} ({_first_line(exc)})")


def _where(db: Database) -> str:
    url = make_url(db.url)
    if db.is_sqlite:
        return str(url.database)
    host = url.host or "the local socket"
    return f"{host}:{url.port or 5432}" if url.host else host


async def check_token(bot: Bot, telegram: TelegramSettings) -> User:
    """getMe: the Bot API at TELEGRAM_API_BASE_URL accepts TELEGRAM_BOT_TOKEN."""
    async with bot_api_failures(telegram):
        try:
            await bot.initialize()  # its getMe is the check
        except BaseException:
            await bot.shutdown()  # the HTTP clients it opened
            raise
    return bot.bot


@asynccontextmanager
async def bot_api_failures(telegram: TelegramSettings) -> AsyncIterator[None]:
    """Turns the Bot API's refusal of the token, or no answer from it, into a failure."""
    from telegram.error import (
        BadRequest,
        InvalidToken,
        NetworkError,
        RetryAfter,
        TelegramError,
        TimedOut,
    )

    root = telegram.api_root
    try:
        yield
    except InvalidToken as exc:
        answer = _first_line(exc.__cause__ or exc)
        token = telegram.bot_token.get_secret_value().strip() if telegram.bot_token else ""
        if token:
            answer = answer.replace(token, "***")
        raise bad_setting("TELEGRAM_BOT_TOKEN",
                          f"the Bot API at {root} refused the token ({answer})") from None
    except BadRequest as exc:  # a NetworkError in PTB, but an answer
        raise bad_setting("TELEGRAM_API_BASE_URL",
                          f"the Bot API at {root} refused the request ({exc.message})") from None
    except TimedOut:
        raise unreachable("TELEGRAM_API_BASE_URL",
                          f"cannot reach the Bot API at {root} (timed out)") from None
    except NetworkError as exc:
        cause = os_cause(exc) or _first_line(exc)
        raise unreachable("TELEGRAM_API_BASE_URL",
                          f"cannot reach the Bot API at {root} ({cause})") from None
    except RetryAfter as exc:
        raise unreachable("TELEGRAM_API_BASE_URL",
                          f"the Bot API at {root} asks to wait ({exc.message})") from None
    except TelegramError as exc:
        raise bad_setting("TELEGRAM_API_BASE_URL", f"unexpected answer from the Bot API at "
                                                   f"{root} ({exc.message})") from None


# -- causes in words -----------------------------------------------------------------------


def os_cause(exc: BaseException) -> str | None:
    """The operating system's reason in ``exc`` or what caused it ("connection refused")."""
    for link in _chain(exc):
        if isinstance(link, socket.gaierror):
            return f"unknown host: {str(link.strerror).lower()}"
        if isinstance(link, TimeoutError):
            return "timed out"
        if isinstance(link, OSError) and link.errno:
            return os.strerror(link.errno).lower()
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in links):
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
