"""/start, /help and the main menu; unknown commands and stray text."""

from __future__ import annotations

from typing import Any

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.i18n import Gettext, Translations
from bot.services.lines import LinesService
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow
from handlers.esim import shop_button


def _(message: str) -> str:
    """Marks a string for extraction; it is translated when shown."""
    return message


# (command, description): the order of /help and of the bot's command menu
COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", _("What this bot does")),
    ("bind", _("Add a line (proven by SMS code)")),
    ("lines", _("Your lines: balance, plan, rename, unbind")),
    ("autorecharge", _("Automatic top-ups: your rules, and new ones")),
    ("esim", _("Buy a Cambodian eSIM and get its QR code")),
    ("balance", _("Report a line's balance (type it or paste the SMS)")),
    ("settings", _("Time zone, quiet hours, warnings, language")),
    ("language", _("Change the language")),
    ("cancel", _("Stop what you are doing")),
    ("help", _("All commands")),
)


def command_menu(gettext: Gettext) -> list[BotCommand]:
    return [BotCommand(command, gettext(description)) for command, description in COMMANDS]


class StartHandlers(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 lines: LinesService | None = None) -> None:
        super().__init__(users, i18n)
        self._lines = lines

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return
        # A deep-link payload (/start <payload>) is accepted; unknown ones are ignored.
        await self.users.greet(user.id, user.language_code)
        ui = await self.ui(update)
        _ = ui._
        rows = [[InlineKeyboardButton(_("➕ Add a line"), callback_data=cb.encode("mnb", "bind"))]]
        if self._lines is not None and not await self._lines.for_user(user.id):
            rows.append([shop_button(ui)])  # no line yet: a traveller may want an eSIM
        menu = InlineKeyboardMarkup(rows)
        greeting = _(
            "Hello, {name}! I keep your Cambodian prepaid and eSIM lines alive.\n\n"
            "Add your Smart, Cellcard, Metfone or Seatel number, pick a plan, and I top it "
            "up for you: on a calendar, when the balance runs low, or just before the line "
            "would expire. You approve charges with one tap, and I send balance warnings and "
            "receipts right here.\n\n/help lists what I can do.")
        await message.reply_text(greeting.format(name=user.first_name), reply_markup=menu)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is None:
            return
        ui = await self.ui(update)
        lines = [f"/{command} - {ui._(description)}" for command, description in COMMANDS]
        await update.effective_message.reply_text(ui._("Commands:") + "\n" + "\n".join(lines))

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is None:
            return
        ui = await self.ui(update)
        await update.effective_message.reply_text(
            ui._("I don't know that command. /help lists what I can do."))

    async def nothing_to_cancel(self, update: Update,
                                context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is None:
            return
        ui = await self.ui(update)
        await update.effective_message.reply_text(ui._("There is nothing to cancel."))

    async def stray(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Text or media outside any flow."""
        if update.effective_message is None:
            return
        ui = await self.ui(update)
        await update.effective_message.reply_text(
            ui._("I did not understand that. /help lists what I can do."))

    async def stale_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button no handler claimed: forged, from an old version, or its flow is over."""
        if update.callback_query is None:
            return
        ui = await self.ui(update)
        await update.callback_query.answer(ui._("That button is no longer active."))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        return [CommandHandler("start", self.start), CommandHandler("help", self.help)]

    def last_resort(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """After every flow: what no flow claimed (a flow's own /cancel comes first)."""
        return [CommandHandler("cancel", self.nothing_to_cancel),
                MessageHandler(filters.COMMAND, self.unknown),
                MessageHandler(filters.UpdateType.MESSAGE, self.stray),
                CallbackQueryHandler(self.stale_button)]
