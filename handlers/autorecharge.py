"""/autorecharge: set up a rule (what to buy, when, monthly cap, approval), confirm it with
a code sent to the line; list rules with their next run; pause, resume, edit, delete.

The set-up is one message, the wizard's: each step edits it (its text says what was chosen
so far, its keyboard is the step's, with Back and Cancel), and where it ends it says how,
without a keyboard. Its id is kept in the draft, so a button on any other message (an
older wizard's) is no longer active.
"""

from __future__ import annotations

import contextlib
from typing import Any

from babel.dates import get_day_names
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.domain.data_amount import parse_megabytes
from bot.domain.money import Money, MoneyError, parse_money
from bot.domain.numbers import whole_number
from bot.domain.otp import CheckResult, SendRefusal
from bot.domain.rules import (
    MAX_DAYS_BEFORE,
    MIN_DAYS_BEFORE,
    Approval,
    CalendarKind,
    RuleError,
    RuleSpec,
    RuleStatus,
    Trigger,
)
from bot.domain.schedule import MAX_INTERVAL_DAYS, MAX_MONTH_DAY
from bot.i18n import Gettext, Translations
from bot.services.lines import LinesService
from bot.services.otp import CodeNotSent, CodeSent
from bot.services.rules import (
    ConfirmStatus,
    Edited,
    Invalid,
    NotYourLine,
    NotYourRule,
    Proposed,
    RulesService,
    RuleView,
    WrongState,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import (
    CONVERSATION_TIMEOUT_SECONDS,
    END,
    Flow,
    Pressed,
    Ui,
    edit_in_place,
    too_long,
)
from handlers.render import cooldown_text, data_text

PICK_LINE, PICK_BUY, ASK_AMOUNT, PICK_WHEN = "ar:line", "ar:buy", "ar:amount", "ar:when"
ASK_WHEN_VALUE, ASK_CAP, PICK_APPROVAL = "ar:when_value", "ar:cap", "ar:approval"
CONFIRM, ASK_CODE = "ar:confirm", "ar:code"
# Each step's short name, as Back and Cancel buttons carry it.
STEP_KEYS = {PICK_LINE: "line", PICK_BUY: "buy", ASK_AMOUNT: "amount", PICK_WHEN: "when",
             ASK_WHEN_VALUE: "value", ASK_CAP: "cap", PICK_APPROVAL: "approval",
             CONFIRM: "confirm", ASK_CODE: "code"}
STEPS = {key: step for step, key in STEP_KEYS.items()}
# The step before each, where it is always the same (PICK_WHEN's depends on what is bought).
PREVIOUS = {PICK_BUY: PICK_LINE, ASK_AMOUNT: PICK_BUY, ASK_WHEN_VALUE: PICK_WHEN,
            ASK_CAP: ASK_WHEN_VALUE, PICK_APPROVAL: ASK_CAP, CONFIRM: PICK_APPROVAL,
            ASK_CODE: CONFIRM}

NEW = cb.register("arn", "action")
LINE = cb.register("arl", "line")
BUY = cb.register("arb", "what")  # amount, plan, cheap
WHEN = cb.register("arw", "when")  # monthly, weekly, every, balance, data, alive
WEEKDAY = cb.register("ard", "day")
APPROVAL = cb.register("arp", "mode")  # ask, auto
SUMMARY = cb.register("arc", "answer")  # ok (and "no" on messages of earlier versions)
RESEND = cb.register("arr", "action")
NAV = cb.register("arx", "action", "step")  # back, cancel; the step (STEP_KEYS) it is on
RULE = cb.register("ru", "rule", "action")  # pause, resume, code, del, delok, edit
LINE_RULES = cb.register("arv", "line")  # a line card's "🔁 Auto-recharge"
WIZARD_KINDS = ("arl", "arb", "arw", "ard", "arp", "arc", "arr", "arx")  # wizard steps' buttons
WHEN_KEYS = ("monthly", "weekly", "every", "balance", "data", "alive")
# The numbers each kind of "when" takes, as the domain checks them.
WHEN_LIMITS = {"monthly": (1, MAX_MONTH_DAY), "every": (1, MAX_INTERVAL_DAYS),
               "alive": (MIN_DAYS_BEFORE, MAX_DAYS_BEFORE)}
DRAFT = "rule_draft"  # user_data key: the rule being set up, plain JSON values only
# The draft's keys: line_id, rule_id (being edited, or proposed), buy (amount, plan, cheap),
# amount_minor, product_id, plan_name, when, when_value, cap_minor, approval; created (the
# rule_id is a rule this wizard made, not one it found waiting); first (the
# step key the wizard began at: it has no Back) and message_id (the wizard message).


def rule_error_text(_: Gettext, reason: RuleError.Reason) -> str:
    texts = {
        RuleError.Reason.AMOUNT_OVER_CAP: _("One top-up costs more than the monthly cap. "
                                            "Raise the cap or lower the amount."),
        RuleError.Reason.CAP_TOO_LARGE: _("That monthly cap is too large."),
        RuleError.Reason.UNKNOWN_PLAN: _("That plan is no longer sold for this line. Choose "
                                         "another one in /lines."),
        RuleError.Reason.BAD_CALENDAR_VALUE: _("That day or interval is not possible."),
        RuleError.Reason.BAD_DAYS_BEFORE: _("Choose between 1 and 14 days."),
        RuleError.Reason.CURRENCY_MISMATCH: _("The amount and the cap must be in the same "
                                              "currency."),
    }
    return texts.get(reason, _("That rule cannot be set up: please start again."))


def buy_text(ui: Ui, amount: Money | None, product_id: str | None,
             plan_name: str | None) -> str:
    """What a rule buys, in words: "$5.00 of airtime", "the plan ...", "the cheapest ..."."""
    _ = ui._
    if amount is not None:
        return _("{amount} of airtime").format(amount=ui.money(amount))
    if product_id is not None:
        return _("the plan {plan}").format(plan=plan_name or product_id)
    return _("the cheapest top-up that extends validity")


def when_text(ui: Ui, when: str, value: int | Money) -> str:
    """When a rule runs, in words, from the wizard's key for it and its number (for
    "balance", the threshold)."""
    _ = ui._
    if isinstance(value, Money):
        return _("when the balance falls below {amount}").format(amount=ui.money(value))
    if when == "monthly":
        return _("every month on day {day} (the last day in shorter months)").format(day=value)
    if when == "weekly":
        names = get_day_names("wide", locale=ui.locale)
        return _("every {weekday}").format(weekday=names.get(value, value))
    if when == "every":
        return ui.ngettext("every {days} day", "every {days} days", value).format(days=value)
    if when == "data":
        return _("when data falls below {data}").format(data=data_text(value))
    return ui.ngettext("{days} day before the line's validity ends",
                       "{days} days before the line's validity ends", value).format(days=value)


def _when_of(spec: RuleSpec) -> tuple[str, int | Money]:
    if spec.trigger is Trigger.CALENDAR:
        key = {CalendarKind.MONTHLY: "monthly", CalendarKind.WEEKLY: "weekly"}.get(
            spec.calendar or CalendarKind.EVERY_N, "every")
        return key, spec.calendar_value or 0
    if spec.trigger is Trigger.BALANCE_BELOW and spec.threshold is not None:
        return "balance", spec.threshold
    if spec.trigger is Trigger.DATA_BELOW:
        return "data", spec.threshold_mb or 0
    return "alive", spec.days_before or 0


def approval_text(ui: Ui, approval: Approval) -> str:
    return (ui._("I ask you before every charge") if approval is Approval.ASK
            else ui._("I charge automatically within the cap"))


def describe(ui: Ui, spec: RuleSpec, line_label: str, plan_name: str | None) -> str:
    return ui._("{line}: buy {buy}, {when}. At most {cap} a month; {approval}.").format(
        line=line_label, buy=buy_text(ui, spec.amount, spec.product_id, plan_name),
        when=when_text(ui, *_when_of(spec)), cap=ui.money(spec.monthly_cap),
        approval=approval_text(ui, spec.approval))


def rules_button(ui: Ui, line_id: int) -> InlineKeyboardButton:
    """A line card's way to its rules (or to setting one up when it has none)."""
    return InlineKeyboardButton(ui._("🔁 Auto-recharge"),
                                callback_data=cb.encode("arv", line_id))


def _choice(label: str, data: str, chosen: bool) -> list[InlineKeyboardButton]:
    """A row of one option; the one chosen before (the step shown again by Back) ticked."""
    return [InlineKeyboardButton(f"✓ {label}" if chosen else label, callback_data=data)]


class AutoRechargeFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService,
                 rules: RulesService) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._rules = rules

    def _sms_text(self, ui: Ui) -> str:
        return ui._("Your code to turn on auto-recharge is {code}. It expires in 5 minutes. "
                    "Never share it.")

    @staticmethod
    def _draft(context: ContextTypes.DEFAULT_TYPE) -> dict[str, Any]:
        assert context.user_data is not None
        draft = context.user_data.setdefault(DRAFT, {})
        assert isinstance(draft, dict)
        return draft

    # -- the list --------------------------------------------------------------------------

    async def show_rules(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        labels = {line.id: line.label for line in await self._lines.for_user(user.id)}
        await self._list_rules(update, ui, await self._rules.list(user.id), labels)

    async def _list_rules(self, update: Update, ui: Ui, rules: list[RuleView],
                          labels: dict[int, str]) -> None:
        """One message per rule with its buttons (``labels``: line id -> label), then
        "➕ New rule"."""
        _ = ui._
        new = InlineKeyboardButton(_("➕ New rule"), callback_data=cb.encode("arn", "new"))
        if not rules:
            await self.reply(update, _("No auto-recharge rules yet."),
                             reply_markup=InlineKeyboardMarkup([[new]]))
            return
        for rule in rules:
            await self.reply(update, self._rule_text(ui, rule, labels.get(rule.line_id, "?")),
                             reply_markup=self._rule_buttons(ui, rule))
        await self.reply(update, _("Add another rule?"), reply_markup=InlineKeyboardMarkup([[new]]))

    async def line_rules(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        """A line card's 🔁 Auto-recharge: the line's rules, or, when it has none, the wizard
        for that line in the card's message."""
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        line_id = pressed.data.int_arg("line")
        line = (await self._lines.own(pressed.user.id, line_id)
                if line_id is not None else None)
        if line is None:
            await pressed.query.answer(pressed.ui._("That line is not yours or no longer bound."),
                                       show_alert=True)
            return END
        await pressed.query.answer()
        rules = [rule for rule in await self._rules.list(pressed.user.id)
                 if rule.line_id == line.id]
        if rules:
            await self._list_rules(update, pressed.ui, rules, {line.id: line.label})
            return END
        draft = self._draft(context)
        draft.clear()
        draft.update(line_id=line.id, first=STEP_KEYS[PICK_BUY])
        return await self._show(update, context, pressed.ui, PICK_BUY)

    def _rule_text(self, ui: Ui, rule: RuleView, label: str) -> str:
        _ = ui._
        status = {
            RuleStatus.ACTIVE: _("On"), RuleStatus.PAUSED: _("Paused"),
            RuleStatus.AWAITING_OTP: _("Waiting for the SMS code"),
            RuleStatus.DISABLED: _("Deleted"),
        }[rule.status]
        text = f"{status} · {describe(ui, rule.spec, label, None)}"
        if rule.status is RuleStatus.ACTIVE and rule.next_run_at is not None:
            text += "\n" + _("Next run: {when}").format(when=ui.when(rule.next_run_at))
        return text

    def _rule_buttons(self, ui: Ui, rule: RuleView) -> InlineKeyboardMarkup:
        _ = ui._
        if rule.status is RuleStatus.ACTIVE:
            toggle = InlineKeyboardButton(_("⏸ Pause"),
                                          callback_data=cb.encode("ru", rule.id, "pause"))
        elif rule.status is RuleStatus.AWAITING_OTP:
            # Left waiting (a /cancel, the hourly SMS cap, a lost conversation): finish it here.
            toggle = InlineKeyboardButton(_("🔑 Enter the code"),
                                          callback_data=cb.encode("ru", rule.id, "code"))
        else:
            toggle = InlineKeyboardButton(_("▶️ Resume"),
                                          callback_data=cb.encode("ru", rule.id, "resume"))
        return InlineKeyboardMarkup([[
            toggle,
            InlineKeyboardButton(_("✏️ Edit"), callback_data=cb.encode("ru", rule.id, "edit")),
            InlineKeyboardButton(_("🗑 Delete"), callback_data=cb.encode("ru", rule.id, "del"))]])

    async def on_rule(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        rule_id = pressed.data.int_arg("rule")
        action = pressed.data.arg("action")
        rule = await self._rules.own(user.id, rule_id) if rule_id is not None else None
        if rule is None or rule.status is RuleStatus.DISABLED:
            await query.answer(_("That rule is not yours or no longer exists."), show_alert=True)
            return END
        if action == "edit":  # the rule's card becomes the wizard
            await query.answer()
            draft = self._draft(context)
            draft.clear()
            draft.update(rule_id=rule.id, line_id=rule.line_id, first=STEP_KEYS[PICK_BUY])
            return await self._show(update, context, ui, PICK_BUY)
        if action == "code":
            await query.answer()
            sent = await self._rules.resend_code(user.id, rule.id, self._sms_text(ui))
            if not isinstance(sent, CodeSent | CodeNotSent):
                await self.reply(update, _("That button is no longer active."))
                return END
            draft = self._draft(context)
            draft.clear()
            draft.update(rule_id=rule.id, line_id=rule.line_id, first=STEP_KEYS[ASK_CODE])
            return await self._code_sent(update, context, ui, sent)
        if action == "del":
            await query.answer()
            keyboard = InlineKeyboardMarkup([[
                InlineKeyboardButton(_("Yes, delete"),
                                     callback_data=cb.encode("ru", rule.id, "delok"))]])
            await self.reply(update, _("Delete this rule? Charges it would make stop."),
                             reply_markup=keyboard)
            return END
        if action == "delok":
            result = await self._rules.delete(user.id, rule.id)
            await query.answer(_("Deleted.") if not isinstance(result, NotYourRule)
                               else _("That rule is not yours or no longer exists."))
            if query.message is not None:
                await query.edit_message_text(_("Rule deleted."))
            return END
        changed = (await self._rules.pause(user.id, rule.id) if action == "pause"
                   else await self._rules.resume(user.id, rule.id) if action == "resume"
                   else None)
        if not isinstance(changed, RuleView):
            await query.answer(_("That button is no longer active."))
            return END
        await query.answer(_("Paused.") if changed.status is RuleStatus.PAUSED else _("On."))
        line = await self._lines.own(user.id, changed.line_id)
        await query.edit_message_text(self._rule_text(ui, changed, line.label if line else "?"),
                                      reply_markup=self._rule_buttons(ui, changed))
        return END

    # -- the wizard message ----------------------------------------------------------------

    async def _press(self, update: Update,
                     context: ContextTypes.DEFAULT_TYPE) -> Pressed | None:
        """A press on the wizard message; None (answered) for a button on any other message:
        an earlier wizard's, or one an earlier version of the bot left live."""
        pressed = await self.pressed(update)
        if pressed is None:
            return None
        wizard = self._draft(context).get("message_id")
        shown = pressed.query.message
        if isinstance(wizard, int) and (shown is None or shown.message_id != wizard):
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return None
        return pressed

    async def _put(self, update: Update, context: ContextTypes.DEFAULT_TYPE, text: str,
                   markup: InlineKeyboardMarkup | None, *, fresh: bool = False) -> None:
        """Shows ``text`` and ``markup`` (None: no keyboard) in the wizard message.

        A press edits the message it is on (starting from /autorecharge's list, that message
        becomes the wizard). After a typed answer the wizard message is edited too, by the id
        the draft keeps: it is the bot's last message, just above the answer, and its text
        says what was chosen so far, so it reads whole; a new message per typed answer is
        what made the wizard ten messages long. Only when that edit fails (the user deleted
        the message) is a new one sent and remembered. A typed answer that is refused
        (``fresh``) is answered below it instead, by a new wizard message: a long paste can
        have pushed the old one out of sight. The old one loses its keyboard.
        """
        draft = self._draft(context)
        chat = update.effective_chat
        assert chat is not None
        wizard = draft.get("message_id")
        wizard = wizard if isinstance(wizard, int) else None
        query = update.callback_query
        if fresh:
            if wizard is not None:
                with contextlib.suppress(BadRequest):  # gone, or already without keyboard
                    await context.bot.edit_message_reply_markup(chat.id, wizard,
                                                                reply_markup=None)
        elif query is not None and query.message is not None and (
                wizard is None or query.message.message_id == wizard):
            with contextlib.suppress(BadRequest):  # cannot be edited: a new one below
                await edit_in_place(query, text, markup)
                draft["message_id"] = query.message.message_id
                return
        elif wizard is not None:
            try:
                await context.bot.edit_message_text(text, chat_id=chat.id, message_id=wizard,
                                                    reply_markup=markup)
                return
            except BadRequest as error:
                if "not modified" in str(error).lower():
                    return
        sent = await context.bot.send_message(chat.id, text, reply_markup=markup)
        draft["message_id"] = sent.message_id

    async def _show(self, update: Update, context: ContextTypes.DEFAULT_TYPE, ui: Ui,
                    step: str, *, error: str | None = None, fresh: bool = False,
                    body: str | None = None) -> str | int:
        """Shows ``step`` (``error`` above it); the conversation's next state: ``step``, or
        END when the step cannot be shown (the line is gone, the draft is incomplete)."""
        user = update.effective_user
        assert user is not None
        shown = await self._render(ui, user.id, self._draft(context), step, body)
        if isinstance(shown, str):
            return await self._stop(update, context, shown)
        text, markup = shown
        if error is not None:
            text = f"{error}\n\n{text}"
        await self._put(update, context, text, markup, fresh=fresh)
        return step

    async def _stop(self, update: Update, context: ContextTypes.DEFAULT_TYPE,
                    text: str) -> int:
        """Ends the wizard: its message says ``text``, without a keyboard."""
        await self._put(update, context, text, None)
        self._draft(context).clear()
        return END

    def _previous(self, step: str, draft: dict[str, Any]) -> str | None:
        if draft.get("first") == STEP_KEYS[step]:
            return None
        if step == PICK_WHEN:
            return ASK_AMOUNT if draft.get("buy") == "amount" else PICK_BUY
        return PREVIOUS.get(step)

    async def _render(self, ui: Ui, user_id: int, draft: dict[str, Any], step: str,
                      body: str | None) -> tuple[str, InlineKeyboardMarkup] | str:
        """A step's text and keyboard, from the draft; or why it cannot be shown."""
        _ = ui._
        rows: list[list[InlineKeyboardButton]]
        if step == PICK_LINE:
            lines = await self._lines.for_user(user_id)
            if not lines:
                return _("You have no lines yet. Send /bind to add one.")
            text = _("Which line should I top up automatically?")
            rows = [_choice(line.label, cb.encode("arl", line.id),
                            line.id == draft.get("line_id")) for line in lines]
        elif step == ASK_CODE:
            rule_id = draft.get("rule_id")
            rule = await self._rules.own(user_id, rule_id) if isinstance(rule_id, int) else None
            described = await self._described(ui, user_id, rule, draft) if rule else None
            if described is None:
                return _("Nothing is waiting for a code. See /autorecharge.")
            text = described + "\n\n" + (body or _("I sent a 6-digit code by SMS to the line. "
                                                   "Type it here to turn the rule on."))
            rows = [[InlineKeyboardButton(_("Send a new code"),
                                          callback_data=cb.encode("arr", "resend"))]]
        else:
            line_id = draft.get("line_id")
            line = await self._lines.own(user_id, line_id) if isinstance(line_id, int) else None
            if line is None:
                return _("That line is not yours or no longer bound.")
            asked = await self._ask(ui, user_id, line.id, line.label, draft, step)
            if isinstance(asked, str):
                return asked
            text, rows = asked
        nav = []
        if self._previous(step, draft) is not None:
            nav.append(InlineKeyboardButton(
                _("« Back"), callback_data=cb.encode("arx", "back", STEP_KEYS[step])))
        nav.append(InlineKeyboardButton(
            _("✖️ Cancel"), callback_data=cb.encode("arx", "cancel", STEP_KEYS[step])))
        return text, InlineKeyboardMarkup([*rows, nav])

    async def _ask(self, ui: Ui, user_id: int, line_id: int, label: str,
                   draft: dict[str, Any], step: str,
                   ) -> tuple[str, list[list[InlineKeyboardButton]]] | str:
        """The steps on a line: what was chosen so far, the question, its options."""
        _ = ui._
        missing = _("Something in this rule is missing. Please start again with "
                    "/autorecharge.")
        if step == CONFIRM:
            spec = self._spec(draft, ui)
            if spec is None:
                return missing
            text = describe(ui, spec, label, draft.get("plan_name")) + "\n\n" + _(
                "To turn it on I will send a code by SMS to the line.")
            return text, [[InlineKeyboardButton(_("✅ Confirm"),
                                                callback_data=cb.encode("arc", "ok"))]]
        options: list[tuple[str | int, str]] = []
        kind, chosen = "", None  # the buttons' callback kind; the option chosen before
        if step == PICK_BUY:
            offered = await self._buy_options(ui, user_id, line_id)
            if isinstance(offered, str):
                return offered
            question, options, kind = _("What should I buy each time?"), [*offered], "arb"
            chosen = draft.get("buy")
        elif step == ASK_AMOUNT:
            question = _("How much each time? Type an amount like 5 or $2.50.")
        elif step == PICK_WHEN:
            question, kind, chosen = _("When?"), "arw", draft.get("when")
            options = [("monthly", _("Every month")), ("weekly", _("Every week")),
                       ("every", _("Every N days")), ("balance", _("When the balance is low")),
                       ("data", _("When data is low")),
                       ("alive", _("Before the line would expire (keep it alive)"))]
        elif step == ASK_WHEN_VALUE:
            when = draft.get("when")
            prompts = {
                "monthly": _("On which day of the month ({low}-{high})?"),
                "every": _("Every how many days ({low}-{high})?"),
                "balance": _("Top up when the balance falls below how much? (like 1 or $0.50)"),
                "data": _("Top up when data falls below how much? (like 500 MB or 1 GB)"),
                "alive": _("How many days before the validity ends ({low}-{high})?"),
            }
            if when == "weekly":
                names = get_day_names("wide", locale=ui.locale)
                question, kind = _("On which day?"), "ard"
                options = [(day, str(names[day])) for day in range(7)]
                chosen = draft.get("when_value")
            elif isinstance(when, str) and when in prompts:
                low, high = WHEN_LIMITS.get(when, (0, 0))
                question = prompts[when].format(low=low, high=high)
            else:
                return missing
        elif step == ASK_CAP:
            question = _("At most how much in one month? (like 20)")
        elif step == PICK_APPROVAL:
            question, kind = _("Should I ask before each charge?"), "arp"
            chosen = draft.get("approval")
            options = [("ask", _("Ask me every time")),
                       ("auto", _("Charge automatically up to the cap"))]
        else:
            return missing
        rows = [_choice(label, cb.encode(kind, key), key == chosen) for key, label in options]
        return self._so_far(ui, label, draft) + "\n\n" + question, rows

    def _so_far(self, ui: Ui, label: str, draft: dict[str, Any]) -> str:
        """The line and what the draft holds, a line each ("Buy: $5.00 of airtime")."""
        _ = ui._
        parts = [label]
        buy = draft.get("buy") or ("amount" if "amount_minor" in draft
                                   else "plan" if "product_id" in draft else None)
        amount = draft.get("amount_minor")
        if buy == "amount" and isinstance(amount, int):
            parts.append(_("Buy: {buy}").format(buy=buy_text(ui, Money(amount, "USD"), None,
                                                              None)))
        elif buy in ("plan", "cheap"):
            product = draft.get("product_id") if buy == "plan" else None
            parts.append(_("Buy: {buy}").format(buy=buy_text(
                ui, None, str(product) if product else None, draft.get("plan_name"))))
        when, value = draft.get("when"), draft.get("when_value")
        if isinstance(when, str) and when in WHEN_KEYS and isinstance(value, int):
            parts.append(_("Top up: {when}").format(when=when_text(
                ui, when, Money(value, "USD") if when == "balance" else value)))
        cap = draft.get("cap_minor")
        if isinstance(cap, int):
            parts.append(_("At most {cap} a month").format(cap=ui.money(Money(cap, "USD"))))
        if draft.get("approval") in ("ask", "auto"):
            parts.append(approval_text(ui, Approval(draft["approval"])))
        return "\n".join(parts)

    async def _buy_options(self, ui: Ui, user_id: int,
                           line_id: int) -> list[tuple[str, str]] | str:
        """What the line can buy each time; or why nothing (an eSIM without its plan)."""
        _ = ui._
        with_plan = await self._lines.with_plan(user_id, line_id)
        if with_plan is None:
            return _("That line is not yours or no longer bound.")
        esim, plan = with_plan.line.is_esim, with_plan.plan
        if esim and plan is None:
            return _("An eSIM is topped up with one of its own packages: choose it first in "
                     "/lines (📋 Choose plan).")
        options = []
        if not esim:  # an eSIM takes no airtime
            options.append(("amount", _("A fixed amount of airtime")))
        if plan is not None:
            options.append(("plan", _("My plan: {plan}").format(plan=plan.name)))
        if not esim:
            options.append(("cheap", _("The cheapest top-up that keeps the line alive")))
        return options

    async def _described(self, ui: Ui, user_id: int, rule: RuleView,
                         draft: dict[str, Any]) -> str | None:
        line = await self._lines.own(user_id, rule.line_id)
        if line is None:
            return None
        return describe(ui, rule.spec, line.label, draft.get("plan_name"))

    async def _turned_on(self, ui: Ui, user_id: int, rule: RuleView,
                         draft: dict[str, Any]) -> str:
        _ = ui._
        text = _("Auto-recharge is on.")
        if rule.next_run_at is not None:
            text += " " + _("Next run: {when}").format(when=ui.when(rule.next_run_at))
        described = await self._described(ui, user_id, rule, draft)
        return f"{described}\n\n{text}" if described else text

    # -- the wizard's steps ----------------------------------------------------------------

    async def begin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        user = update.effective_user
        assert user is not None
        if update.callback_query is not None:  # ➕ New rule: the list's message becomes it
            pressed = await self.pressed(update)
            if pressed is None:
                return END
            await pressed.query.answer()
            ui = pressed.ui
        else:
            ui = await self.ui(update)
        draft = self._draft(context)
        draft.clear()
        lines = await self._lines.for_user(user.id)
        if len(lines) == 1:
            draft.update(line_id=lines[0].id, first=STEP_KEYS[PICK_BUY])
            return await self._show(update, context, ui, PICK_BUY)
        draft["first"] = STEP_KEYS[PICK_LINE]
        return await self._show(update, context, ui, PICK_LINE)  # no line: says so, ends

    async def navigate(self, update: Update,
                       context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        """Back and Cancel; each state matches only its own step's (an older step's is no
        longer active, so a double tap on Back goes back once)."""
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        step = STEPS.get(pressed.data.arg("step"), "")
        if pressed.data.arg("action") == "cancel":
            await pressed.query.answer()
            return await self.cancel(update, context)
        previous = self._previous(step, self._draft(context)) if step else None
        if previous is None:
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return None
        await pressed.query.answer()
        return await self._show(update, context, pressed.ui, previous)

    async def line_chosen(self, update: Update,
                          context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        line_id = pressed.data.int_arg("line")
        line = await self._lines.own(pressed.user.id, line_id) if line_id is not None else None
        if line is None:
            await pressed.query.answer(pressed.ui._("That line is not yours or no longer bound."),
                                       show_alert=True)
            return None
        await pressed.query.answer()
        draft = self._draft(context)
        if draft.get("line_id") != line.id:  # another line has other plans
            for key in ("buy", "amount_minor", "product_id", "plan_name"):
                draft.pop(key, None)
            rule_id = draft.pop("rule_id", None)
            if isinstance(rule_id, int) and draft.pop("created", False) \
                    and await self._waiting(update, context, rule_id):
                # Made by this wizard for the other line (Back from the code step): a rule
                # never on, which it now proposes for this line instead. One it found waiting
                # (an edit left unconfirmed, say) is not its own to delete.
                await self._rules.delete(pressed.user.id, rule_id)
        draft["line_id"] = line.id
        return await self._show(update, context, pressed.ui, PICK_BUY)

    async def buy_chosen(self, update: Update,
                         context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        query, ui = pressed.query, pressed.ui
        draft = self._draft(context)
        what = pressed.data.arg("what")
        if what == "plan":
            found = await self._lines.with_plan(pressed.user.id, int(draft.get("line_id", 0)))
            if found is None or found.plan is None:
                await query.answer(ui._("That line has no plan yet. Choose one in /lines."),
                                   show_alert=True)
                return None
            draft.update(buy=what, product_id=found.plan.id, plan_name=found.plan.name)
            draft.pop("amount_minor", None)
        elif what in ("amount", "cheap"):
            draft["buy"] = what  # an amount typed before stays shown, to be typed again
            for key in ("product_id", "plan_name", *(("amount_minor",) if what == "cheap"
                                                     else ())):
                draft.pop(key, None)
        else:
            await query.answer(ui._("That button is no longer active."))
            return None
        await query.answer()
        return await self._show(update, context, ui, ASK_AMOUNT if what == "amount" else PICK_WHEN)

    async def amount_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        amount = self._money(message.text)
        if isinstance(amount, str):
            return await self._show(update, context, ui, ASK_AMOUNT, error=ui._(amount),
                                    fresh=True)
        self._draft(context)["amount_minor"] = amount.minor
        return await self._show(update, context, ui, PICK_WHEN)

    @staticmethod
    def _money(text: str | None) -> Money | str:
        """USD typed by the user, or the (untranslated) reason it was refused."""

        def _(message: str) -> str:
            """Marks a reason for extraction; the caller translates it when shown."""
            return message

        if text is None or too_long(text):
            return _("Type an amount like 5 or $2.50.")
        try:
            money = parse_money(text, "USD")
        except MoneyError as error:
            if error.reason is MoneyError.Reason.TOO_LARGE:
                return _("That amount is too large.")
            return _("Type an amount like 5 or $2.50.")
        if money.currency != "USD":
            return _("Top-ups are in US dollars: type an amount like 5 or $2.50.")
        return money

    async def when_chosen(self, update: Update,
                          context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        when = pressed.data.arg("when")
        if when not in WHEN_KEYS:
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return None
        await pressed.query.answer()
        draft = self._draft(context)
        if draft.get("when") != when:  # a day of the month is no weekday, nor a threshold
            draft.pop("when_value", None)
        draft["when"] = when
        return await self._show(update, context, pressed.ui, ASK_WHEN_VALUE)

    async def weekday_chosen(self, update: Update,
                             context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        day = pressed.data.int_arg("day")
        draft = self._draft(context)
        if day is None or day > 6 or draft.get("when") != "weekly":
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return None
        await pressed.query.answer()
        draft["when_value"] = day
        return await self._show(update, context, pressed.ui, ASK_CAP)

    async def when_value_typed(self, update: Update,
                               context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        _ = ui._
        draft = self._draft(context)
        text = (message.text or "").strip()
        when = draft.get("when")
        if when in WHEN_LIMITS:
            low, high = WHEN_LIMITS[str(when)]
            value = whole_number(text, max_digits=3)
            if value is None or not low <= value <= high:
                return await self._show(update, context, ui, ASK_WHEN_VALUE, fresh=True, error=_(
                    "Type a whole number from {low} to {high}.").format(low=low, high=high))
            draft["when_value"] = value
        elif when == "balance":
            amount = self._money(text)
            if isinstance(amount, str):
                return await self._show(update, context, ui, ASK_WHEN_VALUE, error=_(amount),
                                        fresh=True)
            draft["when_value"] = amount.minor
        elif when == "data":
            megabytes = None if too_long(text) else parse_megabytes(text)
            if megabytes is None:
                return await self._show(update, context, ui, ASK_WHEN_VALUE, fresh=True, error=_(
                    "Type an amount of data like 500 MB or 1 GB."))
            draft["when_value"] = megabytes
        else:  # the weekday buttons are the answer
            await message.reply_text(_("Choose one of the buttons above, or /cancel."))
            return ASK_WHEN_VALUE
        return await self._show(update, context, ui, ASK_CAP)

    async def cap_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        cap = self._money(message.text)
        if isinstance(cap, str):
            return await self._show(update, context, ui, ASK_CAP, error=ui._(cap), fresh=True)
        self._draft(context)["cap_minor"] = cap.minor
        return await self._show(update, context, ui, PICK_APPROVAL)

    async def approval_chosen(self, update: Update,
                              context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        mode = pressed.data.arg("mode")
        if mode not in ("ask", "auto"):
            await pressed.query.answer(pressed.ui._("That button is no longer active."))
            return None
        await pressed.query.answer()
        self._draft(context)["approval"] = mode
        return await self._show(update, context, pressed.ui, CONFIRM)

    def _spec(self, draft: dict[str, Any], ui: Ui) -> RuleSpec | None:
        try:
            when = draft["when"]
            value = int(draft["when_value"])
            common: dict[str, Any] = {
                "monthly_cap": Money(int(draft["cap_minor"]), "USD"),
                "approval": Approval(draft["approval"]),
                "amount": Money(int(draft["amount_minor"]), "USD")
                if "amount_minor" in draft else None,
                "product_id": draft.get("product_id"),
            }
            if when in ("monthly", "weekly", "every"):
                kind = {"monthly": CalendarKind.MONTHLY, "weekly": CalendarKind.WEEKLY,
                        "every": CalendarKind.EVERY_N}[when]
                return RuleSpec(trigger=Trigger.CALENDAR, calendar=kind,
                                calendar_value=value,
                                calendar_anchor=(ui.now.astimezone(ui.zone).date()
                                                 if kind is CalendarKind.EVERY_N else None),
                                **common)
            if when == "balance":
                return RuleSpec(trigger=Trigger.BALANCE_BELOW,
                                threshold=Money(value, "USD"), **common)
            if when == "data":
                return RuleSpec(trigger=Trigger.DATA_BELOW, threshold_mb=value, **common)
            if when == "alive":
                return RuleSpec(trigger=Trigger.KEEP_ALIVE, days_before=value, **common)
        except (KeyError, TypeError, ValueError):
            return None
        return None

    async def confirmed(self, update: Update,
                        context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        user, ui = pressed.user, pressed.ui
        _ = ui._
        await pressed.query.answer()
        if pressed.data.arg("answer") != "ok":
            return await self.cancel(update, context)
        draft = self._draft(context)
        spec = self._spec(draft, ui)
        if spec is None:
            return await self._stop(update, context, _(
                "Something in this rule is missing. Please start again with /autorecharge."))
        rule_id = draft.get("rule_id")
        outcome: Proposed | NotYourLine | Invalid | Edited | NotYourRule | WrongState
        if isinstance(rule_id, int):
            outcome = await self._rules.edit(user.id, rule_id, spec, self._sms_text(ui))
        else:
            outcome = await self._rules.propose(user.id, int(draft.get("line_id", 0)), spec,
                                                self._sms_text(ui))
        if isinstance(outcome, Invalid):  # the summary again, saying what to change with Back
            return await self._show(update, context, ui, CONFIRM,
                                    error=rule_error_text(_, outcome.reason))
        if isinstance(outcome, NotYourLine | NotYourRule | WrongState):
            return await self._stop(update, context,
                                    _("That line is not yours or no longer bound."))
        if isinstance(outcome, Edited) and outcome.code is None:
            described = await self._described(ui, user.id, outcome.rule, draft)
            done = _("Updated. The rule stays on.")
            return await self._stop(update, context,
                                    f"{described}\n\n{done}" if described else done)
        if outcome.code is None:  # an eSIM: its purchase proved it, no code is needed
            return await self._stop(update, context,
                                    await self._turned_on(ui, user.id, outcome.rule, draft))
        draft["rule_id"] = outcome.rule.id
        draft["created"] = isinstance(outcome, Proposed) and outcome.created
        return await self._code_sent(update, context, ui, outcome.code)

    async def _code_sent(self, update: Update, context: ContextTypes.DEFAULT_TYPE, ui: Ui,
                         sent: CodeSent | CodeNotSent) -> str | int:
        _ = ui._
        if isinstance(sent, CodeSent):
            return await self._show(update, context, ui, ASK_CODE)
        if sent.refused is None:
            return await self._show(update, context, ui, ASK_CODE, body=_(
                "I could not send the SMS just now. Please try again in a minute."))
        if sent.refused.reason is SendRefusal.COOLDOWN:
            return await self._show(update, context, ui, ASK_CODE,
                                    body=cooldown_text(ui, sent.refused.retry_at))
        return await self._stop(update, context, _(
            "No more codes can be sent to this line for now. Try again after {time}; the rule "
            "waits for its code in /autorecharge.").format(time=ui.when(sent.refused.retry_at)))

    async def resend(self, update: Update,
                     context: ContextTypes.DEFAULT_TYPE) -> str | int | None:
        pressed = await self._press(update, context)
        if pressed is None:
            return None
        ui = pressed.ui
        rule_id = self._draft(context).get("rule_id")
        sent = (await self._rules.resend_code(pressed.user.id, rule_id, self._sms_text(ui))
                if isinstance(rule_id, int) else None)
        if not isinstance(sent, CodeSent | CodeNotSent):
            await pressed.query.answer()
            return await self._stop(update, context,
                                    ui._("Nothing is waiting for a code. See /autorecharge."))
        # The step reads the same after a new code: the answer says one is on its way.
        await pressed.query.answer(ui._("A new code is on its way.")
                                   if isinstance(sent, CodeSent) else None)
        return await self._code_sent(update, context, ui, sent)

    async def code_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        draft = self._draft(context)
        rule_id = draft.get("rule_id")
        if not isinstance(rule_id, int):
            return await self._stop(update, context,
                                    _("Please start again with /autorecharge."))
        typed = "" if too_long(message.text) else (message.text or "")
        result = await self._rules.confirm(user.id, rule_id, typed)
        if result.enabled and result.rule is not None:
            return await self._stop(update, context,
                                    await self._turned_on(ui, user.id, result.rule, draft))
        outcome = result.outcome
        refused: str | None = None
        if result.status is ConfirmStatus.CODE_REJECTED and outcome is not None:
            if outcome.result is CheckResult.LOCKED and outcome.locked_until is not None:
                return await self._stop(update, context, _(
                    "Too many wrong codes. For your safety this line is locked until "
                    "{time}.").format(time=ui.when(outcome.locked_until)))
            if outcome.result is CheckResult.WRONG:
                refused = ui.ngettext("That code is not right. {tries} try left.",
                                      "That code is not right. {tries} tries left.",
                                      outcome.tries_left).format(tries=outcome.tries_left)
            elif outcome.result is CheckResult.MALFORMED:
                refused = _("Type the 6 digits from the SMS, like 123456.")
            else:
                refused = _("That code has expired. Tap \"Send a new code\".")
        elif result.status is ConfirmStatus.CODE_FOR_OTHER:
            refused = _("That code was for something else. Tap \"Send a new code\".")
        if refused is None:
            return await self._stop(update, context,
                                    _("Nothing is waiting for a code. See /autorecharge."))
        return await self._show(update, context, ui, ASK_CODE, error=refused, fresh=True)

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        text = filters.TEXT & ~filters.COMMAND

        def at(step: str, *handlers: BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any],
               ) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
            """A step's handlers, and its own Back and Cancel."""
            nav = rf"^{cb.VERSION}:arx:(back|cancel):{STEP_KEYS[step]}$"
            return [*handlers, CallbackQueryHandler(self.navigate, pattern=nav)]

        wizard = ConversationHandler(
            name="autorecharge", persistent=True,
            entry_points=[CommandHandler("newrule", self.begin),
                          CallbackQueryHandler(self.begin, pattern=NEW),
                          CallbackQueryHandler(self.line_rules, pattern=LINE_RULES),
                          CallbackQueryHandler(self.on_rule, pattern=RULE)],
            states={
                PICK_LINE: at(PICK_LINE, CallbackQueryHandler(self.line_chosen, pattern=LINE)),
                PICK_BUY: at(PICK_BUY, CallbackQueryHandler(self.buy_chosen, pattern=BUY)),
                ASK_AMOUNT: at(ASK_AMOUNT, MessageHandler(text, self.amount_typed)),
                PICK_WHEN: at(PICK_WHEN, CallbackQueryHandler(self.when_chosen, pattern=WHEN)),
                ASK_WHEN_VALUE: at(ASK_WHEN_VALUE,
                                   CallbackQueryHandler(self.weekday_chosen, pattern=WEEKDAY),
                                   MessageHandler(text, self.when_value_typed)),
                ASK_CAP: at(ASK_CAP, MessageHandler(text, self.cap_typed)),
                PICK_APPROVAL: at(PICK_APPROVAL,
                                  CallbackQueryHandler(self.approval_chosen, pattern=APPROVAL)),
                CONFIRM: at(CONFIRM, CallbackQueryHandler(self.confirmed, pattern=SUMMARY)),
                ASK_CODE: at(ASK_CODE, MessageHandler(text, self.code_typed),
                             CallbackQueryHandler(self.resend, pattern=RESEND)),
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy),
                       MessageHandler(filters.ALL, self.use_buttons),
                       CallbackQueryHandler(self.use_buttons)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )
        return [CommandHandler("autorecharge", self.show_rules), wizard]

    async def _waiting(self, update: Update, context: ContextTypes.DEFAULT_TYPE,
                       rule_id: object = None) -> bool:
        """Whether the draft's rule (or ``rule_id``) was proposed and waits for its code."""
        user = update.effective_user
        rule_id = rule_id if rule_id is not None else self._draft(context).get("rule_id")
        rule = (await self._rules.own(user.id, rule_id)
                if user is not None and isinstance(rule_id, int) else None)
        return rule is not None and rule.status is RuleStatus.AWAITING_OTP

    def _stopped_waiting(self, ui: Ui) -> str:
        return ui._("Stopped here. The rule stays off until you type its SMS code: tap 🔑 "
                    "Enter the code in /autorecharge, or delete it there.")

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        """/cancel and the Cancel buttons: the wizard message says so. A rule already
        proposed stays listed, waiting for its code: say that instead."""
        ui = await self.ui(update)
        if await self._waiting(update, context):
            return await self._stop(update, context, self._stopped_waiting(ui))
        await self._put(update, context, ui._("Cancelled. Nothing was changed."), None)
        if context.user_data is not None:
            context.user_data.clear()
        return END

    async def timed_out(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Idle too long: the wizard message says so (its keyboard goes with it)."""
        ui = await self.ui(update)
        text = (self._stopped_waiting(ui) if await self._waiting(update, context)
                else ui._("This took too long, so I stopped here. Nothing was changed; start "
                          "again whenever you like."))
        await self._put(update, context, text, None)
        if context.user_data is not None:
            context.user_data.clear()

    async def use_buttons(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """What the step does not take: text where buttons are the answer, or a button of
        another step (no longer active) or of something else (the wizard is in the way)."""
        if update.callback_query is not None:
            pressed = await self.pressed(update)
            if pressed is not None:
                await pressed.query.answer(
                    pressed.ui._("That button is no longer active.")
                    if pressed.data.kind in WIZARD_KINDS else pressed.ui._(
                        "You are in the middle of something. Finish it, or send /cancel to "
                        "stop."))
            return
        ui = await self.ui(update)
        await self.reply(update, ui._("Use the buttons above, or /cancel."))
