"""Approving charges in the chat, and the messages a charge sends.

The approval request (queued by the charging service) carries Approve / Decline buttons
(``v1:ap:<charge>:ok|no``); pressing one answers the button, asks the service - which
re-reads the charge, checks the presser owns it and that it still awaits an answer - and
puts the outcome in place of the request. "Top up now" on a line card
or a warning (``v1:tn:<line>:<what>``) asks for an approval; the button's message id is part
of the charge's key, so a double tap asks once. While the line has another open charge
(a rule's request waiting, a top-up in flight) it asks nothing: the answer points at that
charge, and a request still waiting is posted again with its buttons.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.ext import ApplicationHandlerStop, BaseHandler, CallbackQueryHandler, ContextTypes

from bot.domain.charges import ChargeState, DeclineReason
from bot.domain.money import Money
from bot.domain.products import Product, ProductKind
from bot.i18n import Translations
from bot.services.charging import (
    ESIM_PURCHASE,
    LINE_UNAVAILABLE,
    NOT_ACCEPTED,
    AlreadyHandled,
    AlreadyOpen,
    ApprovalReason,
    ApprovalRequest,
    Approved,
    ChargeExpired,
    ChargeFacts,
    ChargeFailed,
    ChargeProcessing,
    ChargeStuck,
    ChargeView,
    ChargingService,
    Declined,
    InsufficientFunds,
    Invalid,
    NotYourLine,
    PriceChanged,
    Receipt,
    Requested,
    RequestProblem,
    TriggerShown,
)
from bot.services.notices import Audience
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place
from handlers.notification_views import NoticeView, Rendered
from handlers.render import data_text, trigger_text

log = logging.getLogger(__name__)

APPROVE_KIND, TOP_UP_NOW_KIND = "ap", "tn"
SUBMISSION_TASK = "charge-submission:"  # names the background task that sends a top-up
APPROVE = cb.register(APPROVE_KIND, "charge", "action")  # ok, no
TOP_UP_NOW = cb.register(TOP_UP_NOW_KIND, "line", "what")  # a<cents> airtime, or a plan id
QUICK_AMOUNTS_CENTS = (100, 200, 500)  # "Top up now" airtime amounts on a line card
_AMOUNT_TOKEN = re.compile(r"a([1-9][0-9]{0,8})")


# --- what the notices say ---------------------------------------------------------------

def buys_text(ui: Ui, charge: ChargeFacts) -> str:
    """What a charge buys: a plan (its data and days) or airtime."""
    _ = ui._
    if charge.product_name is not None:
        if charge.product_kind is ProductKind.DATA and charge.data_mb:
            return ui.ngettext("{plan}: {data} for {days} day", "{plan}: {data} for {days} days",
                               charge.validity_days or 0).format(
                plan=charge.product_name, data=data_text(charge.data_mb),
                days=charge.validity_days)
        return ui.ngettext("{plan}, {days} day of validity", "{plan}, {days} days of validity",
                           charge.validity_days or 0).format(plan=charge.product_name,
                                                             days=charge.validity_days)
    return _("{amount} of airtime").format(amount=ui.money(charge.amount))


def failure_text(ui: Ui, reason: str | None) -> str:
    _ = ui._
    texts = {
        "declined_by_operator": _("the carrier declined it"),
        "refunded_by_operator": _("the carrier refunded it"),
        "amount_below_minimum": _("the amount is below the carrier's minimum"),
        "unknown_product": _("that plan is not sold for this line"),
        "product_of_another_operator": _("that plan is not sold for this line"),
        "unsupported_currency": _("the carrier does not take that currency"),
        DeclineReason.INVALID_NUMBER: _("the carrier says this number cannot be topped up"),
        DeclineReason.OPERATOR_UNAVAILABLE: _("the carrier is not taking top-ups at the moment"),
        DeclineReason.PROVIDER_BALANCE: _("our top-up service is out of credit; the team "
                                          "has been told"),
        DeclineReason.AMOUNT_NOT_OFFERED: _("the carrier does not sell that amount"),
        DeclineReason.PRODUCT_UNAVAILABLE: _("that plan is no longer sold"),
        DeclineReason.ESIM_RECYCLED: _("the eSIM provider has taken this eSIM back for good"),
        DeclineReason.OPERATOR_TIMED_OUT: _("the carrier did not answer in time; nothing "
                                            "was taken"),
        NOT_ACCEPTED: _("the carrier could not be reached, even after several tries"),
        LINE_UNAVAILABLE: _("the line is no longer bound to you"),
    }
    return texts.get(reason or "", _("the carrier refused it"))


def why_text(ui: Ui, trigger: TriggerShown | None) -> str | None:
    """The reading a rule charged on, as its request and receipt say it; None for a manual
    or calendar charge (no reading made it), and for one queued before charges kept it."""
    if trigger is None:
        return None
    return trigger_text(ui, trigger.as_reading(), trigger.read_by)


def approval_buttons(ui: Ui, charge_id: int) -> InlineKeyboardMarkup:
    _ = ui._
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(_("✅ Approve"), callback_data=cb.encode(APPROVE_KIND, charge_id,
                                                                     "ok")),
        InlineKeyboardButton(_("✖️ Decline"), callback_data=cb.encode(APPROVE_KIND, charge_id,
                                                                     "no"))]])


@dataclass(frozen=True)
class PlanOffer:
    """A plan as a "Buy now" button offers it: from the catalog, or from a notification
    (renderers read no catalog)."""

    id: str
    name: str
    price: Money

    @classmethod
    def of(cls, plan: Product | None) -> PlanOffer | None:
        return cls(plan.id, plan.name, plan.price) if plan is not None else None


def top_up_now_buttons(ui: Ui, line_id: int, plan: PlanOffer | None = None, *,
                       airtime: bool = True) -> list[list[InlineKeyboardButton]]:
    """Rows for a line card: the line's plan (when it has one) and a few airtime amounts
    (``airtime``: not for an eSIM, which takes only its own top-ups)."""
    _ = ui._
    rows: list[list[InlineKeyboardButton]] = []
    if plan is not None:
        rows.append([InlineKeyboardButton(
            _("⚡ Buy now: {plan} ({price})").format(plan=plan.name, price=ui.money(plan.price)),
            callback_data=cb.encode(TOP_UP_NOW_KIND, line_id, plan.id))])
    if airtime:
        rows.append([InlineKeyboardButton(
            _("⚡ Top up {amount}").format(amount=ui.money(Money(cents, "USD"))),
            callback_data=cb.encode(TOP_UP_NOW_KIND, line_id, f"a{cents}"))
            for cents in QUICK_AMOUNTS_CENTS])
    return rows


# --- the notifications ------------------------------------------------------------------

def render_approval_request(ui: Ui, notice: ApprovalRequest) -> Rendered:
    _ = ui._
    charge = notice.charge
    headers = {
        ApprovalReason.MANUAL: _("Top up {line}?"),
        ApprovalReason.ASK: _("Your auto-recharge wants to top up {line}. Approve?"),
        ApprovalReason.OVER_CAP: _(
            "This auto-recharge of {line} would go over its monthly cap, so it waits for "
            "your approval."),
        ApprovalReason.INSUFFICIENT_FUNDS: _(
            "Your wallet cannot cover this automatic top-up of {line}, so it waits for you."),
    }
    parts = [headers[notice.reason].format(line=charge.line),
             "",
             _("Line: {line}").format(line=charge.line),
             _("Amount: {amount}").format(amount=ui.money(charge.amount)),
             _("Buys: {what}").format(what=buys_text(ui, charge))]
    why = why_text(ui, notice.trigger)
    if why is not None:
        parts.append(why)
    if notice.cap is not None and notice.spent is not None:
        parts.append(_("This month: {spent} of the {cap} cap spent.").format(
            spent=ui.money(notice.spent), cap=ui.money(notice.cap)))
    wallet, amount = notice.wallet, charge.amount
    parts.append(_("Wallet: {wallet}").format(wallet=ui.money(wallet)))
    if wallet.currency == amount.currency and wallet < amount:
        parts.append(_("That is {short} short: add money with /wallet, then tap "
                       "Approve.").format(short=ui.money(amount - wallet)))
    if notice.expires_at is not None:
        parts.append(_("This request expires {when}.").format(
            when=ui.when(notice.expires_at)))
    return "\n".join(parts), approval_buttons(ui, charge.charge_id)


def render_receipt(ui: Ui, notice: Receipt) -> Rendered:
    _ = ui._
    charge = notice.charge
    if charge.product_name is not None:
        headline = _("✅ Topped up {line}: {what}, {amount}.").format(
            line=charge.line, what=buys_text(ui, charge), amount=ui.money(charge.amount))
    else:
        headline = _("✅ Topped up {line} with {amount} of airtime.").format(
            line=charge.line, amount=ui.money(charge.amount))
    parts = [headline]
    why = why_text(ui, notice.trigger)
    if why is not None:
        parts.append(why)
    if notice.delivered is not None and notice.delivered != charge.amount:
        parts.append(_("The line received: {amount}").format(
            amount=ui.money(notice.delivered)))
    if notice.balance_after is not None:
        parts.append(_("Line balance now: {amount}").format(
            amount=ui.money(notice.balance_after)))
    if notice.data_after_mb is not None:
        parts.append(_("Data now: {data}").format(data=data_text(notice.data_after_mb)))
    if notice.validity_end is not None:
        parts.append(_("Valid until: {date}").format(date=ui.when(notice.validity_end)))
    parts.append(_("Wallet: {wallet}").format(wallet=ui.money(notice.wallet)))
    if notice.reference:
        parts.append(_("Reference: {reference}").format(reference=notice.reference))
    if notice.provider_tx_shown:
        parts.append(_("Carrier's transaction: {transaction}").format(
            transaction=notice.provider_tx_shown))
    return "\n".join(parts), None


def render_charge_failed(ui: Ui, notice: ChargeFailed) -> Rendered:
    _ = ui._
    charge, reason = notice.charge, notice.reason
    if notice.audience is Audience.ADMIN:
        return _("⚠️ Charge {charge} of user {user} failed: {reason} ({code}; reference "
                 "{reference}, {attempts} attempts). The hold was released.").format(
            charge=charge.charge_id, user=notice.user_id, reason=failure_text(ui, reason),
            code=reason, reference=notice.reference, attempts=notice.attempts), None
    if charge.cause == ESIM_PURCHASE:
        return _("❌ The eSIM {what} ({amount}) could not be bought: {reason}. Nothing was "
                 "taken from your wallet.").format(what=charge.product_name or "",
                                                   amount=ui.money(charge.amount),
                                                   reason=failure_text(ui, reason)), None
    return _("❌ The top-up of {line} ({amount}) did not go through: {reason}. Nothing was "
             "taken from your wallet.").format(line=charge.line,
                                               amount=ui.money(charge.amount),
                                               reason=failure_text(ui, reason)), None


def render_charge_processing(ui: Ui, notice: ChargeProcessing) -> Rendered:
    charge = notice.charge
    return ui._("⏳ The carrier is still processing the top-up of {line} ({amount}). I will "
                "send the receipt when it is done.").format(line=charge.line,
                                                           amount=ui.money(charge.amount)), None


def render_charge_expired(ui: Ui, notice: ChargeExpired) -> Rendered:
    charge = notice.charge
    return ui._("⌛ The request to top up {line} ({amount}) expired. Nothing was charged.").format(
        line=charge.line, amount=ui.money(charge.amount)), None


def render_charge_stuck(ui: Ui, notice: ChargeStuck) -> Rendered:
    return ui._("⚠️ Charge {charge} of user {user} (reference {reference}): the provider "
                "cannot say whether the top-up was made. The funds stay held; I keep looking "
                "it up.").format(charge=notice.charge.charge_id, user=notice.user_id,
                                 reference=notice.reference), None


def insufficient_funds_text(ui: Ui, request: ApprovalRequest) -> str:
    """For the user who pressed Approve: what the wallet has and what the top-up needs."""
    return ui._("Your wallet has {wallet}, and this top-up of {line} needs {amount}. Add money "
                "with /wallet, then tap Approve again.").format(
        wallet=ui.money(request.wallet), line=request.charge.line,
        amount=ui.money(request.charge.amount))


# Not annotated: mypy infers each pair's notice type and checks its renderer against it
# (NoticeView[Any] would let any renderer pass).
NOTICE_VIEWS = (
    NoticeView(ApprovalRequest, render_approval_request),
    NoticeView(Receipt, render_receipt),
    NoticeView(ChargeFailed, render_charge_failed),
    NoticeView(ChargeProcessing, render_charge_processing),
    NoticeView(ChargeExpired, render_charge_expired),
    NoticeView(ChargeStuck, render_charge_stuck),
)


# --- the buttons --------------------------------------------------------------------------

class ApprovalsFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 charging: ChargingService) -> None:
        super().__init__(users, i18n)
        self._charging = charging

    @staticmethod
    async def _edit(query: Any, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        await edit_in_place(query, text, markup)

    def outcome_text(self, ui: Ui, charge: ChargeView, line: str, *,
                     just_approved: bool) -> str:
        _ = ui._
        amount = ui.money(charge.amount)
        state = charge.state
        if just_approved:
            if state is ChargeState.SUCCEEDED:
                return _("✅ Approved: {line} is topped up with {amount}.").format(
                    line=line, amount=amount)
            if state is ChargeState.FAILED:
                return _("Approved, but the top-up of {line} did not go through: {reason}. "
                         "Nothing was taken from your wallet.").format(
                    line=line, reason=failure_text(ui, charge.failure_reason))
            return _("✅ Approved: topping up {line} with {amount}. I will send the receipt "
                     "when the carrier confirms.").format(line=line, amount=amount)
        texts = {
            ChargeState.APPROVED: _("Already approved: the top-up of {line} ({amount}) is on "
                                    "its way."),
            ChargeState.SUBMITTED: _("Already approved: the top-up of {line} ({amount}) is "
                                     "on its way."),
            ChargeState.SUCCEEDED: _("Already done: {line} was topped up with {amount}."),
            ChargeState.FAILED: _("This top-up of {line} ({amount}) failed earlier. Nothing "
                                  "was taken from your wallet."),
            ChargeState.DECLINED: _("You declined this top-up of {line} ({amount}). Nothing "
                                    "was charged."),
            ChargeState.EXPIRED: _("This request to top up {line} ({amount}) expired. Nothing "
                                   "was charged; use ⚡ Top up in /lines to ask again."),
            ChargeState.AWAITING_APPROVAL: _("This top-up of {line} ({amount}) still waits "
                                             "for your answer."),
        }
        return texts[state].format(line=line, amount=amount)

    async def on_answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Approve or Decline under an approval request."""
        pressed = await self.pressed(update)
        if pressed is None:
            raise ApplicationHandlerStop
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        charge_id, action = pressed.int_arg("charge"), pressed.arg("action")
        if charge_id is None or action not in ("ok", "no"):
            await query.answer(_("That button is no longer active."))
            raise ApplicationHandlerStop
        if not await self._charging.owns(user.id, charge_id):
            # Unknown and someone else's read the same: nothing about the charge is shown.
            await query.answer(_("This button is not for you."), show_alert=True)
            raise ApplicationHandlerStop
        await query.answer()
        line = await self._line_label(user.id, charge_id)
        if action == "no":
            declined = await self._charging.decline(user.id, charge_id)
            if isinstance(declined, Declined):
                await self._edit(query, _("Declined: {line} will not be topped up with "
                                          "{amount}. Nothing was charged.").format(
                    line=line, amount=ui.money(declined.charge.amount)))
            elif isinstance(declined, AlreadyHandled):
                await self._edit(query, self.outcome_text(ui, declined.charge, line,
                                                          just_approved=False))
            raise ApplicationHandlerStop
        # Approved and answered at once; the top-up itself is sent in the background (a
        # provider may take 90 s). If this process dies first, the charge is approved in the
        # database and the charges sweep submits it when its lease runs out.
        result = await self._charging.approve(user.id, charge_id, submit=False)
        if isinstance(result, Approved):
            await self._edit(query, self.outcome_text(ui, result.charge, line,
                                                      just_approved=True))
            context.application.create_task(self._submit(charge_id),
                                             name=f"{SUBMISSION_TASK}{charge_id}")
        elif isinstance(result, AlreadyHandled):
            await self._edit(query, self.outcome_text(ui, result.charge, line,
                                                      just_approved=False))
        elif isinstance(result, PriceChanged):
            # Dearer than when it was asked: the request again, at today's price.
            text, markup = render_approval_request(ui, result.request)
            await self._edit(query, text, markup)
            await self.reply(update, _(
                "The price of this plan went up from {was} to {price}. Nothing was charged: "
                "approve the request again if you still want it.").format(
                was=ui.money(result.was), price=ui.money(result.charge.amount)))
        elif isinstance(result, InsufficientFunds):
            # The request stays, with today's wallet balance and what is missing.
            text, markup = render_approval_request(ui, result.request)
            await self._edit(query, text, markup)
            await self.reply(update, insufficient_funds_text(ui, result.request))
        raise ApplicationHandlerStop

    async def _submit(self, charge_id: int) -> None:
        try:
            await self._charging.submit(charge_id)
        except Exception:
            log.exception("Charge %s was approved; its submission failed and is left to "
                          "the charges sweep", charge_id)

    async def _line_label(self, user_id: int, charge_id: int) -> str:
        return await self._charging.line_label_of_charge(user_id, charge_id) or "?"

    async def top_up_now(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """⚡ on a line card: ask for an approval of that top-up (once per button)."""
        pressed = await self.pressed(update)
        if pressed is None:
            raise ApplicationHandlerStop
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        line_id, what = pressed.int_arg("line"), pressed.arg("what")
        amount_match = _AMOUNT_TOKEN.fullmatch(what)
        amount = Money(int(amount_match.group(1)), "USD") if amount_match else None
        product_id = None if amount is not None else what
        message_id = query.message.message_id if query.message is not None else 0
        if line_id is None or not what:
            await query.answer(_("That button is no longer active."))
            raise ApplicationHandlerStop
        result = await self._charging.request_manual(
            user.id, line_id, amount, product_id, nonce=f"{message_id}:{line_id}:{what}")
        if isinstance(result, NotYourLine):
            await query.answer(_("That line is not yours or no longer bound."), show_alert=True)
        elif isinstance(result, Invalid):
            await query.answer(self._problem_text(ui, result.problem), show_alert=True)
        elif isinstance(result, Requested) and result.created:
            await query.answer(_("I sent you a request to approve: tap Approve on it."))
        elif isinstance(result, Requested):
            waiting = result.charge.state is ChargeState.AWAITING_APPROVAL
            await query.answer(_("Already asked: approve it in the request I sent.") if waiting
                               else _("This button was used already. Open /lines for a new "
                                      "top-up."), show_alert=not waiting)
        elif isinstance(result, AlreadyOpen):
            await self._point_to_open(update, ui, result)
        raise ApplicationHandlerStop

    async def _point_to_open(self, update: Update, ui: Ui, found: AlreadyOpen) -> None:
        """A line has one open charge at a time: say which, and show it again (with its
        Approve / Decline buttons, as a reply to the request when it was sent) while it
        waits for an answer."""
        query = update.callback_query
        assert query is not None
        _ = ui._
        amount = ui.money(found.charge.amount)
        if found.request is None:
            await query.answer(_("A top-up of {line} ({amount}) is already on its way. I will "
                                 "send the receipt when the carrier confirms; then you can "
                                 "top it up again.").format(line=found.line, amount=amount),
                               show_alert=True)
            return
        await query.answer(_("A top-up of {line} already waits for your approval: I sent "
                             "it again below.").format(line=found.line))
        text, markup = render_approval_request(ui, found.request)
        headline = _("⏳ This top-up of {line} ({amount}) already waits for your answer. A "
                     "line has one top-up open at a time: approve or decline this one "
                     "first.").format(line=found.line, amount=amount)
        reply_to = (ReplyParameters(found.message_id, allow_sending_without_reply=True)
                    if found.message_id is not None else None)
        await self.reply(update, f"{headline}\n\n{text}", reply_markup=markup,
                         reply_parameters=reply_to)

    @staticmethod
    def _problem_text(ui: Ui, problem: RequestProblem) -> str:
        _ = ui._
        texts = {
            RequestProblem.UNKNOWN_PLAN: _("That plan is not sold for this line any more."),
            RequestProblem.AMOUNT_TOO_SMALL: _("That amount is below the carrier's minimum."),
            RequestProblem.AMOUNT_TOO_LARGE: _("That amount is too large."),
            RequestProblem.UNSUPPORTED_CURRENCY: _("Top-ups are in US dollars."),
        }
        return texts.get(problem, _("That button is no longer active."))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """Each stops the update where it is handled (ApplicationHandlerStop), so they can be
        added in a group ahead of the conversations."""
        return [CallbackQueryHandler(self.on_answer, pattern=APPROVE),
                CallbackQueryHandler(self.top_up_now, pattern=TOP_UP_NOW)]
