"""The admins' /broadcast: an offer to the users who opted in to promotions, all of them or
those with a line of one operator.

``/broadcast all|smart|cellcard|metfone|seatel TEXT`` shows the offer as users will read
it and the audience count, with Confirm and Cancel; Confirm queues it once (through the
outbox: paced, after each user's quiet hours). The report comes back to the same chat
when every copy is final; ``/broadcast status NUMBER`` tells how it goes meanwhile. Only
ADMIN_CHAT_IDS chats are answered; elsewhere /broadcast is an unknown command and the
buttons do nothing.

The renderers of the offer (with its opt-out line) and of the report live here too.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from bot.domain.broadcasts import (
    MAX_OFFER_CHARS,
    Broadcast,
    OfferTextError,
    Tally,
    UnknownAudience,
    check_offer_text,
    parse_audience,
)
from bot.domain.numbers import whole_number
from bot.domain.operators import Operator
from bot.i18n import Translations
from bot.services.promotions import (
    AlreadyConfirmed,
    AlreadySent,
    BroadcastReport,
    BroadcastStatus,
    Cancelled,
    Confirmed,
    NobodyToTell,
    PreviewExpired,
    PromotionOffer,
    PromotionsService,
    WasCancelled,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place, stopping
from handlers.notification_views import NoticeView, Rendered

BUTTON_KIND = "bc"
BUTTON = cb.register(BUTTON_KIND, "id", "action")  # v1:bc:<broadcast>:ok | no
ADMIN_COMMANDS = ("broadcast",)  # answered only in ADMIN_CHAT_IDS chats
ADMIN_BUTTONS = (BUTTON_KIND,)  # pressed in an ADMIN_CHAT_IDS group too
_WORD_AND_REST = re.compile(r"(\S+)(?:\s+(.*))?", re.DOTALL)
_SHOWN_TEXT = 200  # characters of the offer /broadcast status shows


# --- how things read ----------------------------------------------------------------------


def offer_text(ui: Ui, text: str) -> str:
    """An offer as its reader gets it: the admin's text, and how to stop offers."""
    return text + "\n\n" + ui._("Stop offers: /settings")


def render_offer(ui: Ui, notice: PromotionOffer) -> Rendered:
    return offer_text(ui, notice.text), None


def audience_text(ui: Ui, operator: Operator | None) -> str:
    if operator is None:
        return ui._("every user who opted in")
    return ui._("users who opted in and have a {operator} line").format(
        operator=operator.display_name)


def counted_audience(ui: Ui, operator: Operator | None, count: int) -> str:
    if operator is None:
        return ui.ngettext("{count} user who opted in", "{count} users who opted in",
                           count).format(count=count)
    return ui.ngettext("{count} user who opted in and has a {operator} line",
                       "{count} users who opted in and have a {operator} line",
                       count).format(count=count, operator=operator.display_name)


def tally_lines(ui: Ui, tally: Tally, *, pending: bool) -> list[str]:
    _ = ui._
    out = [_("Delivered: {count}").format(count=tally.delivered),
           _("Blocked the bot: {count}").format(count=tally.blocked),
           _("Failed: {count}").format(count=tally.failed)]
    if tally.opted_out:
        out.append(_("Turned offers off before it arrived: {count}").format(
            count=tally.opted_out))
    if pending:
        out.append(_("Still pending: {count}").format(count=tally.pending))
    return out


def render_report(ui: Ui, notice: BroadcastReport) -> Rendered:
    tally = Tally(delivered=notice.delivered, blocked=notice.blocked, failed=notice.failed,
                  opted_out=notice.opted_out)
    head = ui._("📣 Broadcast #{broadcast} to {audience} is done.").format(
        broadcast=notice.broadcast_id, audience=audience_text(ui, notice.operator))
    return "\n".join([head, *tally_lines(ui, tally, pending=False)]), None


NOTICE_VIEWS = (
    NoticeView(PromotionOffer, render_offer),
    NoticeView(BroadcastReport, render_report),
)


def already_sent_text(ui: Ui, outcome: AlreadySent) -> str:
    earlier = outcome.broadcast
    return ui._("This offer is already broadcast #{broadcast} (to {audience}): each user gets "
                "it once. /broadcast status {broadcast} tells how it goes; change the text "
                "to send a new offer.").format(broadcast=earlier.id,
                                               audience=audience_text(ui, earlier.operator))


def usage_text(ui: Ui) -> str:
    return ui._("Usage: /broadcast all|smart|cellcard|metfone|seatel TEXT\n"
                "For example: /broadcast cellcard Double data on every top-up this weekend!\n"
                "/broadcast status NUMBER tells how a broadcast went.")


def _state_text(ui: Ui, broadcast: Broadcast, tally: Tally) -> str:
    _ = ui._
    if broadcast.cancelled_at is not None:
        return _("cancelled {when}, nothing sent").format(when=ui.when(broadcast.cancelled_at))
    if broadcast.confirmed_at is None:
        return _("previewed, not confirmed")
    if broadcast.finished_at is not None:
        return _("done, reported {when}").format(when=ui.when(broadcast.finished_at))
    if broadcast.queued is None:
        return _("being queued")
    if tally.final:
        return _("every message is final; the report follows shortly")
    return _("sending")


def status_text(ui: Ui, status: BroadcastStatus) -> str:
    _ = ui._
    broadcast, tally = status.broadcast, status.tally
    shown = broadcast.text if len(broadcast.text) <= _SHOWN_TEXT \
        else broadcast.text[:_SHOWN_TEXT].rstrip() + "…"
    out = [_("📣 Broadcast #{broadcast} to {audience}").format(
               broadcast=broadcast.id, audience=audience_text(ui, broadcast.operator)),
           _("Made by {who}, {when}").format(who=broadcast.created_by,
                                            when=ui.when(broadcast.created_at)),
           _("State: {state}").format(state=_state_text(ui, broadcast, tally))]
    if broadcast.confirmed_at is not None:
        out.append(_("Queued: {count}").format(count=tally.total))
        out += tally_lines(ui, tally, pending=True)
    out += ["", shown]
    return "\n".join(out)


# --- the flow -----------------------------------------------------------------------------


def _arguments(message: Message) -> str:
    """The text after the command (/broadcast or /broadcast@bot), newlines kept."""
    text = message.text or ""
    entities = message.entities or ()
    skip = entities[0].length if entities and entities[0].offset == 0 else 0
    return text[skip:].strip()


class BroadcastFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, promotions: PromotionsService,
                 admin_chat_ids: Collection[int]) -> None:
        super().__init__(users, i18n)
        self._promotions = promotions
        self._admins = frozenset(admin_chat_ids)

    async def command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/broadcast AUDIENCE TEXT, or /broadcast status NUMBER."""
        message, user, chat = update.effective_message, update.effective_user, \
            update.effective_chat
        assert message is not None and user is not None and chat is not None
        ui = await self.ui(update)
        _ = ui._
        found = _WORD_AND_REST.fullmatch(_arguments(message))
        if found is None:
            await self.reply(update, usage_text(ui))
            return
        word, rest = found.group(1), found.group(2) or ""
        if word.lower() == "status":
            await self._status(update, ui, rest)
            return
        try:
            operator = parse_audience(word)
        except UnknownAudience:
            await self.reply(update, _("“{word}” is not an audience: write all, smart, "
                                       "cellcard, metfone or seatel.").format(word=word[:40])
                             + "\n\n" + usage_text(ui))
            return
        try:
            text = check_offer_text(rest)
        except OfferTextError as error:
            if error.reason is OfferTextError.Reason.EMPTY:
                await self.reply(update, _("Write the offer after the audience. Nothing was "
                                           "sent.") + "\n\n" + usage_text(ui))
            else:
                await self.reply(update, _(
                    "That offer is {length} characters long; one offer holds at most {limit} "
                    "(Telegram's limit, less the line on how to stop offers). Shorten it and "
                    "send /broadcast again. Nothing was sent.").format(
                    length=error.length, limit=MAX_OFFER_CHARS))
            return
        outcome = await self._promotions.preview(operator, text, actor=f"admin:{user.id}",
                                                 chat_id=chat.id)
        if isinstance(outcome, NobodyToTell):
            await self.reply(update, _("Nobody would get it: there are no {audience}. "
                                       "Nothing was sent.").format(
                audience=audience_text(ui, operator)))
            return
        if isinstance(outcome, AlreadySent):
            await self.reply(update, already_sent_text(ui, outcome))
            return
        broadcast = outcome.broadcast
        await self.reply(update, offer_text(ui, broadcast.text))
        buttons = InlineKeyboardMarkup([[
            InlineKeyboardButton(ui.ngettext("✅ Send to {count} user", "✅ Send to {count} users",
                                             broadcast.audience).format(
                count=broadcast.audience),
                callback_data=cb.encode(BUTTON_KIND, broadcast.id, "ok")),
            InlineKeyboardButton(_("✖️ Cancel"),
                                 callback_data=cb.encode(BUTTON_KIND, broadcast.id, "no"))]])
        await self.reply(update, _(
            "📣 Broadcast #{broadcast}: the message above goes to {audience}, each outside "
            "their quiet hours. Send it?").format(
            broadcast=broadcast.id,
            audience=counted_audience(ui, operator, broadcast.audience)), reply_markup=buttons)

    async def _status(self, update: Update, ui: Ui, rest: str) -> None:
        number = whole_number(rest.strip().removeprefix("#"))
        if number is None:
            await self.reply(update, usage_text(ui))
            return
        status = await self._promotions.status(number)
        if status is None:
            await self.reply(update, ui._("There is no broadcast #{broadcast}.").format(
                broadcast=number))
            return
        await self.reply(update, status_text(ui, status))

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Confirm or Cancel under a preview: re-read every time, from its own chat only."""
        pressed, chat = await self.pressed(update), update.effective_chat
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        broadcast_id, action = pressed.int_arg("id"), pressed.arg("action")
        if broadcast_id is None or chat is None or chat.id not in self._admins \
                or action not in ("ok", "no"):
            await query.answer(_("That button is no longer active."))
            return
        actor = f"admin:{user.id}"
        outcome = (await self._promotions.confirm(broadcast_id, actor=actor, chat_id=chat.id)
                   if action == "ok" else
                   await self._promotions.cancel(broadcast_id, actor=actor, chat_id=chat.id))
        if isinstance(outcome, Confirmed):
            await query.answer(_("Queuing broadcast #{broadcast}…").format(
                broadcast=broadcast_id))
            queued = await self._promotions.queue_offers(broadcast_id)
            await edit_in_place(query, ui.ngettext(
                "📣 Broadcast #{broadcast} is queued: {count} offer. It goes out outside its "
                "reader's quiet hours; I will report here when it is delivered or final.",
                "📣 Broadcast #{broadcast} is queued: {count} offers. They go out outside "
                "each reader's quiet hours; I will report here when every one is delivered "
                "or final.", queued).format(broadcast=broadcast_id, count=queued)
                + "\n" + _("/broadcast status {broadcast} tells how it goes.").format(
                broadcast=broadcast_id))
        elif isinstance(outcome, Cancelled):
            await query.answer()
            await edit_in_place(query, _("Broadcast #{broadcast} is cancelled. Nothing was "
                                         "sent.").format(broadcast=broadcast_id))
        elif isinstance(outcome, AlreadyConfirmed):
            await query.answer(_("Broadcast #{broadcast} is already queued: it goes out "
                                 "once.").format(broadcast=broadcast_id), show_alert=True)
        elif isinstance(outcome, WasCancelled):
            await query.answer(_("Broadcast #{broadcast} was cancelled. Send /broadcast again "
                                 "to make a new one.").format(broadcast=broadcast_id),
                               show_alert=True)
        elif isinstance(outcome, AlreadySent):
            await query.answer()
            await edit_in_place(query, ui._("Broadcast #{broadcast} was not sent.").format(
                broadcast=broadcast_id) + "\n" + already_sent_text(ui, outcome))
        elif isinstance(outcome, PreviewExpired):
            await query.answer()
            await edit_in_place(query, _("This preview is more than an hour old, so broadcast "
                                         "#{broadcast} was not sent. Send /broadcast again.")
                                .format(broadcast=broadcast_id))
        else:
            await query.answer(_("That button is no longer active."))

    # --- registration -------------------------------------------------------------------

    def button_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group PAYMENT_GROUP, ahead of any conversation of the admin's."""
        return [CallbackQueryHandler(stopping(self.button), pattern=BUTTON)]

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group 0, with the other admin commands: only in ADMIN_CHAT_IDS chats."""
        return [CommandHandler("broadcast", self.command,
                               filters=filters.Chat(chat_id=self._admins))]
