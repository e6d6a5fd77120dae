"""/autorecharge: set up a rule (what to buy, when, monthly cap, approval), confirm it with
a code sent to the line; list rules with their next run; pause, resume, edit, delete."""

from __future__ import annotations

from typing import Any

from babel.dates import get_day_names
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyKeyboardRemove, Update
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
from bot.domain.otp import CheckResult, SendRefusal
from bot.domain.rules import Approval, CalendarKind, RuleError, RuleSpec, RuleStatus, Trigger
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
from handlers.common import CONVERSATION_TIMEOUT_SECONDS, END, Flow, Ui, too_long
from handlers.render import data_text

PICK_LINE, PICK_BUY, ASK_AMOUNT, PICK_WHEN = "ar:line", "ar:buy", "ar:amount", "ar:when"
ASK_WHEN_VALUE, ASK_CAP, PICK_APPROVAL = "ar:when_value", "ar:cap", "ar:approval"
CONFIRM, ASK_CODE = "ar:confirm", "ar:code"

NEW = cb.register("arn", "action")
LINE = cb.register("arl", "line")
BUY = cb.register("arb", "what")  # amount, plan, cheap
WHEN = cb.register("arw", "when")  # monthly, weekly, every, balance, data, alive
WEEKDAY = cb.register("ard", "day")
APPROVAL = cb.register("arp", "mode")  # ask, auto
SUMMARY = cb.register("arc", "answer")  # ok, no
RESEND = cb.register("arr", "action")
RULE = cb.register("ru", "rule", "action")  # pause, resume, code, del, delok, edit
DRAFT = "rule_draft"  # user_data key: the rule being set up, plain JSON values only


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


def describe(ui: Ui, spec: RuleSpec, line_label: str, plan_name: str | None) -> str:
    _ = ui._
    if spec.amount is not None:
        buy = _("{amount} of airtime").format(amount=ui.money(spec.amount))
    elif spec.product_id is not None:
        buy = _("the plan {plan}").format(plan=plan_name or spec.product_id)
    else:
        buy = _("the cheapest top-up that extends validity")
    if spec.trigger is Trigger.CALENDAR and spec.calendar is CalendarKind.MONTHLY:
        when = _("every month on day {day} (the last day in shorter months)").format(
            day=spec.calendar_value)
    elif spec.trigger is Trigger.CALENDAR and spec.calendar is CalendarKind.WEEKLY:
        when = _("every {weekday}").format(
            weekday=get_day_names("wide", locale=ui.locale)[spec.calendar_value or 0])
    elif spec.trigger is Trigger.CALENDAR:
        when = _("every {days} days").format(days=spec.calendar_value)
    elif spec.trigger is Trigger.BALANCE_BELOW and spec.threshold is not None:
        when = _("when the balance falls below {amount}").format(
            amount=ui.money(spec.threshold))
    elif spec.trigger is Trigger.DATA_BELOW:
        when = _("when data falls below {data}").format(data=data_text(spec.threshold_mb or 0))
    else:
        when = _("{days} days before the line's validity ends").format(days=spec.days_before)
    approval = (_("I ask you before every charge") if spec.approval is Approval.ASK
                else _("I charge automatically within the cap"))
    return _("{line}: buy {buy}, {when}. At most {cap} a month; {approval}.").format(
        line=line_label, buy=buy, when=when, cap=ui.money(spec.monthly_cap), approval=approval)


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
        _ = ui._
        rules = await self._rules.list(user.id)
        lines = {line.id: line for line in await self._lines.for_user(user.id)}
        new = InlineKeyboardButton(_("➕ New rule"), callback_data=cb.encode("arn", "new"))
        if not rules:
            await self.reply(update, _("No auto-recharge rules yet."),
                             reply_markup=InlineKeyboardMarkup([[new]]))
            return
        for rule in rules:
            line = lines.get(rule.line_id)
            await self.reply(update, self._rule_text(ui, rule, line.label if line else "?"),
                             reply_markup=self._rule_buttons(ui, rule))
        await self.reply(update, _("Add another rule?"), reply_markup=InlineKeyboardMarkup([[new]]))

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
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        data = cb.decode(query.data)
        rule_id = data.int_arg("rule") if data else None
        action = data.arg("action") if data else ""
        rule = await self._rules.own(user.id, rule_id) if rule_id is not None else None
        if rule is None or rule.status is RuleStatus.DISABLED:
            await query.answer(_("That rule is not yours or no longer exists."), show_alert=True)
            return END
        if action == "edit":
            await query.answer()
            draft = self._draft(context)
            draft.clear()
            draft.update(rule_id=rule.id, line_id=rule.line_id)
            return await self._ask_buy(update, ui, rule.line_id, user.id)
        if action == "code":
            await query.answer()
            sent = await self._rules.resend_code(user.id, rule.id, self._sms_text(ui))
            if not isinstance(sent, CodeSent | CodeNotSent):
                await self.reply(update, _("That button is no longer active."))
                return END
            draft = self._draft(context)
            draft.clear()
            draft.update(rule_id=rule.id, line_id=rule.line_id)
            return await self._code_sent(update, ui, sent)
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

    # -- the wizard ------------------------------------------------------------------------

    async def begin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        user = update.effective_user
        assert user is not None
        if update.callback_query is not None:
            await update.callback_query.answer()
        ui = await self.ui(update)
        _ = ui._
        self._draft(context).clear()
        lines = await self._lines.for_user(user.id)
        if not lines:
            await self.reply(update, _("You have no lines yet. Send /bind to add one."))
            return END
        if len(lines) == 1:
            self._draft(context)["line_id"] = lines[0].id
            return await self._ask_buy(update, ui, lines[0].id, user.id)
        rows = [[InlineKeyboardButton(line.label, callback_data=cb.encode("arl", line.id))]
                for line in lines]
        await self.reply(update, _("Which line should I top up automatically?"),
                         reply_markup=InlineKeyboardMarkup(rows))
        return PICK_LINE

    async def line_chosen(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        ui = await self.ui(update)
        data = cb.decode(query.data)
        line_id = data.int_arg("line") if data else None
        line = await self._lines.own(user.id, line_id) if line_id is not None else None
        if line is None:
            await query.answer(ui._("That line is not yours or no longer bound."),
                               show_alert=True)
            return PICK_LINE
        await query.answer()
        self._draft(context)["line_id"] = line.id
        return await self._ask_buy(update, ui, line.id, user.id)

    async def _ask_buy(self, update: Update, ui: Ui, line_id: int,
                       user_id: int) -> str | int:
        _ = ui._
        with_plan = await self._lines.with_plan(user_id, line_id)
        esim = with_plan is not None and with_plan.line.is_esim
        plan = with_plan.plan if with_plan is not None else None
        if esim and plan is None:
            await self.reply(update, _("An eSIM is topped up with one of its own packages: "
                                       "choose it first in /lines (📋 Choose plan)."))
            return END
        rows = []
        if not esim:  # an eSIM takes no airtime
            rows.append([InlineKeyboardButton(_("A fixed amount of airtime"),
                                              callback_data=cb.encode("arb", "amount"))])
        if plan is not None:
            rows.append([InlineKeyboardButton(
                _("My plan: {plan}").format(plan=plan.name),
                callback_data=cb.encode("arb", "plan"))])
        if not esim:
            rows.append([InlineKeyboardButton(
                _("The cheapest top-up that keeps the line alive"),
                callback_data=cb.encode("arb", "cheap"))])
        await self.reply(update, _("What should I buy each time?"),
                         reply_markup=InlineKeyboardMarkup(rows))
        return PICK_BUY

    async def buy_chosen(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        await query.answer()
        ui = await self.ui(update)
        _ = ui._
        draft = self._draft(context)
        data = cb.decode(query.data)
        what = data.arg("what") if data else ""
        draft.pop("amount_minor", None)
        draft.pop("product_id", None)
        if what == "amount":
            await self.reply(update, _("How much each time? Type an amount like 5 or $2.50."))
            return ASK_AMOUNT
        if what == "plan":
            found = await self._lines.with_plan(user.id, int(draft.get("line_id", 0)))
            if found is None or found.plan is None:
                await self.reply(update, _("That line has no plan yet. Choose one in /lines."))
                return PICK_BUY
            draft["product_id"] = found.plan.id
        return await self._ask_when(update, ui)

    async def amount_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        amount = self._money(message.text)
        if isinstance(amount, str):
            await message.reply_text(ui._(amount))
            return ASK_AMOUNT
        self._draft(context)["amount_minor"] = amount.minor
        return await self._ask_when(update, ui)

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

    async def _ask_when(self, update: Update, ui: Ui) -> str:
        _ = ui._
        options = (("monthly", _("Every month")), ("weekly", _("Every week")),
                   ("every", _("Every N days")), ("balance", _("When the balance is low")),
                   ("data", _("When data is low")),
                   ("alive", _("Before the line would expire (keep it alive)")))
        rows = [[InlineKeyboardButton(label, callback_data=cb.encode("arw", key))]
                for key, label in options]
        await self.reply(update, _("When?"), reply_markup=InlineKeyboardMarkup(rows))
        return PICK_WHEN

    async def when_chosen(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query = update.callback_query
        assert query is not None
        await query.answer()
        ui = await self.ui(update)
        _ = ui._
        data = cb.decode(query.data)
        when = data.arg("when") if data else ""
        draft = self._draft(context)
        draft["when"] = when
        if when == "weekly":
            names = get_day_names("wide", locale=ui.locale)
            rows = [[InlineKeyboardButton(str(names[day]), callback_data=cb.encode("ard", day))]
                    for day in range(7)]
            await self.reply(update, _("On which day?"), reply_markup=InlineKeyboardMarkup(rows))
            return ASK_WHEN_VALUE
        prompts = {
            "monthly": _("On which day of the month (1-31)?"),
            "every": _("Every how many days (1-365)?"),
            "balance": _("Top up when the balance falls below how much? (like 1 or $0.50)"),
            "data": _("Top up when data falls below how much? (like 500 MB or 1 GB)"),
            "alive": _("How many days before the validity ends (1-14)?"),
        }
        if when not in prompts:
            await self.reply(update, _("That button is no longer active."))
            return PICK_WHEN
        await self.reply(update, prompts[when])
        return ASK_WHEN_VALUE

    async def weekday_chosen(self, update: Update,
                             context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query = update.callback_query
        assert query is not None
        await query.answer()
        data = cb.decode(query.data)
        day = data.int_arg("day") if data else None
        ui = await self.ui(update)
        if day is None or day > 6 or self._draft(context).get("when") != "weekly":
            await self.reply(update, ui._("That button is no longer active."))
            return ASK_WHEN_VALUE
        self._draft(context)["when_value"] = day
        return await self._ask_cap(update, ui)

    async def when_value_typed(self, update: Update,
                               context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        _ = ui._
        draft = self._draft(context)
        text = (message.text or "").strip()
        when = draft.get("when")
        limits = {"monthly": (1, 31), "every": (1, 365), "alive": (1, 14)}
        if when in limits:
            low, high = limits[str(when)]
            if not text.isdigit() or not low <= int(text) <= high:
                await message.reply_text(_("Type a whole number from {low} to {high}.").format(
                    low=low, high=high))
                return ASK_WHEN_VALUE
            draft["when_value"] = int(text)
        elif when == "balance":
            amount = self._money(text)
            if isinstance(amount, str):
                await message.reply_text(_(amount))
                return ASK_WHEN_VALUE
            draft["when_value"] = amount.minor
        elif when == "data":
            megabytes = None if too_long(text) else parse_megabytes(text)
            if megabytes is None:
                await message.reply_text(_("Type an amount of data like 500 MB or 1 GB."))
                return ASK_WHEN_VALUE
            draft["when_value"] = megabytes
        else:
            await message.reply_text(_("Choose one of the buttons above, or /cancel."))
            return ASK_WHEN_VALUE
        return await self._ask_cap(update, ui)

    async def _ask_cap(self, update: Update, ui: Ui) -> str:
        await self.reply(update, ui._("At most how much in one month? (like 20)"))
        return ASK_CAP

    async def cap_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str:
        message = update.effective_message
        assert message is not None
        ui = await self.ui(update)
        _ = ui._
        cap = self._money(message.text)
        if isinstance(cap, str):
            await message.reply_text(_(cap))
            return ASK_CAP
        self._draft(context)["cap_minor"] = cap.minor
        keyboard = InlineKeyboardMarkup([
            [InlineKeyboardButton(_("Ask me every time"), callback_data=cb.encode("arp", "ask"))],
            [InlineKeyboardButton(_("Charge automatically up to the cap"),
                                  callback_data=cb.encode("arp", "auto"))]])
        await message.reply_text(_("Should I ask before each charge?"), reply_markup=keyboard)
        return PICK_APPROVAL

    async def approval_chosen(self, update: Update,
                              context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        await query.answer()
        ui = await self.ui(update)
        _ = ui._
        data = cb.decode(query.data)
        mode = data.arg("mode") if data else ""
        if mode not in ("ask", "auto"):
            return PICK_APPROVAL
        draft = self._draft(context)
        draft["approval"] = mode
        spec = self._spec(draft, ui)
        line = await self._lines.own(user.id, int(draft.get("line_id", 0)))
        if spec is None or line is None:
            await self.reply(update, _("Something in this rule is missing. Please start again "
                                       "with /autorecharge."))
            return END
        plan = await self._lines.with_plan(user.id, line.id)
        plan_name = plan.plan.name if plan and plan.plan else None
        keyboard = InlineKeyboardMarkup([[
            InlineKeyboardButton(_("✅ Confirm"), callback_data=cb.encode("arc", "ok")),
            InlineKeyboardButton(_("✖️ Cancel"), callback_data=cb.encode("arc", "no"))]])
        await self.reply(update, describe(ui, spec, line.label, plan_name) + "\n\n" + _(
            "To turn it on I will send a code by SMS to the line."), reply_markup=keyboard)
        return CONFIRM

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

    async def confirmed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        await query.answer()
        ui = await self.ui(update)
        _ = ui._
        data = cb.decode(query.data)
        if data is None or data.arg("answer") != "ok":
            return await self.cancel(update, context)
        draft = self._draft(context)
        spec = self._spec(draft, ui)
        if spec is None:
            await self.reply(update, _("Something in this rule is missing. Please start again "
                                       "with /autorecharge."))
            return END
        rule_id = draft.get("rule_id")
        outcome: Proposed | NotYourLine | Invalid | Edited | NotYourRule | WrongState
        if isinstance(rule_id, int):
            outcome = await self._rules.edit(user.id, rule_id, spec, self._sms_text(ui))
        else:
            outcome = await self._rules.propose(user.id, int(draft.get("line_id", 0)), spec,
                                                self._sms_text(ui))
        if isinstance(outcome, Invalid):
            await self.reply(update, rule_error_text(_, outcome.reason))
            return END
        if isinstance(outcome, NotYourLine | NotYourRule | WrongState):
            await self.reply(update, _("That line is not yours or no longer bound."))
            return END
        if isinstance(outcome, Edited) and outcome.code is None:
            self._draft(context).clear()
            await self.reply(update, _("Updated. The rule stays on."))
            return END
        if outcome.code is None:  # an eSIM: its purchase proved it, no code is needed
            self._draft(context).clear()
            text = _("Auto-recharge is on.")
            if outcome.rule.next_run_at is not None:
                text += " " + _("Next run: {when}").format(when=ui.when(outcome.rule.next_run_at))
            await self.reply(update, text)
            return END
        draft["rule_id"] = outcome.rule.id
        return await self._code_sent(update, ui, outcome.code)

    async def _code_sent(self, update: Update, ui: Ui,
                         sent: CodeSent | CodeNotSent) -> str | int:
        _ = ui._
        if isinstance(sent, CodeSent):
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(
                _("Send a new code"), callback_data=cb.encode("arr", "resend"))]])
            await self.reply(update, _("I sent a 6-digit code by SMS to the line. Type it here "
                                       "to turn the rule on."), reply_markup=keyboard)
            return ASK_CODE
        if sent.refused is None:
            await self.reply(update, _("I could not send the SMS just now. Please try again "
                                       "in a minute."))
            return ASK_CODE
        if sent.refused.reason is SendRefusal.COOLDOWN:
            await self.reply(update, _("A code was sent moments ago. Type it, or ask for a new "
                                       "one after {time}.").format(
                time=ui.when(sent.refused.retry_at)))
            return ASK_CODE
        await self.reply(update, _("No more codes can be sent to this line for now. Try again "
                                   "after {time}; the rule waits for its code in "
                                   "/autorecharge.").format(time=ui.when(sent.refused.retry_at)))
        return END

    async def resend(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        await query.answer()
        ui = await self.ui(update)
        rule_id = self._draft(context).get("rule_id")
        sent = (await self._rules.resend_code(user.id, rule_id, self._sms_text(ui))
                if isinstance(rule_id, int) else None)
        if not isinstance(sent, CodeSent | CodeNotSent):
            await self.reply(update, ui._("That button is no longer active."))
            return END
        return await self._code_sent(update, ui, sent)

    async def code_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        rule_id = self._draft(context).get("rule_id")
        if not isinstance(rule_id, int):
            await message.reply_text(_("Please start again with /autorecharge."))
            return END
        typed = "" if too_long(message.text) else (message.text or "")
        result = await self._rules.confirm(user.id, rule_id, typed)
        if result.enabled and result.rule is not None:
            self._draft(context).clear()
            text = _("Auto-recharge is on.")
            if result.rule.next_run_at is not None:
                text += " " + _("Next run: {when}").format(when=ui.when(result.rule.next_run_at))
            await message.reply_text(text)
            return END
        outcome = result.outcome
        if result.status is ConfirmStatus.CODE_REJECTED and outcome is not None:
            if outcome.result is CheckResult.WRONG:
                await message.reply_text(_("That code is not right. {tries} tries left.").format(
                    tries=outcome.tries_left))
                return ASK_CODE
            if outcome.result is CheckResult.MALFORMED:
                await message.reply_text(_("Type the 6 digits from the SMS, like 123456."))
                return ASK_CODE
            if outcome.result is CheckResult.LOCKED and outcome.locked_until is not None:
                await message.reply_text(_("Too many wrong codes. For your safety this line is "
                                           "locked until {time}.").format(
                    time=ui.when(outcome.locked_until)))
                return END
            await message.reply_text(_("That code has expired. Tap \"Send a new code\"."))
            return ASK_CODE
        if result.status is ConfirmStatus.CODE_FOR_OTHER:
            await message.reply_text(_("That code was for something else. Tap \"Send a new "
                                       "code\"."))
            return ASK_CODE
        await message.reply_text(_("Nothing is waiting for a code. See /autorecharge."))
        return END

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        text = filters.TEXT & ~filters.COMMAND
        wizard = ConversationHandler(
            name="autorecharge", persistent=True,
            entry_points=[CommandHandler("newrule", self.begin),
                          CallbackQueryHandler(self.begin, pattern=NEW),
                          CallbackQueryHandler(self.on_rule, pattern=RULE)],
            states={
                PICK_LINE: [CallbackQueryHandler(self.line_chosen, pattern=LINE)],
                PICK_BUY: [CallbackQueryHandler(self.buy_chosen, pattern=BUY)],
                ASK_AMOUNT: [MessageHandler(text, self.amount_typed)],
                PICK_WHEN: [CallbackQueryHandler(self.when_chosen, pattern=WHEN)],
                ASK_WHEN_VALUE: [CallbackQueryHandler(self.weekday_chosen, pattern=WEEKDAY),
                                 MessageHandler(text, self.when_value_typed)],
                ASK_CAP: [MessageHandler(text, self.cap_typed)],
                PICK_APPROVAL: [CallbackQueryHandler(self.approval_chosen, pattern=APPROVAL)],
                CONFIRM: [CallbackQueryHandler(self.confirmed, pattern=SUMMARY)],
                ASK_CODE: [MessageHandler(text, self.code_typed),
                           CallbackQueryHandler(self.resend, pattern=RESEND)],
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

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
        """/cancel; a rule already proposed stays listed, waiting for its code: say so."""
        user = update.effective_user
        rule_id = self._draft(context).get("rule_id")
        rule = (await self._rules.own(user.id, rule_id)
                if user is not None and isinstance(rule_id, int) else None)
        if rule is None or rule.status is not RuleStatus.AWAITING_OTP:
            return await super().cancel(update, context)
        self._draft(context).clear()
        ui = await self.ui(update)
        await self.reply(update, ui._("Stopped here. The rule stays off until you type its SMS "
                                      "code: tap 🔑 Enter the code in /autorecharge, or delete "
                                      "it there."), reply_markup=ReplyKeyboardRemove())
        return END

    async def use_buttons(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer()
        ui = await self.ui(update)
        await self.reply(update, ui._("Use the buttons above, or /cancel."))
