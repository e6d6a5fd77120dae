"""What every flow needs: the user's language, formatting, input limits, /cancel, timeouts."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import (
    format_datetime,
    format_skeleton,
    format_time,
    format_timedelta,
    get_datetime_format,
)
from telegram import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardRemove,
    Update,
    User,
)
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop, ContextTypes, ConversationHandler

from bot.domain.money import Money, format_money
from bot.i18n import DEFAULT_LANGUAGE, Gettext, NGettext, Translations, english_ngettext
from bot.services.users import UsersService
from handlers import callback_data as cb

MAX_INPUT_CHARS = 300  # longer text is not a number, a code or a name: refuse it early
CONVERSATION_TIMEOUT_SECONDS = 15 * 60
END = ConversationHandler.END


def _noop(message: str) -> str:
    return message


@dataclass(frozen=True)
class Ui:
    """One update's view of the user: their language and zone, and formatting in them."""

    language: str
    _: Gettext
    locale: str
    zone: ZoneInfo
    now: datetime
    ngettext: NGettext = english_ngettext  # counted messages: "1 try left", "3 tries left"

    @classmethod
    def of(cls, i18n: Translations, language: str, zone: ZoneInfo, now: datetime) -> Ui:
        """The Ui of a language, with its messages, counted messages and locale."""
        return cls(language=language, _=i18n.gettext(language), locale=i18n.locale(language),
                   zone=zone, now=now, ngettext=i18n.ngettext(language))

    def money(self, money: Money) -> str:
        return format_money(money, self.locale)

    def age(self, moment: datetime) -> str:
        """How long ago, in words: "2 hours ago"; "just now" within a minute (Babel would say
        "in 0 seconds" for a moment equal to now)."""
        delta = moment - self.now
        if abs(delta) < timedelta(minutes=1):
            return self._("just now")
        return str(format_timedelta(delta, add_direction=True, locale=self.locale))

    def soon(self, moment: datetime) -> str | None:
        """How long until a moment within the hour, in words ("40 seconds", "3 minutes"):
        a wait that short reads better so than as a date; None for a later moment."""
        delta = moment - self.now
        if not timedelta(0) <= delta < timedelta(hours=1):
            return None
        return str(format_timedelta(max(delta, timedelta(seconds=1)), threshold=1.5,
                                    locale=self.locale))

    def when(self, moment: datetime) -> str:
        """A moment in the user's zone: "6 Dec 2026, 14:05" in English; elsewhere the
        locale's own date order and joining ("2026年12月6日 14:05"), the time on 24 hours."""
        local = moment.astimezone(self.zone)
        if self.language == DEFAULT_LANGUAGE:
            return str(format_datetime(local, "d MMM y, HH:mm", locale=self.locale))
        joined = get_datetime_format("medium", locale=self.locale)
        return str(joined).format(format_time(local, "HH:mm", locale=self.locale),
                                  format_skeleton("yMMMd", local, locale=self.locale))


async def user_ui(users: UsersService, i18n: Translations, user_id: int | None,
                  telegram_language: str | None) -> Ui:
    """The Ui of a user (their chosen language, else Telegram's; their zone), also for
    messages sent without an update (the notifications outbox)."""
    if user_id is None:
        language, zone = await users.language_of(0, telegram_language), users.default_zone
    else:
        language, zone = await users.preferences(user_id, telegram_language)
    return Ui.of(i18n, language, zone, users.clock.now())


async def edit_in_place(query: CallbackQuery, text: str,
                        markup: InlineKeyboardMarkup | None = None) -> None:
    """Edits the message under a button, only when that changes it: fifty taps on a button
    whose answer is already shown edit nothing (and a tap racing an edit, which Telegram
    answers "message is not modified", is fine too)."""
    shown = query.message
    if isinstance(shown, Message) and shown.text == text and shown.reply_markup == markup:
        return
    try:
        await query.edit_message_text(text, reply_markup=markup)
    except BadRequest as error:
        if "not modified" not in str(error).lower():
            raise


Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def stopping(callback: Callback) -> Callback:
    """A button answered ahead of the conversations goes no further (no conversation, no
    "button no longer active" from the last resort)."""
    async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await callback(update, context)
        raise ApplicationHandlerStop
    return handle


@dataclass(frozen=True)
class Pressed:
    """A button press with its prologue done: the query, who pressed, their Ui, its data."""

    query: CallbackQuery
    user: User
    ui: Ui
    data: cb.Callback

    def arg(self, name: str) -> str:
        """The data's argument ``name``: a short token, never trusted."""
        return self.data.arg(name)

    def int_arg(self, name: str) -> int | None:
        """The data's argument ``name`` as an id or number; None when it is not digits (an
        id still to check: does the user own it, does its state allow the press)."""
        return self.data.int_arg(name)


class Flow:
    """Base of the handler classes: resolves the Ui for an update."""

    def __init__(self, users: UsersService, i18n: Translations) -> None:
        self.users = users
        self.i18n = i18n

    async def ui(self, update: Update) -> Ui:
        user = update.effective_user
        if user is None:
            return await user_ui(self.users, self.i18n, None, None)
        return await user_ui(self.users, self.i18n, user.id, user.language_code)

    async def pressed(self, update: Update) -> Pressed | None:
        """The press a button handler starts from; None (the press answered "That button is
        no longer active.") when its data is not ours. Not answered otherwise."""
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        ui = await self.ui(update)
        data = cb.decode(query.data)
        if data is None:
            await query.answer(ui._("That button is no longer active."))
            return None
        return Pressed(query, user, ui, data)

    async def reply(self, update: Update, text: str, **kwargs: Any) -> None:
        """A new message in the update's chat (after a button press too)."""
        if update.effective_chat is not None:
            await update.get_bot().send_message(update.effective_chat.id, text, **kwargs)

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        ui = await self.ui(update)
        _ = ui._
        if context.user_data is not None:
            context.user_data.clear()
        await self.reply(update, _("Cancelled. Nothing was changed."),
                         reply_markup=ReplyKeyboardRemove())
        return END

    async def busy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command in the middle of a flow: say so and stay where we are."""
        ui = await self.ui(update)
        _ = ui._
        await self.reply(update, _("You are in the middle of something. Finish it, or send "
                                   "/cancel to stop."))

    async def timed_out(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        _ = ui._
        if context.user_data is not None:
            context.user_data.clear()
        if update.effective_chat is not None:
            await context.bot.send_message(
                update.effective_chat.id,
                _("This took too long, so I stopped here. Nothing was changed; start again "
                  "whenever you like."), reply_markup=ReplyKeyboardRemove())


def too_long(text: str | None) -> bool:
    return text is not None and len(text) > MAX_INPUT_CHARS
