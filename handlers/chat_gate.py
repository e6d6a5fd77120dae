"""The gate in front of every flow: private chats only, new messages only.

Every user-facing flow shows personal data (numbers, wallets) or acts on it (binds, charges,
settings), so it runs in a private chat and nowhere else. In a group the bot says, at most
once per group every few minutes, to talk to it privately (with a t.me link), and does
nothing else; channel posts are ignored. An edited message is never taken as new input (an
edit of a number would send another SMS code): a private chat is asked to send it again.

Three things pass the gate from groups: payment messages (money was taken, so it is
recorded wherever the message came from; the payment handlers answer in the private chat),
and in an ADMIN_CHAT_IDS group the admins' commands, their replies to the bot's messages
(answers to support requests) and the admins' buttons (a broadcast's Confirm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from telegram import (
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatType, MessageEntityType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, BaseHandler, ContextTypes, TypeHandler

from bot.i18n import Translations
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow

GATE_GROUP = -2  # ahead of the payments group (-1) and of every flow (0)
GROUP_NOTE_INTERVAL = timedelta(minutes=10)  # a group hears "talk to me privately" this rarely
PRIVATE_LINK_PAYLOAD = "from_group"


def _command_of(message: Message | None) -> str | None:
    """The command a message starts with (without / and @bot), or None."""
    if message is None or not message.text or not message.entities:
        return None
    first = message.entities[0]
    if first.type != MessageEntityType.BOT_COMMAND or first.offset != 0:
        return None
    return message.text[1:first.length].split("@", 1)[0].lower()


def _replies_to_bot(message: Message | None, bot_id: int) -> bool:
    """A message (not a command) answering one of the bot's: an admin's reply to a support
    request."""
    replied = message.reply_to_message if message is not None else None
    return (replied is not None and replied.from_user is not None
            and replied.from_user.id == bot_id and _command_of(message) is None)


def _button_of(update: Update) -> str | None:
    """The kind of the button pressed (callback data of ours), or None."""
    query = update.callback_query
    data = cb.decode(query.data) if query is not None else None
    return data.kind if data is not None else None


class ChatGate(Flow):
    def __init__(self, users: UsersService, i18n: Translations, admin_chat_ids: Collection[int],
                 admin_commands: Collection[str], admin_buttons: Collection[str] = ()) -> None:
        super().__init__(users, i18n)
        self._admins = frozenset(admin_chat_ids)
        self._admin_commands = frozenset(admin_commands)
        self._admin_buttons = frozenset(admin_buttons)  # callback kinds
        self._noted: dict[int, datetime] = {}  # group chat id -> when it was last told

    async def check(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Returns to let the update on to the flows; raises ApplicationHandlerStop to end
        it here."""
        if update.channel_post is not None or update.edited_channel_post is not None:
            raise ApplicationHandlerStop
        chat = update.effective_chat
        private = chat is None or chat.type == ChatType.PRIVATE  # no chat: pre-checkout
        if update.edited_message is not None:
            if private and update.edited_message.text:
                ui = await self.ui(update)
                await self.reply(update, ui._("I only read new messages, not edits. Please "
                                              "send it again as a new message."))
            raise ApplicationHandlerStop
        if private:
            return
        message = update.message
        if message is not None and (message.successful_payment is not None
                                    or message.refunded_payment is not None):
            return
        if chat is not None and chat.id in self._admins and (
                _command_of(message) in self._admin_commands
                or _replies_to_bot(message, context.bot.id)
                or _button_of(update) in self._admin_buttons):
            return
        await self._point_to_private(update, context)
        raise ApplicationHandlerStop

    async def _point_to_private(self, update: Update,
                                context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        _ = ui._
        link = f"https://t.me/{context.bot.username}?start={PRIVATE_LINK_PAYLOAD}"
        if update.callback_query is not None:
            await update.callback_query.answer(
                _("I only work in a private chat. Open it here: {link}").format(link=link),
                show_alert=True)
            return
        chat = update.effective_chat
        if chat is None or not (self._was_added(update) or _command_of(update.message)):
            return  # ordinary group chatter is none of the bot's business
        last = self._noted.get(chat.id)
        if last is not None and ui.now - last < GROUP_NOTE_INTERVAL:
            return
        self._noted[chat.id] = ui.now
        # Not allowed to write in this group: nothing more to do there.
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(
                chat.id, _("I only work in a private chat, so your numbers and wallet stay "
                           "private. Talk to me there."),
                reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton(
                    _("Open a private chat"), url=link)]]))

    @staticmethod
    def _was_added(update: Update) -> bool:
        change = update.my_chat_member
        return change is not None and change.new_chat_member.status in (
            ChatMember.MEMBER, ChatMember.ADMINISTRATOR)

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group GATE_GROUP: sees every update first."""
        return [TypeHandler(Update, self.check)]
