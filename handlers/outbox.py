"""Delivers queued notifications to Telegram: renders each in its reader's language and maps
Telegram's answers to the dispatcher's outcomes (bot.services.notifications)."""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.i18n import Translations
from bot.services.notifications import (
    Delivered,
    Delivery,
    Outgoing,
    Rejected,
    Throttled,
    Transient,
    Unreachable,
)
from bot.services.users import UsersService
from handlers import (  # noqa: F401  (renderers register on import)
    alerts,
    approvals,
    provider_notices,
    wallet,
)
from handlers.common import user_ui
from handlers.notification_views import RENDERERS, render

log = logging.getLogger(__name__)

# BadRequest texts that mean the chat is gone for us, not that the message was wrong.
_GONE = ("chat not found", "user is deactivated", "bot was kicked", "have no rights")


def _seconds(error: RetryAfter) -> float:
    # PTB 22 warns that retry_after becomes a timedelta in its next major version: both work.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        retry_after: float | timedelta = error.retry_after
    return (retry_after.total_seconds() if isinstance(retry_after, timedelta)
            else float(retry_after))


class TelegramDeliverer:
    """The dispatcher's ``Deliverer``: one message, sent or edited in place."""

    def __init__(self, bot: Bot, users: UsersService, i18n: Translations) -> None:
        self._bot = bot
        self._users = users
        self._i18n = i18n

    async def __call__(self, message: Outgoing) -> Delivery:
        if message.kind not in RENDERERS:
            return Rejected(f"no renderer for kind {message.kind!r}")
        # An admin chat reads in the admin's own language when they use the bot, else English.
        ui = await user_ui(self._users, self._i18n, message.chat_id, None)
        text, markup = render(message.kind, ui, message.params)
        try:
            if message.replaces_message_id is not None:
                try:
                    await self._bot.edit_message_text(
                        text, chat_id=message.chat_id, message_id=message.replaces_message_id,
                        reply_markup=markup)
                    return Delivered(message.replaces_message_id)
                except BadRequest as exc:
                    if "not modified" in exc.message.lower():
                        return Delivered(message.replaces_message_id)
                    # Deleted or too old to edit: the news goes out as a new message.
                    log.info("Could not edit message %s (%s); sending a new one",
                             message.replaces_message_id, exc.message)
            sent = await self._bot.send_message(message.chat_id, text, reply_markup=markup)
            return Delivered(sent.message_id)
        except RetryAfter as exc:
            return Throttled(_seconds(exc))
        except Forbidden as exc:
            return Unreachable(exc.message)
        except BadRequest as exc:
            if any(gone in exc.message.lower() for gone in _GONE):
                return Unreachable(exc.message)
            return Rejected(exc.message)
        except TelegramError as exc:  # TimedOut, NetworkError, server errors
            return Transient(f"{type(exc).__name__}: {exc.message}")
