"""/support: the user writes what is wrong, optionally about one of their recent top-ups
(failed, charged twice, not received); the admin chats get it, and an admin answers by
replying to that message. The user adds to an open request with "Reply" under an answer.
The admins' /tickets lists the open requests (flagged ones first) and /resolve closes one.

The conversation follows python-telegram-bot's conversationbot.py: named states, one
handler table, /cancel in the fallbacks. Admins' replies are read ahead of any conversation
(group PAYMENT_GROUP), and only in ADMIN_CHAT_IDS chats. Renderers of the support notices
live here too; those that show a stored message get its text from the deliverer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType
from telegram.ext import (
    ApplicationHandlerStop,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.domain.charges import ChargeState
from bot.domain.numbers import whole_number
from bot.domain.support import (
    CHARGE_CATEGORIES,
    MAX_MESSAGE_CHARS,
    SupportCategory,
    message_too_long,
)
from bot.i18n import Translations
from bot.services.support import (
    Added,
    AlreadyResolved,
    ChargeChoice,
    NoSuchTicket,
    NotYours,
    Opened,
    Replied,
    Resolved,
    SupportReply,
    SupportResolved,
    SupportService,
    SupportText,
    SupportTicketOpened,
    SupportUserMessage,
    TicketClosed,
    TicketView,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import CONVERSATION_TIMEOUT_SECONDS, END, Flow, Ui, edit_in_place
from handlers.notification_views import NoticeView, Rendered

CHOOSE, CATEGORY, WRITE = "support:choose", "support:category", "support:write"
DRAFT = "support"  # user_data: {"charge": id} and "category", or {"ticket": id}
PICK_KIND, CATEGORY_KIND = "sp", "spk"
# v1:sp:c:<charge> a recent top-up, v1:sp:o:0 something else, v1:sp:t:<ticket> add to it
PICK = cb.register(PICK_KIND, "what", "id")
CHOOSE_CATEGORY = cb.register(CATEGORY_KIND, "category")
ADMIN_COMMANDS = ("tickets", "resolve")  # answered only in ADMIN_CHAT_IDS chats
N = TypeVar("N", bound=SupportText)


# --- how things read ----------------------------------------------------------------------


def category_text(ui: Ui, category: SupportCategory) -> str:
    _ = ui._
    return {
        SupportCategory.GENERAL: _("Something else"),
        SupportCategory.FAILED: _("The top-up failed"),
        SupportCategory.CHARGED_TWICE: _("I was charged twice"),
        SupportCategory.NOT_RECEIVED: _("The line did not receive it"),
    }[category]


def charge_state_text(ui: Ui, state: ChargeState) -> str:
    _ = ui._
    return {
        ChargeState.AWAITING_APPROVAL: _("waiting for approval"),
        ChargeState.APPROVED: _("approved"),
        ChargeState.SUBMITTED: _("on its way"),
        ChargeState.SUCCEEDED: _("succeeded"),
        ChargeState.FAILED: _("failed"),
        ChargeState.DECLINED: _("declined"),
        ChargeState.EXPIRED: _("expired"),
    }[state]


def choice_label(ui: Ui, choice: ChargeChoice) -> str:
    """A recent top-up on its button: "25 Nov 2026, 09:00 · $5.00 · 012 ••• 678"."""
    return " · ".join((ui.when(choice.at), ui.money(choice.amount), choice.line,
                       charge_state_text(ui, choice.state)))


def reply_button(ui: Ui, ticket_id: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(ui._("✍️ Reply"), callback_data=cb.encode(PICK_KIND, "t",
                                                                           ticket_id))


def render_ticket(ui: Ui, notice: SupportTicketOpened, text: str) -> Rendered:
    """Admins: a new request, with the user's lines, wallet and the charge it is about."""
    _ = ui._
    out = [_("🆘 Support request #{ticket} from user {user}").format(
        ticket=notice.ticket_id, user=notice.user_id)]
    about = category_text(ui, notice.category)
    out.append(_("⚑ Flagged: {category}").format(category=about) if notice.flagged
               else _("About: {category}").format(category=about))
    lines = notice.lines.splitlines()
    out.append(_("Lines: {lines}").format(lines=", ".join(lines)) if lines
               else _("Lines: none"))
    out.append(_("Wallet: {amount}").format(amount=ui.money(notice.wallet)))
    charge = notice.charge
    if charge is not None:
        out.append(_("Top-up #{charge}: {state}, {amount}, {line}, {when}, reference "
                     "{reference}").format(
            charge=charge.charge_id, state=charge_state_text(ui, charge.charge_state),
            amount=ui.money(charge.charge_amount), line=charge.charge_line,
            when=ui.when(charge.charge_at), reference=charge.charge_reference))
    out += ["", text, "",
            _("Reply to this message to answer the user; /resolve {ticket} when it is "
              "done.").format(ticket=notice.ticket_id)]
    return "\n".join(out), None


def render_user_message(ui: Ui, notice: SupportUserMessage, text: str) -> Rendered:
    """Admins: the user added to their open request."""
    _ = ui._
    head = (_("💬 User {user} added to flagged request #{ticket}:") if notice.flagged
            else _("💬 User {user} added to request #{ticket}:")).format(
        user=notice.user_id, ticket=notice.ticket_id)
    return "\n".join([head, "", text, "",
                      _("Reply to this message to answer the user.")]), None


def render_reply(ui: Ui, notice: SupportReply, text: str) -> Rendered:
    """The user: an admin's answer, with a button to write back."""
    head = ui._("💬 Support answered your request #{ticket}:").format(ticket=notice.ticket_id)
    return "\n".join([head, "", text]), InlineKeyboardMarkup(
        [[reply_button(ui, notice.ticket_id)]])


def render_resolved(ui: Ui, notice: SupportResolved) -> Rendered:
    return ui._("✅ Your support request #{ticket} is resolved. If something is still wrong, "
                "send /support.").format(ticket=notice.ticket_id), None


@dataclass(frozen=True)
class SupportTextView(Generic[N]):
    """A notice that shows a stored message of a request: the deliverer reads its text
    (the outbox holds none) and hands it to ``render``."""

    notice: type[N]
    render: Callable[[Ui, N, str], Rendered]

    @property
    def kind(self) -> str:
        return self.notice.KIND


# Not annotated: mypy infers each pair's notice type and checks its renderer against it.
TEXT_VIEWS = (
    SupportTextView(SupportTicketOpened, render_ticket),
    SupportTextView(SupportUserMessage, render_user_message),
    SupportTextView(SupportReply, render_reply),
)
NOTICE_VIEWS = (
    NoticeView(SupportResolved, render_resolved),
)


def _ticket_line(ui: Ui, ticket: TicketView) -> str:
    _ = ui._
    parts = [f"{'⚑ ' if ticket.flagged else ''}#{ticket.id}",
             _("user {user}").format(user=ticket.user_id), category_text(ui, ticket.category)]
    if ticket.charge_id is not None:
        parts.append(_("top-up #{charge}").format(charge=ticket.charge_id))
    parts.append(_("last message {when}").format(when=ui.when(ticket.updated_at)))
    return " · ".join(parts)


# --- the flow -----------------------------------------------------------------------------


class SupportFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, support: SupportService,
                 admin_chat_ids: Collection[int]) -> None:
        super().__init__(users, i18n)
        self._support = support
        self._admins = frozenset(admin_chat_ids)

    @staticmethod
    def _draft(context: ContextTypes.DEFAULT_TYPE) -> dict[str, Any]:
        if context.user_data is None:
            return {}
        draft = context.user_data.get(DRAFT)
        return draft if isinstance(draft, dict) else {}

    @staticmethod
    def _keep(context: ContextTypes.DEFAULT_TYPE, draft: dict[str, Any] | None) -> None:
        if context.user_data is None:
            return
        if draft is None:
            context.user_data.pop(DRAFT, None)
        else:
            context.user_data[DRAFT] = draft

    async def begin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        self._keep(context, None)
        if not self._support.available:
            await self.reply(update, _("Support by chat is not set up here yet, sorry."))
            return END
        start = await self._support.start(user.id)
        rows = [[InlineKeyboardButton(_("✍️ Add to request #{ticket}").format(ticket=t.id),
                                      callback_data=cb.encode(PICK_KIND, "t", t.id))]
                for t in start.open_tickets]
        rows += [[InlineKeyboardButton(choice_label(ui, c),
                                       callback_data=cb.encode(PICK_KIND, "c", c.id))]
                 for c in start.charges]
        rows.append([InlineKeyboardButton(_("💬 Something else"),
                                          callback_data=cb.encode(PICK_KIND, "o", 0))])
        text = (_("What is it about? Pick a recent top-up, or something else.")
                if start.charges else _("What is it about?"))
        await self.reply(update, text + "\n" + _("Send /cancel to stop."),
                         reply_markup=InlineKeyboardMarkup(rows))
        return CHOOSE

    async def picked(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        """A button of /support's list, or "Reply" under an answer: never trusted, each
        re-read."""
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        what, item = pressed.arg("what"), pressed.int_arg("id")
        if item is None or not self._support.available:
            await query.answer(_("That button is no longer active."))
            return END
        if what == "c":
            choice = await self._support.charge(user.id, item)
            if choice is None:
                await query.answer(_("That top-up is not yours, or cannot be asked about."),
                                   show_alert=True)
                return END
            await query.answer()
            self._keep(context, {"charge": choice.id})
            await edit_in_place(query, _("What went wrong with this top-up?\n{top_up}").format(
                top_up=choice_label(ui, choice)), InlineKeyboardMarkup(
                [[InlineKeyboardButton(category_text(ui, category), callback_data=cb.encode(
                    CATEGORY_KIND, category.value))] for category in CHARGE_CATEGORIES]))
            return CATEGORY
        if what == "t":
            ticket = await self._support.ticket(user.id, item)
            if ticket is None:
                await query.answer(_("That request is not yours."), show_alert=True)
                return END
            if not ticket.is_open:
                await query.answer(_("Request #{ticket} is resolved. Send /support to open a "
                                     "new one.").format(ticket=ticket.id), show_alert=True)
                return END
            await query.answer()
            self._keep(context, {"ticket": ticket.id})
            # A new message: the button may be under an answer, which must stay readable.
            await self.reply(update, _("Write what you want to add to request #{ticket}, in "
                                       "one message. Send /cancel to stop.").format(
                ticket=ticket.id))
            return WRITE
        if what != "o":
            await query.answer(_("That button is no longer active."))
            return END
        await query.answer()
        self._keep(context, {"category": SupportCategory.GENERAL.value})
        await edit_in_place(query, self._ask_text(ui))
        return WRITE

    async def categorised(self, update: Update,
                          context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        query, ui = pressed.query, pressed.ui
        draft = self._draft(context)
        chosen = pressed.arg("category")
        category = next((c for c in CHARGE_CATEGORIES if c.value == chosen), None)
        if category is None or not isinstance(draft.get("charge"), int):
            await query.answer(ui._("That button is no longer active."))
            return END
        await query.answer()
        self._keep(context, {**draft, "category": category.value})
        await edit_in_place(query, category_text(ui, category) + "\n\n" + self._ask_text(ui))
        return WRITE

    @staticmethod
    def _ask_text(ui: Ui) -> str:
        return ui._("Write what is wrong, in one message: what you expected and what "
                    "happened. Send /cancel to stop.")

    async def wrote(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        text = (message.text or "").strip()
        if message_too_long(text):
            await message.reply_text(_("That is too long for one message: please keep it "
                                       "under {limit} characters. Nothing was sent yet.")
                                     .format(limit=MAX_MESSAGE_CHARS))
            return WRITE
        if not text:
            await message.reply_text(self._ask_text(ui))
            return WRITE
        draft = self._draft(context)
        ticket_id = draft.get("ticket")
        charge_id = draft.get("charge") if isinstance(draft.get("charge"), int) else None
        category = next((c for c in SupportCategory if c.value == draft.get("category")), None)
        outcome: Opened | Added | TicketClosed | NotYours
        if isinstance(ticket_id, int):
            outcome = await self._support.follow_up(user.id, ticket_id, text,
                                                    message_id=message.message_id)
        elif category is not None and category.needs_charge == (charge_id is not None):
            outcome = await self._support.open_ticket(user.id, text, category=category,
                                                      charge_id=charge_id,
                                                      message_id=message.message_id)
        else:
            self._keep(context, None)
            await message.reply_text(_("I lost track of your request. Please start again "
                                       "with /support."))
            return END
        self._keep(context, None)
        await message.reply_text(self._outcome_text(ui, outcome))
        return END

    @staticmethod
    def _outcome_text(ui: Ui, outcome: Opened | Added | TicketClosed | NotYours) -> str:
        _ = ui._
        if isinstance(outcome, Opened) and outcome.added:
            return _("✅ Added to your open request #{ticket} about this top-up. The answer "
                     "will come here, in this chat.").format(ticket=outcome.ticket_id)
        if isinstance(outcome, Opened):
            return _("✅ Sent to our support team as request #{ticket}. The answer will come "
                     "here, in this chat.").format(ticket=outcome.ticket_id)
        if isinstance(outcome, Added):
            return _("✅ Added to request #{ticket}. The answer will come here, in this "
                     "chat.").format(ticket=outcome.ticket_id)
        if isinstance(outcome, TicketClosed):
            return _("Request #{ticket} is resolved, so nothing was added. Send /support to "
                     "open a new one.").format(ticket=outcome.ticket_id)
        return _("That top-up or request is not yours. Nothing was sent.")

    async def tap_a_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        await self.reply(update, ui._("Tap one of the buttons above, or send /cancel."))

    async def not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        await self.reply(update, ui._("Please write it as a text message, or send /cancel."))

    # --- admins -------------------------------------------------------------------------

    async def admin_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A message in an admin chat that replies to one of the bot's messages: an answer
        to the request that message is about."""
        message, user, chat = update.message, update.effective_user, update.effective_chat
        if message is None or user is None or chat is None:
            return
        replied = message.reply_to_message
        group = chat.type != ChatType.PRIVATE
        if not isinstance(replied, Message) or replied.from_user is None \
                or replied.from_user.id != context.bot.id:
            return
        ticket_id = await self._support.ticket_replied_to(chat.id, replied.message_id)
        ui = await self.ui(update)
        _ = ui._
        if ticket_id is None:
            if group:  # nothing else answers a reply in an admin group
                await message.reply_text(_("That message is not a support request: reply to "
                                           "a request's message to answer its user."))
                raise ApplicationHandlerStop
            return  # an admin's private chat: their own flows go on
        text = (message.text or "").strip()
        if not text:
            await message.reply_text(_("Only text reaches the user: write your answer as a "
                                       "text reply."))
        elif message_too_long(text):
            await message.reply_text(_("That is too long for one answer: please keep it under "
                                       "{limit} characters. Nothing was sent.").format(
                limit=MAX_MESSAGE_CHARS))
        else:
            outcome = await self._support.reply(ticket_id, text, admin_id=user.id,
                                                chat_id=chat.id, message_id=message.message_id)
            if isinstance(outcome, Replied):
                await message.reply_text(_("Sent to user {user} (request #{ticket}).").format(
                    user=outcome.user_id, ticket=outcome.ticket_id))
            else:
                await message.reply_text(_("There is no request #{ticket}.").format(
                    ticket=ticket_id))
        raise ApplicationHandlerStop

    async def tickets(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/tickets: the open requests, flagged ones first."""
        ui = await self.ui(update)
        _ = ui._
        listed = await self._support.open_list()
        if not listed.tickets:
            await self.reply(update, _("No open support requests."))
            return
        out = [_("Open support requests: {count}").format(count=listed.total)]
        out += [_ticket_line(ui, ticket) for ticket in listed.tickets]
        if listed.total > len(listed.tickets):
            out.append(_("… and {count} more.").format(
                count=listed.total - len(listed.tickets)))
        out.append(_("⚑: the user says a top-up was charged twice or not received."))
        await self.reply(update, "\n".join(out))

    async def resolve(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/resolve REQUEST_NUMBER"""
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        args = context.args or []
        number = whole_number(args[0].removeprefix("#")) if len(args) == 1 else None
        if number is None:
            await self.reply(update, _("Usage: /resolve REQUEST_NUMBER (the number after # in "
                                       "/tickets)"))
            return
        outcome = await self._support.resolve(number, admin_id=user.id)
        if isinstance(outcome, Resolved):
            text = _("Request #{ticket} is resolved; user {user} is told.").format(
                ticket=outcome.ticket_id, user=outcome.user_id)
        elif isinstance(outcome, AlreadyResolved):
            ticket = outcome.ticket
            text = _("Request #{ticket} was resolved before ({who}, {when}). Nothing was "
                     "changed.").format(ticket=ticket.id, who=ticket.resolved_by or "?",
                                        when=ui.when(ticket.resolved_at or ticket.updated_at))
        else:
            assert isinstance(outcome, NoSuchTicket)
            text = _("There is no request #{ticket}.").format(ticket=outcome.ticket_id)
        await self.reply(update, text)

    # --- registration -------------------------------------------------------------------

    def reply_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group PAYMENT_GROUP, ahead of the conversations: an admin's answer stops
        there (ApplicationHandlerStop)."""
        return [MessageHandler(filters.Chat(chat_id=self._admins) & filters.REPLY
                               & filters.UpdateType.MESSAGE & ~filters.COMMAND,
                               self.admin_reply)]

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group 0. /tickets and /resolve answer only in ADMIN_CHAT_IDS chats;
        elsewhere they are unknown commands."""
        pick: BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any] = CallbackQueryHandler(
            self.picked, pattern=PICK)
        conversation = ConversationHandler(
            name="support", persistent=True,
            entry_points=[CommandHandler("support", self.begin), pick],
            states={
                CHOOSE: [pick, MessageHandler(~filters.COMMAND, self.tap_a_button)],
                CATEGORY: [pick, CallbackQueryHandler(self.categorised,
                                                      pattern=CHOOSE_CATEGORY),
                           MessageHandler(~filters.COMMAND, self.tap_a_button)],
                WRITE: [pick, MessageHandler(filters.TEXT & ~filters.COMMAND, self.wrote),
                        MessageHandler(~filters.COMMAND, self.not_text)],
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )
        admins = filters.Chat(chat_id=self._admins)
        return [conversation,
                CommandHandler("tickets", self.tickets, filters=admins),
                CommandHandler("resolve", self.resolve, filters=admins)]
