"""Bind a line: share or type the number, prove it with the SMS code, done."""

from __future__ import annotations

import contextlib
from typing import Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import TelegramError
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.domain.otp import CheckResult, SendRefusal
from bot.domain.phone import MobileNumber, PhoneError, parse_cambodian_mobile
from bot.i18n import Gettext, Translations
from bot.services.binding import AlreadyYours, BindingService, Bound, TooManyLines
from bot.services.otp import CodeNotSent, CodeSent
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import CONVERSATION_TIMEOUT_SECONDS, END, Flow, Ui, too_long
from handlers.render import cooldown_text

ASK_NUMBER, ASK_CODE = "bind:number", "bind:code"
DRAFT = "bind"  # user_data key: the number being proven, as E.164
RESEND = cb.register("bnd", "action")
START_BUTTON = cb.register("mnb", "action")


def phone_error_text(_: Gettext, error: PhoneError) -> str:
    return {
        PhoneError.Reason.EMPTY: _("Send me a phone number."),
        PhoneError.Reason.NOT_A_NUMBER: _("That is not a phone number. Type it like 012 345 678 "
                                          "or +855 12 345 678."),
        PhoneError.Reason.FOREIGN: _("That is not a Cambodian number. I can only top up lines "
                                     "of Cambodian operators (+855)."),
        PhoneError.Reason.LANDLINE: _("That is a landline. Send a mobile number."),
        PhoneError.Reason.INVALID: _("That number does not exist in Cambodia. Check the digits."),
        PhoneError.Reason.UNSUPPORTED_OPERATOR: _("I can only top up Smart, Cellcard, Metfone "
                                                  "and Seatel lines."),
    }[error.reason]


class BindingFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 binding: BindingService) -> None:
        super().__init__(users, i18n)
        self._binding = binding

    def _sms_text(self, ui: Ui) -> str:
        _ = ui._
        return _("Your top-up bot code is {code}. It expires in 5 minutes. Never share it.")

    async def begin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
        if update.callback_query is not None:
            await update.callback_query.answer()
        ui = await self.ui(update)
        _ = ui._
        keyboard = ReplyKeyboardMarkup(
            [[KeyboardButton(_("📱 Share my number"), request_contact=True)]],
            resize_keyboard=True, one_time_keyboard=True)
        await self.reply(update, _("Which line should I look after? Tap \"Share my number\" "
                                   "for this phone's line, or type the number (012 345 678 or "
                                   "+855 12 345 678)."), reply_markup=keyboard)
        return ASK_NUMBER

    async def number(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message = update.effective_message
        user = update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        own_contact = False
        if message.contact is not None:
            text = message.contact.phone_number
            own_contact = message.contact.user_id == user.id
        else:
            text = message.text or ""
        if too_long(text):
            await message.reply_text(_("That is far too long for a phone number."))
            return ASK_NUMBER
        try:
            number = parse_cambodian_mobile(text)
        except PhoneError as error:
            await message.reply_text(phone_error_text(_, error))
            return ASK_NUMBER
        outcome = await self._binding.start(user_id=user.id, number=number,
                                            own_contact=own_contact, sms_text=self._sms_text(ui),
                                            language=ui.language)
        if isinstance(outcome, Bound):
            await self._bound(update, context, ui, outcome)
            return END
        if isinstance(outcome, AlreadyYours):
            await message.reply_text(_("{line} is already yours. See /lines.").format(
                line=outcome.line.label), reply_markup=ReplyKeyboardRemove())
            return END
        if isinstance(outcome, TooManyLines):
            await self._too_many(update, ui, outcome)
            return END
        if context.user_data is not None:
            context.user_data[DRAFT] = number.e164
        return await self._code_sent(update, context, ui, number, outcome)

    async def _code_sent(self, update: Update, context: ContextTypes.DEFAULT_TYPE, ui: Ui,
                         number: MobileNumber, outcome: CodeSent | CodeNotSent) -> str | int:
        """Says what became of the code; a refusal that ends the flow (the number is locked
        out, or over the hourly cap) forgets the number being proven."""
        _ = ui._
        if isinstance(outcome, CodeSent):
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(
                _("Send a new code"), callback_data=cb.encode("bnd", "resend"))]])
            await self.reply(update, _("I sent a 6-digit code by SMS to {line} ({operator}). "
                                       "Type it here to prove the line is yours.").format(
                line=number.masked, operator=number.operator.display_name),
                reply_markup=keyboard)
            return ASK_CODE
        refused = outcome.refused
        if refused is None:
            await self.reply(update, _("I could not send the SMS just now. Please try again "
                                       "in a minute."))
            return ASK_CODE
        if refused.reason is SendRefusal.LOCKED:
            self._forget(context)
            await self.reply(update, _("Too many wrong codes for this line. Try again after "
                                       "{time}.").format(time=ui.when(refused.retry_at)),
                             reply_markup=ReplyKeyboardRemove())
            return END
        if refused.reason is SendRefusal.COOLDOWN:
            await self.reply(update, cooldown_text(ui, refused.retry_at))
            return ASK_CODE
        self._forget(context)
        await self.reply(update, _("Too many codes were sent to this number this hour. Try "
                                   "again after {time}.").format(time=ui.when(refused.retry_at)),
                         reply_markup=ReplyKeyboardRemove())
        return END

    def _draft(self, context: ContextTypes.DEFAULT_TYPE) -> MobileNumber | None:
        e164 = context.user_data.get(DRAFT) if context.user_data is not None else None
        if not isinstance(e164, str):
            return None
        try:
            return parse_cambodian_mobile(e164)
        except PhoneError:
            return None

    async def code(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        number = self._draft(context)
        if number is None:
            await message.reply_text(_("I lost track of which number we were proving. Please "
                                       "start again with /bind."))
            return END
        typed = message.text or ""
        if too_long(typed):
            typed = ""
        result = await self._binding.confirm(user_id=user.id, number=number, typed=typed)
        outcome = result.outcome
        if result.bound is not None:
            await self._bound(update, context, ui, result.bound)
            return END
        if result.too_many is not None:
            self._forget(context)
            await self._too_many(update, ui, result.too_many)
            return END
        if outcome.result is CheckResult.WRONG:
            await message.reply_text(ui.ngettext(
                "That code is not right. {tries} try left.",
                "That code is not right. {tries} tries left.",
                outcome.tries_left).format(tries=outcome.tries_left))
            return ASK_CODE
        if outcome.result is CheckResult.LOCKED and outcome.locked_until is not None:
            await message.reply_text(_("Too many wrong codes. For your safety this line is "
                                       "locked until {time}.").format(
                time=ui.when(outcome.locked_until)), reply_markup=ReplyKeyboardRemove())
            self._forget(context)
            return END
        if outcome.result is CheckResult.MALFORMED:
            await message.reply_text(_("Type the 6 digits from the SMS, like 123456."))
            return ASK_CODE
        await message.reply_text(_("That code has expired. Tap \"Send a new code\"."))
        return ASK_CODE

    async def resend(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        await query.answer()
        ui = await self.ui(update)
        number = self._draft(context)
        if number is None:
            await self.reply(update, ui._("That button is no longer active."))
            return END
        outcome = await self._binding.resend(user_id=user.id, number=number,
                                             sms_text=self._sms_text(ui))
        return await self._code_sent(update, context, ui, number, outcome)

    async def stale_resend(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A "new code" button pressed outside the flow (after /cancel, or an old message)."""
        query = update.callback_query
        assert query is not None
        ui = await self.ui(update)
        await query.answer(ui._("That button is no longer active."), show_alert=False)

    async def _bound(self, update: Update, context: ContextTypes.DEFAULT_TYPE, ui: Ui,
                     bound: Bound) -> None:
        _ = ui._
        self._forget(context)
        line = bound.line
        await self.reply(update, _("Done: {line} ({operator}) is bound to you. Next: pick a "
                                   "plan or set up auto-recharge from /lines.").format(
            line=line.label, operator=line.operator.display_name),
            reply_markup=ReplyKeyboardRemove())
        if bound.previous_owner_id is not None:
            previous = await self.users.language_of(bound.previous_owner_id, None)
            p_ = self.i18n.gettext(previous)
            with contextlib.suppress(TelegramError):  # blocked the bot: the line moved anyway
                await context.bot.send_message(
                    bound.previous_owner_id,
                    p_("{line} was bound to another Telegram account that proved it owns the "
                       "line with an SMS code. It is no longer in your /lines, and its "
                       "auto-recharge is off.").format(line=line.label))

    async def _too_many(self, update: Update, ui: Ui, too_many: TooManyLines) -> None:
        await self.reply(update, ui._("You already have {count} lines, the most I can look "
                                      "after for one person. Unbind one in /lines first.")
                         .format(count=too_many.limit), reply_markup=ReplyKeyboardRemove())

    def _forget(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        if context.user_data is not None:
            context.user_data.pop(DRAFT, None)

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        text = filters.TEXT & ~filters.COMMAND
        conversation = ConversationHandler(
            name="binding", persistent=True,
            entry_points=[CommandHandler("bind", self.begin),
                          CallbackQueryHandler(self.begin, pattern=START_BUTTON)],
            states={
                ASK_NUMBER: [MessageHandler(filters.CONTACT | text, self.number)],
                ASK_CODE: [MessageHandler(text, self.code),
                           CallbackQueryHandler(self.resend, pattern=RESEND)],
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy),
                       MessageHandler(filters.ALL, self.not_understood)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )
        return [conversation, CallbackQueryHandler(self.stale_resend, pattern=RESEND)]

    async def not_understood(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        await self.reply(update, ui._("Please send the phone number or the code as text, or "
                                      "/cancel."))

