"""The one error handler: log the traceback, tell the user something went wrong."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

log = logging.getLogger(__name__)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("Unhandled error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(
                update.effective_chat.id,
                "Sorry, something went wrong on my side. Nothing was charged; please try again.")
        except TelegramError:
            log.warning("Could not tell the user about the error", exc_info=True)
