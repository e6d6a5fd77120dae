"""What the scheduler pushes into the chat: balance and validity warnings, "cannot read your
line", reminders before a scheduled top-up, missed and skipped runs; and their buttons
(snooze a warning, skip one scheduled run)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import BaseHandler, CallbackQueryHandler, ContextTypes

from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.watch import WarningKind
from bot.i18n import Translations
from bot.services.lines import LinesService
from bot.services.rules import RulesService
from bot.services.scheduler import (
    LINE_UNREADABLE,
    RUN_REMINDER,
    RUN_SKIPPED,
    RUNS_MISSED,
    WARNING,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.approvals import PlanOffer, top_up_now_buttons
from handlers.common import Flow, Ui
from handlers.notification_views import Rendered, renders
from handlers.render import data_text, reading_text

SNOOZE_KIND, SKIP_KIND = "sz", "sk"
SNOOZE = cb.register(SNOOZE_KIND, "line")
SKIP = cb.register(SKIP_KIND, "rule", "run")  # run: the run's time, seconds since the epoch
LATEST_RUN_SECONDS = 253_402_300_799  # 9999-12-31: a forged time past it cannot be a date


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _reading(params: dict[str, Any]) -> LineReading | None:
    read_at = _moment(params.get("read_at"))
    if read_at is None or params.get("source") is None:
        return None
    balance = (Money(params["balance_minor"], params["balance_currency"])
               if params.get("balance_minor") is not None and params.get("balance_currency")
               else None)
    return LineReading(source=ReadingSource(params["source"]), read_at=read_at,
                       balance=balance, data_mb=params.get("data_mb"),
                       validity_end=_moment(params.get("validity_end")))


def _headline(ui: Ui, params: dict[str, Any]) -> str:
    _ = ui._
    line, kind = params.get("line", "?"), params.get("warning")
    validity = _moment(params.get("validity_end"))
    when = ui.when(validity) if validity is not None else "?"
    if kind == WarningKind.LOW_BALANCE:
        threshold = params.get("threshold_minor")
        return _("⚠️ {line}: the balance is below {threshold}.").format(
            line=line, threshold=ui.money(Money(threshold, "USD")) if threshold else "?")
    if kind == WarningKind.LOW_DATA:
        return _("⚠️ {line}: less than {threshold} of data left.").format(
            line=line, threshold=data_text(params.get("threshold_mb") or 0))
    if kind == WarningKind.VALIDITY_3_DAYS:
        return _("⏳ {line}: its validity ends within three days ({date}). Top it up to keep "
                 "the number.").format(line=line, date=when)
    if kind == WarningKind.VALIDITY_24_HOURS:
        return _("⏳ {line}: its validity ends within 24 hours ({date}). Top it up to keep "
                 "the number.").format(line=line, date=when)
    if kind == WarningKind.VALIDITY_HOUR:
        return _("🚨 {line} runs out within the hour ({date}). Top it up now to keep the "
                 "number.").format(line=line, date=when)
    recycle = _moment(params.get("recycle_at"))
    return _("🚨 {line} has not been topped up for a long time: the carrier takes the number "
             "back around {date}. Top it up to keep it.").format(
        line=line, date=ui.when(recycle) if recycle is not None else "?")


@renders(WARNING)
def render_warning(ui: Ui, params: dict[str, Any]) -> Rendered:
    _ = ui._
    reading = _reading(params)
    text = "\n\n".join([_headline(ui, params),
                        reading_text(ui, reading, ui.age(reading.read_at) if reading else "")])
    line_id = params.get("line_id")
    if not isinstance(line_id, int):
        return text, None
    rows = top_up_now_buttons(ui, line_id, PlanOffer.from_params(params, "plan_id"))
    if params.get("warning") in (WarningKind.LOW_BALANCE, WarningKind.LOW_DATA):
        rows.append([InlineKeyboardButton(_("💤 Remind me later"),
                                          callback_data=cb.encode(SNOOZE_KIND, line_id))])
    return text, InlineKeyboardMarkup(rows)


@renders(LINE_UNREADABLE)
def render_line_unreadable(ui: Ui, params: dict[str, Any]) -> Rendered:
    _ = ui._
    return _("I cannot read the balance of {line} from the carrier at the moment. I will keep "
             "trying, less often; meanwhile you can tell me the balance with /balance.").format(
        line=params.get("line", "?")), None


@renders(RUN_REMINDER)
def render_run_reminder(ui: Ui, params: dict[str, Any]) -> Rendered:
    _ = ui._
    run_at = _moment(params.get("run_at"))
    if isinstance(params.get("plan_name"), str):
        what = params["plan_name"]
    elif params.get("amount_minor") is not None:
        what = ui.money(Money(params["amount_minor"], params.get("currency") or "USD"))
    else:
        what = _("the cheapest top-up that keeps it alive")
    text = _("🗓 Reminder: {line} is topped up with {what} on {date}.").format(
        line=params.get("line", "?"), what=what, date=ui.when(run_at) if run_at else "?")
    if params.get("approval") == "ask":
        text += "\n" + _("I will ask you to approve it then.")
    rule_id = params.get("rule_id")
    if run_at is None or not isinstance(rule_id, int):
        return text, None
    return text, InlineKeyboardMarkup([[InlineKeyboardButton(
        _("⏭ Skip this time"),
        callback_data=cb.encode(SKIP_KIND, rule_id, int(run_at.timestamp())))]])


@renders(RUNS_MISSED)
def render_runs_missed(ui: Ui, params: dict[str, Any]) -> Rendered:
    _ = ui._
    first = _moment(params.get("first_missed"))
    return _("While I was not running, {count} scheduled top-ups of {line} fell due (from "
             "{date}). I did only the latest one, not all of them.").format(
        count=params.get("missed", "?"), line=params.get("line", "?"),
        date=ui.when(first) if first is not None else "?"), None


@renders(RUN_SKIPPED)
def render_run_skipped(ui: Ui, params: dict[str, Any]) -> Rendered:
    _ = ui._
    run_at = _moment(params.get("run_at"))
    return _("Skipped, as you asked: the scheduled top-up of {line} on {date}.").format(
        line=params.get("line", "?"), date=ui.when(run_at) if run_at else "?"), None


class AlertsFlow(Flow):
    """The buttons on warnings and reminders (each re-checked against the database)."""

    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService,
                 rules: RulesService) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._rules = rules

    async def snooze(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        _ = (await self.ui(update))._
        data = cb.decode(query.data)
        line_id = data.int_arg("line") if data else None
        snoozed = await self._lines.snooze_warnings(user.id, line_id) if line_id else None
        if snoozed is None:
            await query.answer(_("That line is not yours or no longer bound."),
                               show_alert=True)
            return
        await query.answer(_("OK. I will look again in a few hours and warn you if it is "
                             "still low."), show_alert=True)

    async def skip(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        assert query is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        data = cb.decode(query.data)
        rule_id = data.int_arg("rule") if data else None
        seconds = data.int_arg("run") if data else None
        run_at = (datetime.fromtimestamp(seconds, UTC)
                  if seconds is not None and seconds <= LATEST_RUN_SECONDS else None)
        skipped = (await self._rules.skip_run(user.id, rule_id, run_at)
                   if rule_id is not None and run_at is not None else False)
        if not skipped:
            await query.answer(_("That top-up is no longer scheduled: it ran already, or the "
                                 "rule changed. See /autorecharge."), show_alert=True)
            return
        await query.answer(_("Skipped."))
        message = query.message
        text = getattr(message, "text", None)
        done = _("⏭ You skipped this one.")
        if text and done not in text:  # a second tap leaves the message as it is
            try:
                await query.edit_message_text(f"{text}\n\n{done}")
            except BadRequest as error:
                if "not modified" not in str(error).lower():
                    raise

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        return [CallbackQueryHandler(self.snooze, pattern=SNOOZE),
                CallbackQueryHandler(self.skip, pattern=SKIP)]
