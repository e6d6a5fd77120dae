"""A code typed after a flow ended on a lockout (five wrong codes): say the line is locked
and until when, instead of "I did not understand that"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Message, Update
from telegram.ext import BaseHandler, ContextTypes, MessageHandler, filters

from bot.domain.otp import looks_like_code
from bot.i18n import Translations
from bot.services.otp import OtpService
from bot.services.users import UsersService
from handlers.common import Flow, too_long

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


class _CodeShaped(filters.MessageFilter):
    """Text that is a code and nothing else ("123456", "123 456", Khmer digits)."""

    def filter(self, message: Message) -> bool:
        text = message.text
        return text is not None and not too_long(text) and looks_like_code(text)


CODE_SHAPED = _CodeShaped(name="CodeShaped")


class LockoutNotice(Flow):
    """Registered after every flow, just before the last resort: only codes no flow
    claimed reach it. ``otherwise`` answers those typed by someone not locked out (the
    last resort's "I did not understand that")."""

    def __init__(self, users: UsersService, i18n: Translations, otp: OtpService,
                 otherwise: Callback) -> None:
        super().__init__(users, i18n)
        self._otp = otp
        self._otherwise = otherwise

    async def code_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        locked_until = await self._otp.lockout_of(user.id)
        if locked_until is None:
            await self._otherwise(update, context)
            return
        ui = await self.ui(update)
        await message.reply_text(ui._(
            "Too many wrong codes: that line is locked until {time} ({left}). No code works "
            "before then; ask for a new one after that.").format(
            time=ui.when(locked_until), left=ui.age(locked_until)))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        # New messages only, like the last resort's answer (an edited message gets none).
        typed = filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND & CODE_SHAPED
        return [MessageHandler(typed, self.code_typed)]
