"""/wallet: balance, holds and last movements; funding through Telegram Payments (Stars
or a provider); the admins' /credit (cash, bank transfer) and /refund (Stars).

Payment updates (pre-checkout queries, successful and refunded payments) are handled in a
group of their own ahead of the conversations, so no flow's state can swallow money, and
stop there. Renderers of the wallet's outbox messages live here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    SuccessfulPayment,
    Update,
)
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    ApplicationHandlerStop,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from bot.domain.money import Money, MoneyError, parse_money
from bot.domain.numbers import whole_number
from bot.domain.wallet import EntryKind
from bot.i18n import Translations
from bot.services.users import UsersService
from bot.services.wallet import (
    SOURCE_TELEGRAM,
    AlreadyCredited,
    Credited,
    Disputed,
    DisputedPayment,
    DisputeReason,
    Movement,
    OperatorCreditError,
    PaymentDisputed,
    PaymentDisputeHeld,
    PaymentNotRecognised,
    PaymentProblem,
    PaymentsUnavailable,
    RefundRejected,
    RefundResult,
    RefundStatus,
    StarRefunder,
    WalletCredit,
    WalletRefund,
    WalletService,
    WalletSummary,
)
from handlers import callback_data as cb
from handlers.common import Flow, Ui
from handlers.history import history_button
from handlers.khqr import pay_button as khqr_pay_button
from handlers.notification_views import NoticeView, Rendered

log = logging.getLogger(__name__)

FUND = cb.register("wf", "amount")  # v1:wf:<amount in minor units>
PAYMENT_GROUP = -1  # ahead of group 0, where the conversations are
ADMIN_COMMANDS = ("credit", "refund")  # answered only in ADMIN_CHAT_IDS chats
CREDIT_RETRY_DELAYS = (0.5, 2.0, 5.0)  # seconds between tries of a payment's credit


# --- how things read ----------------------------------------------------------------------


def _movement_label(ui: Ui, entry: Movement) -> str:
    _ = ui._
    labels = {
        EntryKind.PAYMENT: _("Paid through Telegram"),
        EntryKind.OPERATOR_CREDIT: _("Cash or bank transfer"),
        EntryKind.KHQR: _("Paid by KHQR"),
        EntryKind.HOLD: _("Top-up of a line"),
        EntryKind.RELEASE: _("Top-up did not go through: returned"),
        EntryKind.REFUND: _("Refunded to you"),
    }
    label = labels[entry.kind]
    if entry.kind is EntryKind.OPERATOR_CREDIT and entry.reference:
        label = _("{label} (ref. {reference})").format(label=label, reference=entry.reference)
    return label


def _signed(ui: Ui, amount: Money) -> str:
    shown = ui.money(Money(abs(amount.minor), amount.currency))
    return f"+{shown}" if amount.minor >= 0 else f"−{shown}"


def wallet_text(ui: Ui, summary: WalletSummary) -> str:
    _ = ui._
    out = [_("👛 Your wallet"),
           _("Available: {amount}").format(amount=ui.money(summary.available))]
    if summary.held.is_positive:
        out.append(_("Held for top-ups in progress: {amount}").format(
            amount=ui.money(summary.held)))
    out.append("")
    if summary.movements:
        out.append(_("Last movements:"))
        out.extend(f"{ui.when(entry.at)}  {_signed(ui, entry.amount)}  "
                   f"{_movement_label(ui, entry)}" for entry in summary.movements)
    else:
        out.append(_("No movements yet."))
    return "\n".join(out)


def problem_text(ui: Ui, problem: PaymentProblem) -> str:
    _ = ui._
    return {
        PaymentProblem.FORGED: _("This invoice was not issued by this bot. Open /wallet and "
                                 "choose an amount there."),
        PaymentProblem.WRONG_USER: _("This invoice was issued to someone else. Open /wallet "
                                     "to get your own."),
        PaymentProblem.PRICE_CHANGED: _("The price has changed since this invoice was issued. "
                                        "Open /wallet and choose the amount again."),
        PaymentProblem.UNAVAILABLE: _("Payments are not available at the moment. Please try "
                                      "again later."),
        PaymentProblem.ALREADY_PAID: _("This invoice is paid already. Open /wallet to add "
                                       "more."),
    }[problem]


def _paid_text(ui: Ui, minor: object, currency: object) -> str:
    """What a payment said it paid; shown as given when it is not a real amount."""
    try:
        return ui.money(Money(int(str(minor)), str(currency)))
    except (MoneyError, ValueError):
        return f"{minor} {currency}"


def dispute_reason_text(ui: Ui, reason: DisputeReason) -> str:
    _ = ui._
    return {
        DisputeReason.FORGED: _("not an invoice this bot issued"),
        DisputeReason.WRONG_USER: _("another user's invoice"),
        DisputeReason.ALREADY_PAID: _("the invoice was paid before"),
        DisputeReason.MISMATCH: _("the amount or currency paid is not the invoice's"),
    }[reason]


def _paid_by(ui: Ui, dispute: DisputedPayment) -> str:
    return _paid_text(ui, dispute.paid_minor, dispute.paid_currency)


def render_dispute(ui: Ui, notice: PaymentDisputed) -> Rendered:
    """Admins: a Telegram payment was taken but not credited."""
    _ = ui._
    dispute = notice.dispute
    out = [_("⚠️ Payment not credited (dispute {dispute}): user {user} paid {paid}; "
             "{reason}.").format(dispute=dispute.dispute_id, user=dispute.user_id,
                                 paid=_paid_by(ui, dispute),
                                 reason=dispute_reason_text(ui, dispute.reason))]
    if dispute.invoice_id is not None and dispute.invoice_price is not None:
        out.append(_("Invoice {invoice} asked for {price}.").format(
            invoice=dispute.invoice_id, price=ui.money(dispute.invoice_price)))
    out.append(_("Nothing was added to the wallet. The Stars are being refunded; you will "
                 "hear again only if that fails.") if notice.refunding else
               _("Nothing was added to the wallet. It is held for you: refund it, or credit "
                 "it with /credit once you know what was meant."))
    return "\n".join(out), None


def render_dispute_held(ui: Ui, notice: PaymentDisputeHeld) -> Rendered:
    """Admins: the automatic Stars refund of a disputed payment failed."""
    dispute = notice.dispute
    return ui._("⚠️ The refund of dispute {dispute} (user {user}, {paid}) failed: it is held "
                "for you. Ask the user for the payment's charge id and send /refund with "
                "it.").format(dispute=dispute.dispute_id, user=dispute.user_id,
                              paid=_paid_by(ui, dispute)), None


def render_credit(ui: Ui, notice: WalletCredit) -> Rendered:
    """The receipt of a wallet credit (Telegram payment or operator credit)."""
    _ = ui._
    out = [_("🧾 Receipt: {amount} added to your wallet").format(amount=ui.money(notice.amount))]
    if notice.source == SOURCE_TELEGRAM:
        if notice.paid is not None:
            out.append(_("Paid through Telegram: {price}").format(price=ui.money(notice.paid)))
        if notice.charge_shown:  # only its end: the outbox is plain text
            out.append(_("Telegram payment: {charge}").format(charge=notice.charge_shown))
    else:
        out.append(_("Cash or bank transfer, reference {reference}").format(
            reference=notice.reference_shown or ""))
    out.append(_("Time: {when}").format(when=ui.when(notice.at)))
    out.append(_("Available after this: {amount}").format(amount=ui.money(notice.balance)))
    return "\n".join(out), None


def render_refund(ui: Ui, notice: WalletRefund) -> Rendered:
    """A Stars payment was returned: the Stars go back, the credit leaves the wallet."""
    _ = ui._
    out = [_("↩️ Refund: {price} returned to you through Telegram").format(
        price=ui.money(notice.paid)) if notice.paid is not None
        else _("↩️ Refund through Telegram"),
        _("Taken from your wallet: {amount}").format(amount=ui.money(notice.amount)),
        _("Time: {when}").format(when=ui.when(notice.at)),
        _("Available after this: {amount}").format(amount=ui.money(notice.balance))]
    return "\n".join(out), None


# Not annotated: mypy infers each pair's notice type and checks its renderer against it
# (NoticeView[Any] would let any renderer pass).
NOTICE_VIEWS = (
    NoticeView(WalletCredit, render_credit),
    NoticeView(WalletRefund, render_refund),
    NoticeView(PaymentDisputed, render_dispute),
    NoticeView(PaymentDisputeHeld, render_dispute_held),
)


def refund_text(ui: Ui, charge_id: str, result: RefundResult) -> str:
    _ = ui._
    amount = ui.money(result.amount) if result.amount else ""
    paid = ui.money(result.paid) if result.paid else ""
    available = ui.money(result.available) if result.available else ""
    return {
        RefundStatus.REFUNDED: _("Refunded {paid} to user {user}; {amount} was taken from "
                                 "their wallet (now {available}). They get a notice."),
        RefundStatus.ALREADY_REFUNDED: _("That payment was refunded before. Nothing was "
                                         "changed."),
        RefundStatus.NOT_FOUND: _("No Telegram payment has the charge id {charge}."),
        RefundStatus.NOT_STARS: _("That payment was not made in Telegram Stars: refund it "
                                  "through the payment provider."),
        RefundStatus.INSUFFICIENT_FUNDS: _("Not refunded: the {amount} it added is already "
                                           "spent or held (wallet: {available}). Nothing was "
                                           "changed."),
        RefundStatus.REJECTED: _("Telegram refused the refund ({detail}). Nothing was "
                                 "changed."),
        RefundStatus.DISPUTE_REFUNDED: _("Refunded {paid} to user {user}. That payment was "
                                         "never credited, so their wallet is unchanged."),
    }[result.status].format(paid=paid, user=result.user_id, amount=amount,
                            available=available, charge=charge_id, detail=result.detail)


def star_refunder(bot: Bot) -> StarRefunder:
    """Returns Stars through refundStarPayment: "already refunded" counts as done, any other
    refusal is RefundRejected."""
    async def refund(user_id: int, charge_id: str) -> None:
        try:
            await bot.refund_star_payment(user_id, charge_id)
        except BadRequest as exc:
            if "ALREADY_REFUNDED" in exc.message.upper():
                return
            raise RefundRejected(exc.message) from exc

    return refund


# --- the flow -----------------------------------------------------------------------------


class WalletFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, wallet: WalletService,
                 admin_chat_ids: Collection[int],
                 retry_delays: Sequence[float] = CREDIT_RETRY_DELAYS, *,
                 khqr_enabled: bool = False) -> None:
        super().__init__(users, i18n)
        self._wallet = wallet
        self._khqr_enabled = khqr_enabled
        self._admins = frozenset(admin_chat_ids)
        self._retry_delays = tuple(retry_delays)

    async def show(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        text = wallet_text(ui, await self._wallet.summary(user.id))
        khqr = [[khqr_pay_button(ui)]] if self._khqr_enabled else []
        if not self._wallet.funding_available:
            await self.reply(update, text + "\n\n" + (_(
                "Paying through Telegram is not set up here: pay with KHQR from your bank app, "
                "or an operator can credit cash or a bank transfer.") if khqr else _(
                "Paying through Telegram is not set up here. An operator can credit cash or a "
                "bank transfer to your wallet.")),
                reply_markup=InlineKeyboardMarkup([*khqr, [history_button(ui)]]))
            return
        buttons = [InlineKeyboardButton(_("+ {amount}").format(amount=ui.money(amount)),
                                        callback_data=cb.encode("wf", amount.minor))
                   for amount in self._wallet.offered_amounts()]
        stars = (_("You pay in Telegram Stars.") + "\n") if self._wallet.uses_stars else ""
        await self.reply(update, text + "\n\n" + stars + _("Add money:"),
                         reply_markup=InlineKeyboardMarkup([buttons[:2], buttons[2:], *khqr,
                                                            [history_button(ui)]]))

    async def fund(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An amount button: send the invoice (the button is never trusted beyond that)."""
        pressed, chat = await self.pressed(update), update.effective_chat
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        minor = pressed.int_arg("amount")
        offered = {amount.minor: amount for amount in self._wallet.offered_amounts()}
        if minor not in offered or chat is None:
            await query.answer(_("That button is no longer active."))
            return
        try:
            invoice = await self._wallet.issue_invoice(pressed.user.id, offered[minor])
        except PaymentsUnavailable:
            await query.answer(problem_text(ui, PaymentProblem.UNAVAILABLE), show_alert=True)
            return
        await query.answer()
        shown = ui.money(invoice.amount)
        await context.bot.send_invoice(
            chat.id, title=_("Wallet top-up"),
            description=_("Adds {amount} to your wallet here. I use it to pay for your "
                          "lines' top-ups.").format(amount=shown),
            payload=invoice.payload, currency=invoice.currency,
            prices=[LabeledPrice(_("{amount} to your wallet").format(amount=shown),
                                 invoice.total_amount)],
            provider_token=invoice.provider_token)

    async def pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.pre_checkout_query
        assert query is not None
        problem = await self._wallet.validate_pre_checkout(
            query.from_user.id, query.invoice_payload, query.currency, query.total_amount)
        if problem is None:
            await query.answer(ok=True)
        else:
            log.info("Pre-checkout %s refused: %s", query.id, problem.value)
            await query.answer(ok=False, error_message=problem_text(await self.ui(update),
                                                                    problem))
        raise ApplicationHandlerStop

    async def paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        payment = message.successful_payment
        assert payment is not None
        try:
            credited = await self._credit_with_retries(
                user.id, payment, star_refunder(context.bot))
        except PaymentNotRecognised as exc:
            log.error("Payment %s by user %s not credited: %s",
                      payment.telegram_payment_charge_id, user.id, exc)
            ui = await self.ui(update)
            await self._say(update, ui._(
                "I received your payment but could not match it to a wallet top-up, so "
                "nothing was added yet. An operator will sort it out; quote this reference: "
                "{charge}").format(charge=payment.telegram_payment_charge_id))
            raise ApplicationHandlerStop from None
        except Exception:
            # Telegram will not send this update again: leave everything an operator needs.
            log.critical("Payment %s by user %s (%s %s, payload %r) could not be recorded; "
                         "credit it by hand", payment.telegram_payment_charge_id, user.id,
                         payment.total_amount, payment.currency, payment.invoice_payload,
                         exc_info=True)
            ui = await self.ui(update)
            await self._say(update, ui._(
                "I received your payment but could not add it to your wallet yet. An operator "
                "will; quote this reference: {charge}").format(
                charge=payment.telegram_payment_charge_id))
            raise ApplicationHandlerStop from None
        ui = await self.ui(update)
        _ = ui._
        # Credited: its receipt, queued in the same transaction, is the one confirmation
        # (a second "payment received" here said the same thing twice).
        if isinstance(credited, Disputed):
            paid = _paid_text(ui, credited.paid_minor, credited.paid_currency)
            await self._say(update, _(
                "This payment ({paid}) does not match the invoice it was made for, so nothing "
                "was added to your wallet. Telegram is returning it to you.").format(paid=paid)
                if credited.refunded else _(
                "This payment ({paid}) does not match the invoice it was made for, so nothing "
                "was added to your wallet. An operator will look at it; quote this reference: "
                "{charge}").format(paid=paid, charge=payment.telegram_payment_charge_id))
        # None: a replayed update, answered the first time
        raise ApplicationHandlerStop

    async def _credit_with_retries(self, user_id: int, payment: SuccessfulPayment,
                                   refunder: StarRefunder) -> Credited | Disputed | None:
        """The credit, tried again after a fault (the database restarting, a lock timeout):
        it is idempotent by the charge id, and Telegram sends this update only once."""
        for delay in (*self._retry_delays, None):
            try:
                return await self._wallet.credit_telegram_payment(
                    user_id, payment.telegram_payment_charge_id,
                    payment.provider_payment_charge_id, payment.currency,
                    payment.total_amount, payment.invoice_payload, refunder=refunder)
            except PaymentNotRecognised:
                raise
            except Exception:
                if delay is None:
                    raise
                log.warning("Crediting payment %s failed; trying again in %ss",
                            payment.telegram_payment_charge_id, delay, exc_info=True)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def refunded(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Telegram's notice that a payment was refunded: make sure the ledger says so."""
        message, chat = update.effective_message, update.effective_chat
        if message is not None and chat is not None and message.refunded_payment is not None:
            await self._wallet.note_refunded(
                chat.id, message.refunded_payment.telegram_payment_charge_id)
        raise ApplicationHandlerStop

    async def _say(self, update: Update, text: str) -> None:
        """A reply that must not fail the update: the money is already recorded. It goes to
        the payer's private chat, wherever the payment message came from."""
        user = update.effective_user
        if user is None:
            return
        try:
            await update.get_bot().send_message(user.id, text)
        except TelegramError:
            log.warning("Could not confirm a payment in the chat", exc_info=True)

    # --- admins -------------------------------------------------------------------------

    async def credit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/credit TELEGRAM_USER_ID AMOUNT REFERENCE - cash or a bank transfer, once per
        reference."""
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        args = context.args or []
        usage = _("Usage: /credit TELEGRAM_USER_ID AMOUNT REFERENCE\nFor example: /credit "
                  "123456789 10 cash-2026-11-25-01")
        target = whole_number(args[0], max_digits=16) if len(args) >= 3 else None
        if target is None:
            await self.reply(update, usage)
            return
        try:
            amount = parse_money(args[1], self._wallet.currency)
        except MoneyError:
            await self.reply(update, _("{text} is not an amount.").format(text=args[1][:40])
                             + "\n" + usage)
            return
        reference = " ".join(args[2:])
        try:
            result = await self._wallet.credit_operator(target, amount, reference,
                                                        actor=f"admin:{user.id}")
        except OperatorCreditError as exc:
            await self.reply(update, self._credit_error(ui, exc) + "\n" + usage)
            return
        if isinstance(result, Credited):
            text = _("Credited {amount} to user {user} (reference {reference}). Their wallet: "
                     "{balance}. They get a receipt.").format(
                amount=ui.money(result.amount), user=target, reference=" ".join(
                    reference.split()), balance=ui.money(result.balance))
        else:
            text = self._already_text(ui, result, target, amount, reference)
        await self.reply(update, text)

    @staticmethod
    def _credit_error(ui: Ui, exc: OperatorCreditError) -> str:
        _ = ui._
        reason = OperatorCreditError.Reason
        return {
            reason.BAD_USER: _("That is not a Telegram user id."),
            reason.BAD_AMOUNT: _("That amount is too large or not above zero."),
            reason.BAD_CURRENCY: _("Wallets are kept in US dollars or riel."),
            reason.BAD_REFERENCE: _("The reference must be 1 to 64 ordinary characters."),
        }[exc.reason]

    @staticmethod
    def _already_text(ui: Ui, earlier: AlreadyCredited, target: int, amount: Money,
                      reference: str) -> str:
        _ = ui._
        values = {"reference": " ".join(reference.split()), "amount": ui.money(earlier.amount),
                  "user": earlier.user_id, "when": ui.when(earlier.created_at)}
        if earlier.matches(target, amount):
            return _("Already done: reference {reference} credited {amount} to user {user} "
                     "on {when}. Nothing was changed.").format(**values)
        return _("Reference {reference} was already used: {amount} to user {user} on {when}. "
                 "Nothing was changed; use a new reference for a new payment.").format(**values)

    async def refund(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/refund TELEGRAM_PAYMENT_CHARGE_ID - return a Stars payment, once."""
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        args = context.args or []
        if len(args) != 1 or len(args[0]) > 150:
            await self.reply(update, ui._("Usage: /refund TELEGRAM_PAYMENT_CHARGE_ID (it is in "
                                          "the user's receipt)"))
            return
        try:
            result = await self._wallet.refund_stars(args[0], actor=f"admin:{user.id}",
                                                     refunder=star_refunder(context.bot))
        except TelegramError as exc:
            log.warning("refundStarPayment failed for %s", args[0], exc_info=True)
            await self.reply(update, ui._("Telegram did not answer ({error}). Nothing was "
                                          "recorded; send the same /refund again.").format(
                error=str(exc)[:100]))
            return
        await self.reply(update, refund_text(ui, args[0], result))

    # --- registration -------------------------------------------------------------------

    def payment_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group PAYMENT_GROUP: each stops the update there (ApplicationHandlerStop)."""
        return [PreCheckoutQueryHandler(self.pre_checkout),
                MessageHandler(filters.SUCCESSFUL_PAYMENT, self.paid),
                MessageHandler(filters.StatusUpdate.REFUNDED_PAYMENT, self.refunded)]

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """For group 0, before the last-resort handlers. /credit and /refund answer only in
        ADMIN_CHAT_IDS chats; elsewhere they are unknown commands."""
        admins = filters.Chat(chat_id=self._admins)
        return [CommandHandler("wallet", self.show),
                CallbackQueryHandler(self.fund, pattern=FUND),
                *(CommandHandler(command, callback, filters=admins) for command, callback
                  in zip(ADMIN_COMMANDS, (self.credit, self.refund), strict=True))]
