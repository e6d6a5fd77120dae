"""What the scheduler pushes into the chat: balance and validity warnings, "cannot read your
line", reminders before a scheduled top-up, missed and skipped runs; and their buttons
(snooze a warning, skip one scheduled run)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, ContextTypes

from bot.domain.money import Money
from bot.domain.rules import Approval
from bot.domain.watch import WarningKind
from bot.i18n import Translations
from bot.services.lines import LinesService
from bot.services.rules import RulesService
from bot.services.scheduler import (
    LineShown,
    LineUnreadable,
    LineWarning,
    RunReminder,
    RunSkipped,
    RunsMissed,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.approvals import PlanOffer, top_up_now_buttons
from handlers.common import Flow, Ui, edit_in_place
from handlers.notification_views import NoticeView, Rendered
from handlers.render import data_text, reading_text

SNOOZE_KIND, SKIP_KIND = "sz", "sk"
SNOOZE = cb.register(SNOOZE_KIND, "line")
SKIP = cb.register(SKIP_KIND, "rule", "run")  # run: the run's time, seconds since the epoch
LATEST_RUN_SECONDS = 253_402_300_799  # 9999-12-31: a forged time past it cannot be a date


def _headline(ui: Ui, notice: LineWarning) -> str:
    _ = ui._
    line, kind, reading = notice.line.label, notice.warning, notice.line.reading
    validity = reading.validity_end if reading is not None else None
    when = ui.when(validity) if validity is not None else "?"
    if kind is WarningKind.LOW_BALANCE:
        threshold = notice.threshold_minor
        return _("⚠️ {line}: the balance is below {threshold}.").format(
            line=line, threshold=ui.money(Money(threshold, "USD")) if threshold else "?")
    if kind is WarningKind.LOW_DATA:
        return _("⚠️ {line}: less than {threshold} of data left.").format(
            line=line, threshold=data_text(notice.threshold_mb or 0))
    if notice.line.esim and kind in (WarningKind.VALIDITY_3_DAYS, WarningKind.VALIDITY_24_HOURS,
                                     WarningKind.VALIDITY_HOUR):
        # An eSIM has no number to keep: it stops working, until a top-up extends it.
        return _("⏳ {line}: this eSIM expires {date}. Top it up to keep using it.").format(
            line=line, date=when)
    if kind is WarningKind.VALIDITY_3_DAYS:
        return _("⏳ {line}: its validity ends within three days ({date}). Top it up to keep "
                 "the number.").format(line=line, date=when)
    if kind is WarningKind.VALIDITY_24_HOURS:
        return _("⏳ {line}: its validity ends within 24 hours ({date}). Top it up to keep "
                 "the number.").format(line=line, date=when)
    if kind is WarningKind.VALIDITY_HOUR:
        return _("🚨 {line} runs out within the hour ({date}). Top it up now to keep the "
                 "number.").format(line=line, date=when)
    recycle = notice.recycle_at
    return _("🚨 {line} has not been topped up for a long time: the carrier takes the number "
             "back around {date}. Top it up to keep it.").format(
        line=line, date=ui.when(recycle) if recycle is not None else "?")


def _offer(line: LineShown) -> PlanOffer | None:
    """The line's plan as its "Buy now" button offers it."""
    if line.plan_id is None or line.plan is None:
        return None
    return PlanOffer(line.plan_id, line.plan.name, line.plan.price)


def render_warning(ui: Ui, notice: LineWarning) -> Rendered:
    _ = ui._
    shown = notice.line.reading
    reading = shown.as_reading() if shown is not None else None
    text = "\n\n".join([_headline(ui, notice),
                        reading_text(ui, reading, ui.age(reading.read_at) if reading else "",
                                     shown.read_by if shown is not None else None)])
    rows = top_up_now_buttons(ui, notice.line.id, _offer(notice.line),
                              airtime=not notice.line.esim)
    if notice.warning in (WarningKind.LOW_BALANCE, WarningKind.LOW_DATA):
        rows.append([InlineKeyboardButton(_("💤 Remind me later"),
                                          callback_data=cb.encode(SNOOZE_KIND, notice.line.id))])
    return text, InlineKeyboardMarkup(rows)


def render_line_unreadable(ui: Ui, notice: LineUnreadable) -> Rendered:
    _ = ui._
    return _("I cannot read the balance of {line} from the carrier at the moment. I will keep "
             "trying, less often; meanwhile you can tell me the balance with /balance.").format(
        line=notice.line.label), None


def render_run_reminder(ui: Ui, notice: RunReminder) -> Rendered:
    _ = ui._
    if notice.plan is not None:
        what = notice.plan.name
    elif notice.amount is not None:
        what = ui.money(notice.amount)
    else:
        what = _("the cheapest top-up that keeps it alive")
    text = _("🗓 Reminder: {line} is topped up with {what} on {date}.").format(
        line=notice.line, what=what, date=ui.when(notice.run_at))
    if notice.approval is Approval.ASK:
        text += "\n" + _("I will ask you to approve it then.")
    return text, InlineKeyboardMarkup([[InlineKeyboardButton(
        _("⏭ Skip this time"),
        callback_data=cb.encode(SKIP_KIND, notice.rule_id, int(notice.run_at.timestamp())))]])


def render_runs_missed(ui: Ui, notice: RunsMissed) -> Rendered:
    _ = ui._
    first = notice.first_missed
    return _("While I was not running, {count} scheduled top-ups of {line} fell due (from "
             "{date}). I did only the latest one, not all of them.").format(
        count=notice.missed, line=notice.line,
        date=ui.when(first) if first is not None else "?"), None


def render_run_skipped(ui: Ui, notice: RunSkipped) -> Rendered:
    _ = ui._
    return _("Skipped, as you asked: the scheduled top-up of {line} on {date}.").format(
        line=notice.line, date=ui.when(notice.run_at)), None


# Not annotated: mypy infers each pair's notice type and checks its renderer against it
# (NoticeView[Any] would let any renderer pass).
NOTICE_VIEWS = (
    NoticeView(LineWarning, render_warning),
    NoticeView(LineUnreadable, render_line_unreadable),
    NoticeView(RunReminder, render_run_reminder),
    NoticeView(RunsMissed, render_runs_missed),
    NoticeView(RunSkipped, render_run_skipped),
)


class AlertsFlow(Flow):
    """The buttons on warnings and reminders (each re-checked against the database)."""

    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService,
                 rules: RulesService) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._rules = rules

    async def snooze(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, _ = pressed.query, pressed.ui._
        line_id = pressed.int_arg("line")
        snoozed = await self._lines.snooze_warnings(pressed.user.id, line_id) if line_id else None
        if snoozed is None:
            await query.answer(_("That line is not yours or no longer bound."),
                               show_alert=True)
            return
        await query.answer(_("OK. I will look again in a few hours and warn you if it is "
                             "still low."), show_alert=True)

    async def skip(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, _ = pressed.query, pressed.ui._
        rule_id, seconds = pressed.int_arg("rule"), pressed.int_arg("run")
        run_at = (datetime.fromtimestamp(seconds, UTC)
                  if seconds is not None and seconds <= LATEST_RUN_SECONDS else None)
        skipped = (await self._rules.skip_run(pressed.user.id, rule_id, run_at)
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
            await edit_in_place(query, f"{text}\n\n{done}")

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        return [CallbackQueryHandler(self.snooze, pattern=SNOOZE),
                CallbackQueryHandler(self.skip, pattern=SKIP)]
