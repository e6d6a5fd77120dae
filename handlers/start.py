"""/start and /help: the greeting, what the bot does, and the command list."""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CommandHandler, ContextTypes

from bot.services.users import UsersService

COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", "What this bot does"),
    ("help", "All commands"),
)

GREETING = (
    "Hello{name}! I keep your Cambodian prepaid and eSIM lines alive.\n\n"
    "Bind your Smart, Cellcard, Metfone or Seatel number, pick a plan, and I top it up "
    "for you: on a calendar, when the balance runs low, or just before the line would "
    "expire. You approve charges with one tap, and I send balance warnings and receipts "
    "right here.\n\n/help lists what I can do."
)


def _help_text() -> str:
    lines = [f"/{command} - {description}" for command, description in COMMANDS]
    return "Commands:\n" + "\n".join(lines)


class StartHandlers:
    def __init__(self, users: UsersService) -> None:
        self._users = users

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return
        # A deep-link payload (/start <payload>) is accepted; unknown ones are ignored.
        await self._users.greet(user.id, user.language_code)
        name = f", {user.first_name}" if user.first_name else ""
        await message.reply_text(GREETING.format(name=name))

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(_help_text())

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(
                "I don't know that command. /help lists what I can do.")

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, None]]:
        return [CommandHandler("start", self.start), CommandHandler("help", self.help)]
