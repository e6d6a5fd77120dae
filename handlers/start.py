"""/start, /help and the main menu; unknown commands and stray text."""

from __future__ import annotations

import re
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

from bot.domain.phone import PhoneError, parse_cambodian_mobile
from bot.i18n import Gettext, Translations
from bot.services.lines import LinesService
from bot.services.users import UsersService
from bot.services.wallet import WalletService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, too_long
from handlers.esim import shop_button


def _(message: str) -> str:
    """Marks a string for extraction; it is translated when shown."""
    return message


# (command, description): every command a user has, in the order of /help and of the bot's
# command menu (tests/flow/test_start.py checks it against the handlers registered).
COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", _("What this bot does")),
    ("bind", _("Add a line (proven by SMS code)")),
    ("lines", _("Your lines: balance, plan, rename, unbind")),
    ("history", _("Top-ups, payments and warnings; CSV export, monthly summary")),
    ("autorecharge", _("Automatic top-ups: your rules, and new ones")),
    ("newrule", _("Set up a new automatic top-up")),
    ("wallet", _("Your wallet: balance, movements, add money")),
    ("esim", _("Buy a Cambodian eSIM and get its QR code")),
    ("balance", _("Report a line's balance (type it or paste the SMS)")),
    ("settings", _("Time zone, quiet hours, warnings, language")),
    ("language", _("Change the language")),
    ("support", _("Something wrong? Write to our support team")),
    ("privacy", _("What I store about you, why, for how long, who sees it")),
    ("forget", _("Delete your data (only amounts, dates and references stay)")),
    ("cancel", _("Stop what you are doing")),
    ("help", _("All commands")),
)


def command_menu(gettext: Gettext) -> list[BotCommand]:
    return [BotCommand(command, gettext(description)) for command, description in COMMANDS]


_SMS_CODE = re.compile(r"\s*\d{6}\s*")


def stray_text(ui: Ui, text: str | None) -> str:
    _ = ui._
    if text and not too_long(text):
        if _SMS_CODE.fullmatch(text):
            return _("That looks like a code from an SMS. A code is typed while adding a line "
                     "(/bind) or turning on a rule (/autorecharge): start there, and ask for "
                     "a new code if this one is old.")
        try:
            parse_cambodian_mobile(text)
        except PhoneError:
            pass
        else:
            return _("That looks like a phone number. To add this line, send /bind; to see "
                     "your lines, /lines.")
    return _("I did not understand that. /help lists what I can do.")


class StartHandlers(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 lines: LinesService | None = None, wallet: WalletService | None = None,
                 ) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._wallet = wallet

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return
        # A deep-link payload (/start <payload>) is accepted; unknown ones are ignored.
        await self.users.greet(user.id, user.language_code)
        ui = await self.ui(update)
        _ = ui._
        add = [InlineKeyboardButton(_("➕ Add a line"), callback_data=cb.encode("mnb", "bind"))]
        lines = await self._lines.for_user(user.id) if self._lines is not None else []
        if lines:  # a returning user: their lines, their wallet, the main actions
            rows = [[InlineKeyboardButton(f"{line.label} · {line.operator.display_name}",
                                          callback_data=cb.encode("ln", line.id, "show"))]
                    for line in lines]
            text = [_("Welcome back, {name}! Tap a line to see it and change it.").format(
                name=user.first_name)]
            if self._wallet is not None:
                text.append(_("Wallet: {amount}").format(
                    amount=ui.money(await self._wallet.available(user.id))))
            text.append(_("/wallet to add money, /autorecharge for automatic top-ups, "
                          "/history for what happened, /help for everything."))
            await message.reply_text("\n\n".join(text),
                                     reply_markup=InlineKeyboardMarkup([*rows, add]))
            return
        rows = [add, [shop_button(ui)]]  # no line yet: a traveller may want an eSIM
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
        """Text or media outside any flow: a phone number or an SMS code is answered with
        what to do with it, anything else with /help."""
        message = update.effective_message
        if message is None:
            return
        ui = await self.ui(update)
        await message.reply_text(stray_text(ui, message.text))

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
