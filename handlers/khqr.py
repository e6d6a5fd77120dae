"""Paying into the wallet with a Bakong KHQR: /wallet's "Pay with KHQR", the amount, then
the QR (sent through the outbox as a photo) with "I have paid" and "Cancel" under it.

Renderers of the KHQR's outbox messages live here too: the QR, its message edited once it is
paid, expired or cancelled, the receipt, and the admins' notices.
"""

from __future__ import annotations

import html
from typing import Any

from babel.dates import format_timedelta
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, ContextTypes

from bot.domain.money import Money
from bot.domain.wallet import KhqrState
from bot.i18n import Translations
from bot.services.khqr import (
    CheckOutcome,
    KhqrAmountDiffers,
    KhqrChecksRefused,
    KhqrClosed,
    KhqrIssued,
    KhqrQuote,
    KhqrReceipt,
    KhqrService,
    KhqrStatus,
    KhqrUnavailable,
    TooManyOpen,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place, stopping
from handlers.notification_views import NoticeView, QrView, Rendered, RenderedQr

CHOOSE = cb.register("kq")  # v1:kq: the amounts
ISSUE = cb.register("ka", "amount")  # v1:ka:<wallet amount in minor units>
PAID = cb.register("kp", "khqr")  # v1:kp:<khqr id>: "I have paid"
CANCEL = cb.register("kc", "khqr")  # v1:kc:<khqr id>


def pay_button(ui: Ui) -> InlineKeyboardButton:
    """/wallet's way in."""
    return InlineKeyboardButton(ui._("🏦 Pay with KHQR (any Cambodian bank app)"),
                                callback_data=cb.encode("kq"))


def _rate(ui: Ui, khr_per_usd: int) -> str:
    return ui._("Rate: {riel} for {dollar}").format(
        riel=ui.money(Money.of_major(khr_per_usd, "KHR")), dollar=ui.money(
            Money.of_major(1, "USD")))


def _quote_button(ui: Ui, quote: KhqrQuote) -> InlineKeyboardButton:
    label = ui._("+ {amount}").format(amount=ui.money(quote.credit))
    if quote.asked.currency != quote.credit.currency:
        label = ui._("{label} (pay {asked})").format(label=label, asked=ui.money(quote.asked))
    return InlineKeyboardButton(label, callback_data=cb.encode("ka", quote.credit.minor))


# --- the outbox's messages ----------------------------------------------------------------

def render_issued(ui: Ui, notice: KhqrIssued) -> RenderedQr:
    _ = ui._
    lines = [_("🏦 KHQR: pay {amount} to {recipient}").format(
        amount=f"<b>{html.escape(ui.money(notice.amount))}</b>",
        recipient=html.escape(notice.recipient)),
        _("Scan it with your bank app (ABA, ACLEDA, Wing or any other Bakong member), or "
          "save the picture and open it there.")]
    if notice.khr_per_usd is not None:
        lines.append(_("{credit} will be added to your wallet. {rate}.").format(
            credit=html.escape(ui.money(notice.credit)),
            rate=html.escape(_rate(ui, notice.khr_per_usd))))
    else:
        lines.append(_("It is added to your wallet as soon as it arrives."))
    lines.append(_("⏳ Expires in {duration} (at {time}).").format(
        duration=format_timedelta(notice.expires_at - notice.at, locale=ui.locale),
        time=html.escape(ui.when(notice.expires_at))))
    markup = InlineKeyboardMarkup([[
        InlineKeyboardButton(_("✅ I have paid"), callback_data=cb.encode("kp", notice.khqr_id)),
        InlineKeyboardButton(_("✖ Cancel"), callback_data=cb.encode("kc", notice.khqr_id))]])
    return notice.payload, "\n".join(lines), markup


def render_closed(ui: Ui, notice: KhqrClosed) -> Rendered:
    _ = ui._
    amount = ui.money(notice.amount)
    return {
        KhqrState.PAID: _("✅ This KHQR for {amount} is paid. The receipt is below."),
        KhqrState.EXPIRED: _("⌛ This KHQR for {amount} expired at {time}. Do not pay it any "
                             "more: make a new one in /wallet."),
        KhqrState.CANCELLED: _("✖ This KHQR for {amount} is cancelled. Do not pay it; make a "
                               "new one in /wallet if you want to add money."),
        KhqrState.OPEN: _("🏦 KHQR for {amount}"),
    }[notice.state].format(amount=amount, time=ui.when(notice.expires_at)), None


def render_receipt(ui: Ui, notice: KhqrReceipt) -> Rendered:
    _ = ui._
    paid = ui.money(notice.paid)
    if notice.payment_id is None:
        out = [_("🧾 {paid} arrived for your KHQR: too little to add anything to your wallet. "
                 "An operator has been told.").format(paid=paid)]
    else:
        out = [_("🧾 Receipt: {amount} added to your wallet").format(
            amount=ui.money(notice.credited))]
    out.append(_("Paid by KHQR: {paid}, from {bank}").format(
        paid=paid, bank=notice.payer_bank.upper()))
    out.append(_("Bakong transaction: {hash}").format(hash=notice.transaction_shown))
    if notice.paid != notice.asked:
        out.append(_("The KHQR asked for {asked}; what arrived was added.").format(
            asked=ui.money(notice.asked)))
    if notice.khr_per_usd is not None:
        out.append(_rate(ui, notice.khr_per_usd))
    if notice.paid_after is KhqrState.EXPIRED:
        out.append(_("This KHQR had expired, but the money arrived, so it was added."))
    elif notice.paid_after is KhqrState.CANCELLED:
        out.append(_("This KHQR had been cancelled, but the money arrived, so it was added."))
    out.append(_("Time: {when}").format(when=ui.when(notice.at)))
    out.append(_("Available after this: {amount}").format(amount=ui.money(notice.balance)))
    return "\n".join(out), None


def render_amount_differs(ui: Ui, notice: KhqrAmountDiffers) -> Rendered:
    return ui._("⚠️ KHQR {khqr} of user {user} asked for {asked} and was paid {paid} "
                "(Bakong transaction {hash}). {credited} was credited: what arrived, at the "
                "KHQR's rate.").format(
        khqr=notice.khqr_id, user=notice.user_id, asked=ui.money(notice.asked),
        paid=ui.money(notice.paid), hash=notice.transaction_shown,
        credited=ui.money(notice.credited)), None


def render_checks_refused(ui: Ui, notice: KhqrChecksRefused) -> Rendered:
    return ui.ngettext(
        "⚠️ Bakong refuses the KHQR payment checks: {detail}. {count} KHQR is waiting to be "
        "checked; the checks are tried again every few minutes.",
        "⚠️ Bakong refuses the KHQR payment checks: {detail}. {count} KHQRs are waiting to be "
        "checked; the checks are tried again every few minutes.",
        notice.open_count).format(detail=notice.detail, count=notice.open_count), None


NOTICE_VIEWS = (
    NoticeView(KhqrClosed, render_closed, edits_caption=True),
    NoticeView(KhqrReceipt, render_receipt),
    NoticeView(KhqrAmountDiffers, render_amount_differs),
    NoticeView(KhqrChecksRefused, render_checks_refused),
)
QR_VIEWS = (QrView(KhqrIssued, render_issued),)


def status_text(ui: Ui, status: KhqrStatus) -> str:
    """The answer to "I have paid" (and to a Cancel that came too late)."""
    _ = ui._
    when = ui.when(status.expires_at) if status.expires_at is not None else ""
    if status.outcome is CheckOutcome.PAID:
        return (_("✅ Paid: {amount} added to your wallet.").format(
            amount=ui.money(status.credited)) if status.credited is not None
            else _("✅ Paid. The receipt is in the chat."))
    if status.outcome is CheckOutcome.PENDING and status.state is KhqrState.OPEN:
        return _("Not arrived yet. I keep checking until {time} and send a receipt here as "
                 "soon as it does.").format(time=when)
    return {
        CheckOutcome.ALREADY_PAID: _("This KHQR is paid already. The receipt is in the chat."),
        CheckOutcome.PENDING: _("This KHQR can no longer be paid (since {time}), but I keep "
                                "checking for a while in case your payment is on its way."),
        CheckOutcome.NO_LONGER_CHECKED: _("This KHQR expired at {time} and no payment "
                                          "arrived. Make a new one in /wallet."),
        CheckOutcome.UNAVAILABLE: _("Bakong did not answer just now. I keep checking and send "
                                    "a receipt here when the payment arrives."),
        CheckOutcome.NOT_FOUND: _("That button is no longer active."),
        CheckOutcome.CANCELLED: _("Cancelled. Do not pay this KHQR."),
    }[status.outcome].format(time=when)


# --- the flow -----------------------------------------------------------------------------

class KhqrFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, khqr: KhqrService) -> None:
        super().__init__(users, i18n)
        self._khqr = khqr

    async def choose(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The amounts, each with what its QR asks."""
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        await query.answer()
        quotes = self._khqr.quotes()
        lines = [_("🏦 Pay with KHQR: scan the QR with ABA, ACLEDA, Wing or any other "
                   "Cambodian bank app. Paid to {recipient}.").format(
            recipient=self._khqr.recipient_name)]
        rates = {quote.khr_per_usd for quote in quotes if quote.khr_per_usd is not None}
        if rates:
            lines.append(_rate(ui, rates.pop()))
        lines.append(_("How much do you want to add?"))
        buttons = [_quote_button(ui, quote) for quote in quotes]
        await edit_in_place(query, "\n".join(lines), InlineKeyboardMarkup(
            [buttons[i:i + 2] for i in range(0, len(buttons), 2)]))

    async def issue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An amount: the QR is made and sent (through the outbox, within a second)."""
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        minor = pressed.int_arg("amount")
        offered = {quote.credit.minor: quote for quote in self._khqr.quotes()}
        if minor not in offered:
            await query.answer(_("That button is no longer active."))
            return
        try:
            issued = await self._khqr.issue(pressed.user.id, offered[minor].credit)
        except TooManyOpen:
            await query.answer(_("You already have KHQRs waiting to be paid. Pay one, or tap "
                                 "Cancel under it, before making another."), show_alert=True)
            return
        except KhqrUnavailable:
            await query.answer(_("That button is no longer active."))
            return
        await query.answer()
        await edit_in_place(query, _("🏦 Your KHQR for {amount} is on its way. Scan it with "
                                     "your bank app before {time}.").format(
            amount=ui.money(issued.quote.asked), time=ui.when(issued.expires_at)))

    async def paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """"I have paid": checked with Bakong at once."""
        await self._answer(update, self._khqr.check_now)

    async def cancel_qr(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._answer(update, self._khqr.cancel)

    async def _answer(self, update: Update, act: Any) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        khqr_id = pressed.int_arg("khqr")
        if khqr_id is None:
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return
        status: KhqrStatus = await act(pressed.user.id, khqr_id)
        await pressed.query.answer(status_text(pressed.ui, status), show_alert=True)

    def button_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """Answered ahead of any conversation in progress (money, like an approval)."""
        return [CallbackQueryHandler(stopping(self.choose), pattern=CHOOSE),
                CallbackQueryHandler(stopping(self.issue), pattern=ISSUE),
                CallbackQueryHandler(stopping(self.paid), pattern=PAID),
                CallbackQueryHandler(stopping(self.cancel_qr), pattern=CANCEL)]
