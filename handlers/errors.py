"""The one error handler: log the traceback, tell the user something went wrong."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.i18n import Translations
from bot.services.users import UsersService
from handlers.common import user_ui

log = logging.getLogger(__name__)


class ErrorHandler:
    def __init__(self, users: UsersService, i18n: Translations) -> None:
        self._users = users
        self._i18n = i18n

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Unhandled error while handling an update", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return
        user = update.effective_user
        try:
            ui = await user_ui(self._users, self._i18n, user.id if user else None,
                               user.language_code if user else None)
            _ = ui._
        except Exception:  # the database may be what failed: answer in English then
            log.warning("Could not read the user's language for the error message",
                        exc_info=True)
            _ = self._i18n.gettext(None)
        try:
            await context.bot.send_message(
                update.effective_chat.id,
                _("Sorry, something went wrong on my side. Nothing was charged; please try "
                  "again."))
        except TelegramError:
            log.warning("Could not tell the user about the error", exc_info=True)
