"""/privacy: what is stored, why, how long and who sees it. /forget: after a confirmation,
delete the user's data and keep only what the accounts need.

Both are answered ahead of the conversations (a forget ends them, and its drafts go with
it), and the buttons are re-checked on every press: the confirmation carries when it was
asked, and a press too late, or from before the user was last forgotten, changes nothing.
Money in the wallet is shown with the ways to get it out first; the user may go on, and it
stays in the ledger under their Telegram id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    Application,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
)

from bot.domain.money import Money
from bot.domain.privacy import Erased, Obstacles, Stored, money_token
from bot.i18n import Translations
from bot.services.privacy import Blocked, PrivacyService, Ready, Stale
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place, stopping

# ok (forget) or no; when it was asked (µs since 1970); the token of the money in the wallet
# the question showed, which the forget leaves there ("-": none).
FORGET = cb.register("fg", "action", "asked", "money")
NO_MONEY = "-"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def asked_token(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def asked_moment(token: int) -> datetime | None:
    """When the question was asked; None for a token no question carries (past year 9999:
    a forged button)."""
    try:
        return _EPOCH + token * _MICROSECOND
    except OverflowError:
        return None


def privacy_text(ui: Ui) -> str:
    _ = ui._
    return "\n\n".join([
        _("🔒 Your data here"),
        _("What I store: your lines (phone numbers and eSIM ICCIDs, encrypted, with a keyed "
          "fingerprint of each to find it), the names you give them, their balance "
          "readings, your auto-recharge rules, your top-ups and wallet movements with their "
          "payment references (encrypted), your support messages (encrypted), what you type "
          "in a flow you have not finished (encrypted), the messages I send you, a log of "
          "what was done when (by ids, amounts and masked numbers), and your language, time "
          "zone, quiet hours and which messages you asked for. SMS codes are never stored: "
          "only a keyed fingerprint of each, with the number's fingerprint and when it was "
          "sent. Your Telegram name is not stored."),
        _("Why: to watch and top up your lines, to ask you before charging, to keep your "
          "wallet right, and to answer you when you write to support."),
        _("How long: your lines, readings, rules, support messages, the messages I send you "
          "and your settings, until you send /forget (unbinding a line keeps its number and "
          "history, for when you bind it again). What you type in a flow, until the flow "
          "ends or has had no answer for 15 minutes. An SMS code's fingerprints, for an hour "
          "after it was sent (they limit how many codes a number gets), or longer while a "
          "lockout after wrong codes runs."),
        _("What /forget keeps, for our accounts, under your Telegram id: each top-up's "
          "amount, date, state, plan and our reference; each payment's amount, date and "
          "reference (Telegram's, the provider's or Bakong's); each wallet movement's "
          "amount, date and kind; and the log of what was done when, by ids and amounts. A "
          "line they belong to stays as an empty entry: its operator, no number, ICCID or "
          "name. Nothing kept holds a phone number, an ICCID, a line's name or your name. "
          "Money left in the wallet stays there, yours again if you come back. A code sent "
          "in the last hour stays, without your id, until its hour is over."),
        _("Who sees it: you, here. Our team (the admins) sees your Telegram id, your lines "
          "masked (like 012 ••• 678, without their names), your wallet and the top-up you "
          "write about when you use /support, and your id with the amounts when they credit "
          "or refund your wallet, or when a payment or a top-up needs them. Whoever runs the "
          "bot's server can read its database with its keys. The top-up provider gets the "
          "number it tops up, the SMS gateway the number a code is sent to, the eSIM "
          "provider the eSIMs you buy, Bakong your KHQR payments, and Telegram this chat."),
        _("/forget deletes what is yours here and keeps only what our accounts need."),
    ])


def obstacles_text(ui: Ui, obstacles: Obstacles) -> str:
    _ = ui._
    out = [_("I cannot forget you yet:")]
    for amount in obstacles.balances:
        if amount.minor < 0:
            out.append(_("• Your wallet shows {amount}: write to /support to settle it.")
                       .format(amount=ui.money(amount)))
    for amount in obstacles.held:
        out.append(_("• {amount} is held for a top-up on its way: wait until it is done.")
                   .format(amount=ui.money(amount)))
    if obstacles.charges_open:
        out.append(_("• A top-up is waiting for your approval or is on its way: approve or "
                     "decline it, or wait until it is done."))
    if obstacles.khqr_checked_until is not None:
        out.append(_("• A KHQR code you made is checked for a payment until {time}: wait "
                     "until then.").format(time=ui.when(obstacles.khqr_checked_until)))
    if obstacles.disputes_held:
        out.append(_("• A payment of yours was not credited and waits for our team to "
                     "refund it: write to /support."))
    out.append(_("Then send /forget again. Nothing was deleted."))
    return "\n".join(out)


def money_text(ui: Ui, money_left: tuple[Money, ...]) -> str:
    """What becomes of money in the wallet, and the ways that exist to get it out first."""
    _ = ui._
    amounts = ", ".join(ui.money(amount) for amount in money_left)
    return "\n".join([
        _("💰 Your wallet holds {amount}. Forgetting you does not pay it out: it stays in "
          "the ledger under your Telegram id, and is yours again if you come back with "
          "this Telegram account.").format(amount=amounts),
        _("To have it first, spend it on a top-up (/lines) or an eSIM (/esim). Money paid "
          "with Telegram Stars can be refunded, a whole payment at a time, while the wallet "
          "still holds it: write to /support with the payment's transaction id (Telegram "
          "shows it with the payment) and our team returns it. Cash, bank transfers, KHQR "
          "and card payments cannot be paid back through the bot."),
    ])


def question_text(ui: Ui, stored: Stored) -> str:
    _ = ui._
    return "\n".join([
        _("Forget you? This cannot be undone. I will delete:"),
        _("• Lines (numbers, ICCIDs and their names): {count}").format(count=stored.lines),
        _("• Balance readings: {count}").format(count=stored.readings),
        _("• Auto-recharge rules: {count}").format(count=stored.rules),
        _("• Support requests: {count} (messages: {messages})").format(
            count=stored.tickets, messages=stored.support_messages),
        _("• Your settings (language, time zone, quiet hours, summaries, offers), what you "
          "typed in flows not finished, the messages I keep for you and the records of SMS "
          "codes sent for you"),
        "",
        _("I will keep, for our accounts, under your Telegram id only: top-ups: {charges}, "
          "payments: {payments}, wallet movements: {movements}. They hold amounts, dates and "
          "references: no phone number, ICCID, line name or name.").format(
            charges=stored.charges, payments=stored.payments, movements=stored.movements),
    ])


def forgotten_text(ui: Ui, erased: Erased, money_left: tuple[Money, ...] = ()) -> str:
    _ = ui._
    kept = erased.kept
    codes = (_("• Records of SMS codes: {deleted}; {detached} sent in the last hour stay, "
               "without your id, so that their number still gets no more codes than "
               "allowed").format(deleted=erased.codes_deleted, detached=erased.codes_detached)
             if erased.codes_detached else
             _("• Records of SMS codes: {deleted}").format(deleted=erased.codes_deleted))
    out = [
        _("Done: I forgot you. Deleted:"),
        _("• Lines (numbers, ICCIDs and their names): {count}").format(count=erased.lines),
        _("• Balance readings: {count}").format(count=erased.readings),
        _("• Auto-recharge rules: {count}").format(count=erased.rules),
        _("• Support requests: {count} (messages: {messages})").format(
            count=erased.tickets, messages=erased.support_messages),
        _("• Messages I kept for you or about you: {count}").format(
            count=erased.notifications),
        codes,
        _("• Your settings and what you typed in flows not finished"),
        "",
        _("Kept, for our accounts, under your Telegram id only: top-ups: {charges}, "
          "payments: {payments}, wallet movements: {movements}, with amounts, dates and "
          "references: no phone number, ICCID, line name or name.").format(
            charges=kept.charges, payments=kept.payments, movements=kept.movements),
    ]
    if money_left:
        out.append(_("Your wallet's {amount} stays in the ledger under your Telegram id.")
                   .format(amount=", ".join(ui.money(amount) for amount in money_left)))
    out += ["", _("The messages in this chat are Telegram's: delete the chat to remove them. "
                  "Send /start to begin again as a new user.")]
    return "\n".join(out)


def end_conversations(application: Application, chat_id: int,  # type: ignore[type-arg]
                      user_id: int) -> int:
    """Ends every conversation of the user in ``chat_id`` as a flow's own END would, and
    cancels its timeout (no "this took too long" reaches a forgotten user).

    PTB (22.x) has no public way to end a conversation from outside it: a state changes
    only by what a handler inside the conversation returns, by its timeout, or by what the
    persistence hands over once, at ``initialize()``. The persisted states and drafts are
    deleted by the forget's own transaction (storage/privacy.py), which covers a restart;
    the running process's copy is PTB's ``ConversationHandler._conversations``, and this is
    the one place that touches it: it deletes only this user's keys, the way
    ``ConversationHandler._update_state(END)`` does (a ``TrackingDict`` deletion, which the
    next ``update_persistence`` writes as a deleted state). tests/flow/test_privacy.py
    checks that the user's flow is over and its timeout gone, so a PTB upgrade that changes
    this fails there."""
    ended = 0
    for group in application.handlers.values():
        for handler in group:
            if not isinstance(handler, ConversationHandler):
                continue
            key = _key(handler, chat_id, user_id)
            if key is None:
                continue
            conversations = handler._conversations
            if key in conversations:
                del conversations[key]
                ended += 1
            timeout = handler.timeout_jobs.pop(key, None)
            if timeout is not None:
                timeout.schedule_removal()
    return ended


def _key(handler: ConversationHandler,  # type: ignore[type-arg]
         chat_id: int, user_id: int) -> tuple[int, ...] | None:
    """The handler's conversation key for the user's chat, as ``_get_key`` builds it; None
    for a conversation per message (keyed by a message id: this bot has none)."""
    if handler.per_message:
        return None
    return tuple(part for part, used in ((chat_id, handler.per_chat),
                                         (user_id, handler.per_user)) if used)


class PrivacyFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 privacy: PrivacyService) -> None:
        super().__init__(users, i18n)
        self._privacy = privacy

    async def show(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        await self.reply(update, privacy_text(ui))

    def _question(self, ui: Ui, ready: Ready) -> tuple[str, InlineKeyboardMarkup]:
        """The confirmation: what goes and stays (and the money first, if any), with its
        buttons carrying when it was asked and the money it showed."""
        _ = ui._
        asked = asked_token(ui.now)
        text, yes, money = question_text(ui, ready.stored), _("🗑 Yes, forget me"), NO_MONEY
        if ready.money_left:
            text = money_text(ui, ready.money_left) + "\n\n" + text
            yes, money = _("🗑 Forget me anyway"), money_token(ready.money_left)
        return text, InlineKeyboardMarkup([[
            InlineKeyboardButton(yes, callback_data=cb.encode("fg", "ok", asked, money)),
            InlineKeyboardButton(_("Cancel"),
                                 callback_data=cb.encode("fg", "no", asked, NO_MONEY))]])

    async def ask(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        review = await self._privacy.review(user.id)
        if isinstance(review, Blocked):
            await self.reply(update, obstacles_text(ui, review.obstacles))
            return
        text, markup = self._question(ui, review)
        await self.reply(update, text, reply_markup=markup)

    async def press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui, data = pressed.query, pressed.ui, pressed.data
        _ = ui._
        action = data.arg("action")
        if action == "no":
            await query.answer()
            await edit_in_place(query, _("Cancelled. Nothing was deleted."))
            return
        token, money = data.int_arg("asked"), data.arg("money")
        asked_at = asked_moment(token) if token is not None else None
        if action != "ok" or asked_at is None:
            await query.answer(_("That button is no longer active."))
            return
        outcome = await self._privacy.forget(pressed.user.id, asked_at=asked_at,
                                             money_shown=None if money == NO_MONEY else money)
        if isinstance(outcome, Stale):
            await query.answer(_("That button is no longer active. Send /forget again."),
                               show_alert=True)
            return
        if isinstance(outcome, Blocked):
            await query.answer()
            await edit_in_place(query, obstacles_text(ui, outcome.obstacles))
            return
        if isinstance(outcome, Ready):  # the wallet moved since the question: ask again
            await query.answer(_("Your wallet changed since I asked. Nothing was deleted."),
                               show_alert=True)
            text, markup = self._question(ui, outcome)
            await edit_in_place(query, text, markup)
            return
        # The drafts in memory go too (the stored ones went with the forget), any flow the
        # user was in ends, and that is written through at once.
        chat_id = update.effective_chat.id if update.effective_chat else pressed.user.id
        end_conversations(context.application, chat_id, pressed.user.id)
        context.application.drop_user_data(pressed.user.id)
        await context.application.update_persistence()
        await query.answer()
        await edit_in_place(query, forgotten_text(ui, outcome.erased, outcome.money_left))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """Answered ahead of the conversations (group -1): /privacy only shows, so a flow
        waiting for text goes on; /forget ends them when it is confirmed."""
        return [CommandHandler("privacy", stopping(self.show)),
                CommandHandler("forget", stopping(self.ask)),
                CallbackQueryHandler(stopping(self.press), pattern=FORGET)]
