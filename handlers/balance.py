"""Report a balance: type it, or paste/forward the carrier's balance SMS.

No API reads a physical prepaid line, so what the user reports is a reading of its own
(marked as reported by the user); text that cannot be read is said so and stored nowhere.
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.domain.balance_sms import parse_typed_balance
from bot.i18n import Translations
from bot.services.lines import LinesService
from bot.services.readings import ReadingsService, ReportStatus
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import CONVERSATION_TIMEOUT_SECONDS, END, Flow, too_long
from handlers.render import reading_text

REPORT_KIND = "bl"
REPORT = cb.register(REPORT_KIND, "line")
ASK_LINE, ASK_BALANCE = "balance:line", "balance:value"
DRAFT = "balance_line"  # user_data key: the line being reported
FORWARDED = "balance_sms"  # user_data key: a forwarded SMS waiting for its line
MAX_SMS_CHARS = 1000


class BalanceFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService,
                 readings: ReadingsService) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._readings = readings

    async def begin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        lines = await self._lines.for_user(user.id)
        if not lines:
            await self.reply(update, _("You have no lines yet. Send /bind to add one."))
            return END
        if len(lines) == 1:
            return await self._ask(update, context, lines[0].id, lines[0].label)
        rows = [[InlineKeyboardButton(line.label, callback_data=cb.encode("bl", line.id))]
                for line in lines]
        await self.reply(update, _("Which line?"), reply_markup=InlineKeyboardMarkup(rows))
        return ASK_LINE

    async def line_chosen(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        line_id = pressed.int_arg("line")
        line = await self._lines.own(pressed.user.id, line_id) if line_id is not None else None
        if line is None:
            await pressed.query.answer(pressed.ui._("That line is not yours or no longer bound."),
                                       show_alert=True)
            return END
        await pressed.query.answer()
        pending = context.user_data.pop(FORWARDED, None) if context.user_data is not None else None
        if isinstance(pending, str):
            return await self._store(update, context, line.id, pending)
        return await self._ask(update, context, line.id, line.label)

    async def forwarded(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        """A carrier SMS forwarded (or shared) to the bot outside any flow."""
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        text = (message.text or message.caption or "")[:MAX_SMS_CHARS]
        lines = await self._lines.for_user(user.id)
        if not lines:
            await self.reply(update, _("You have no lines yet. Send /bind to add one."))
            return END
        if len(lines) == 1:
            return await self._store(update, context, lines[0].id, text)
        if context.user_data is not None:
            context.user_data[FORWARDED] = text
        rows = [[InlineKeyboardButton(line.label, callback_data=cb.encode("bl", line.id))]
                for line in lines]
        await self.reply(update, _("Which line is this balance message for?"),
                         reply_markup=InlineKeyboardMarkup(rows))
        return ASK_LINE

    async def _ask(self, update: Update, context: ContextTypes.DEFAULT_TYPE, line_id: int,
                   label: str) -> str:
        ui = await self.ui(update)
        if context.user_data is not None:
            context.user_data[DRAFT] = line_id
        await self.reply(update, ui._(
            "What is the balance of {line}? Type it (like 1.25), or paste or forward the "
            "balance SMS from your carrier (dial *888# on Smart, *124# on Cellcard, *097# on "
            "Metfone).").format(line=label))
        return ASK_BALANCE

    async def value(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        line_id = context.user_data.get(DRAFT) if context.user_data is not None else None
        if not isinstance(line_id, int):
            await message.reply_text(_("Which line? Send /balance again."))
            return END
        text = message.text or message.caption or ""
        if len(text) > MAX_SMS_CHARS:
            await message.reply_text(_("That is too long to be a balance SMS. Type the balance "
                                       "(like 1.25), or /cancel."))
            return ASK_BALANCE
        return await self._store(update, context, line_id, text)

    async def _store(self, update: Update, context: ContextTypes.DEFAULT_TYPE, line_id: int,
                     text: str) -> str | int:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        typed = parse_typed_balance(text) if not too_long(text) else None
        if typed is not None:
            result = await self._readings.report_typed(user.id, line_id, text)
        else:
            result = await self._readings.report_sms(user.id, line_id, text)
        if result.status is ReportStatus.NOT_YOUR_LINE:
            await self.reply(update, _("That line is not yours or no longer bound."))
            return END
        if result.status is not ReportStatus.STORED or result.reading is None:
            if context.user_data is not None:
                context.user_data[DRAFT] = line_id
            await self.reply(update, _("I could not read a balance in that. Type it like 1.25, "
                                       "or paste the carrier's balance SMS as it is. Or "
                                       "/cancel."))
            return ASK_BALANCE
        if context.user_data is not None:
            context.user_data.pop(DRAFT, None)
        await self.reply(update, _("Saved.") + "\n" + reading_text(
            ui, result.reading, ui.age(result.reading.read_at)))
        return END

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        text = (filters.TEXT | filters.CAPTION) & ~filters.COMMAND
        return [ConversationHandler(
            name="balance", persistent=True,
            entry_points=[CommandHandler("balance", self.begin),
                          CallbackQueryHandler(self.line_chosen, pattern=REPORT),
                          MessageHandler(filters.FORWARDED & text, self.forwarded)],
            states={
                ASK_LINE: [CallbackQueryHandler(self.line_chosen, pattern=REPORT)],
                # Another line's button mid-flow switches to that line.
                ASK_BALANCE: [CallbackQueryHandler(self.line_chosen, pattern=REPORT),
                              MessageHandler(text, self.value)],
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )]
