"""A line's balance or data chart: "📈 Chart" on its card sends the last 30 days as a photo,
whose buttons switch it to 90 days or to data (the photo is replaced in place)."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any

from babel.dates import format_skeleton
from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    Update,
)
from telegram.error import BadRequest
from telegram.ext import BaseHandler, CallbackQueryHandler, ContextTypes

from bot.domain.money import format_money
from bot.domain.readings import ReadingSource
from bot.i18n import Gettext, Translations
from bot.services.charts import CHART_DAYS, MIN_POINTS, ChartMetric, ChartsService, LineChart
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers import chart_png
from handlers.common import Flow, Ui, stopping

CHART_KIND = "cht"
CHART = cb.register(CHART_KIND, "line", "metric", "days")
AUTO = "auto"  # the card's button: the service picks balance, or data when only that is read
TICKS = 6  # date labels along the axis
# Drawing is CPU work in threads: a few at once keep the default executor free for others.
RENDERS_AT_ONCE = 2


def chart_button(ui: Ui, line_id: int) -> InlineKeyboardButton:
    """The way in, for the line's card."""
    return InlineKeyboardButton(ui._("📈 Chart"),
                                callback_data=cb.encode(CHART_KIND, line_id, AUTO, CHART_DAYS[0]))


def source_label(_: Gettext, source: ReadingSource, read_by: str | None) -> str:
    """Where readings came from, as the line's card says it."""
    if source is ReadingSource.PROVIDER:
        return (_("read from {provider}").format(provider=read_by) if read_by
                else _("read from the carrier"))
    if source is ReadingSource.USER:
        return _("reported by you")
    return _("estimated from the last top-up")


def chart_text(_: Gettext, locale: str, chart: LineChart) -> chart_png.ChartText:
    return chart_png.ChartText(
        y_label=(_("Balance ({unit})") if chart.metric is ChartMetric.BALANCE
                 else _("Data left ({unit})")),
        sources={source: source_label(_, source, chart.read_by) for source in ReadingSource},
        top_up=_("Top-up"),
        top_up_amounts=tuple(format_money(mark.amount, locale) for mark in chart.top_ups))


def ticks(ui: Ui, chart: LineChart) -> tuple[tuple[datetime, str], ...]:
    """Local midnights along the window, counted back from today's, labelled with the day
    in the user's style."""
    step = max(1, chart.days // TICKS)
    first = chart.start.astimezone(ui.zone).date() + timedelta(days=1)
    last = chart.end.astimezone(ui.zone).date()
    days = [last - timedelta(days=n) for n in range(0, (last - first).days + 1, step)][::-1]
    return tuple((at, str(format_skeleton("Md", at, tzinfo=ui.zone, locale=ui.locale)))
                 for at in (_midnight(day, ui) for day in days))


def _midnight(day: date, ui: Ui) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ui.zone)


class ChartsFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, charts: ChartsService) -> None:
        super().__init__(users, i18n)
        self._charts = charts
        self._renders = asyncio.Semaphore(RENDERS_AT_ONCE)

    async def show(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        request = _request(pressed.data)
        chart = (await self._charts.chart(user.id, request[0], metric=request[1],
                                          days=request[2]) if request is not None else None)
        if chart is None:  # forged, stale, or not the user's line: nothing is sent
            await query.answer(ui._("That button is no longer active."))
            return
        await query.answer()
        markup = self._buttons(ui, chart)
        if not chart.enough:
            await self.reply(update, too_few_text(ui, chart), reply_markup=markup)
            return
        drawing = chart_png.Drawing(chart, chart_text(ui._, ui.locale, chart),
                                    chart_text(self.i18n.gettext("en"),
                                               self.i18n.locale("en"), chart),
                                    ticks(ui, chart))
        async with self._renders:
            png = await asyncio.to_thread(chart_png.render_png, drawing)
        caption = chart_caption(ui, chart)
        if not await self._replace(query, png, caption, markup):
            assert update.effective_chat is not None
            await context.bot.send_photo(update.effective_chat.id, png, caption=caption,
                                         reply_markup=markup)

    async def _replace(self, query: CallbackQuery, png: bytes, caption: str,
                       markup: InlineKeyboardMarkup) -> bool:
        """A chart's own button replaces its picture in place; False when the button was
        under something else (the card) or the picture can no longer be edited."""
        if not (isinstance(query.message, Message) and query.message.photo):
            return False
        try:
            await query.edit_message_media(InputMediaPhoto(png, caption=caption),
                                           reply_markup=markup)
        except BadRequest as error:
            return "not modified" in str(error).lower()
        return True

    def _buttons(self, ui: Ui, chart: LineChart) -> InlineKeyboardMarkup:
        _ = ui._
        other_days = next(days for days in CHART_DAYS if days != chart.days)
        row = [InlineKeyboardButton(_("🗓 Last {days} days").format(days=other_days),
                                    callback_data=cb.encode(CHART_KIND, chart.line_id,
                                                            chart.metric.value, other_days))]
        for metric in chart.metrics:
            if metric is not chart.metric:
                label = (_("💵 Balance") if metric is ChartMetric.BALANCE else _("📶 Data"))
                row.append(InlineKeyboardButton(label, callback_data=cb.encode(
                    CHART_KIND, chart.line_id, metric.value, chart.days)))
        return InlineKeyboardMarkup([row])

    def button_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """Answered ahead of any conversation in progress: a chart only shows, so a flow
        waiting for text goes on undisturbed."""
        return [CallbackQueryHandler(stopping(self.show), pattern=CHART)]


def _request(data: cb.Callback) -> tuple[int, ChartMetric | None, int] | None:
    """(line, metric or None for the service's pick, days) of a chart button we made."""
    if data.kind != CHART_KIND:
        return None
    line_id, days, token = data.int_arg("line"), data.int_arg("days"), data.arg("metric")
    if line_id is None or days is None or days not in CHART_DAYS:
        return None
    if token == AUTO:
        return line_id, None, days
    metric = next((m for m in ChartMetric if m.value == token), None)
    return (line_id, metric, days) if metric is not None else None


def chart_caption(ui: Ui, chart: LineChart) -> str:
    """Which line, which window, and where the points came from."""
    _ = ui._
    headline = (_("📈 {line}: balance over the last {days} days")
                if chart.metric is ChartMetric.BALANCE
                else _("📈 {line}: data left over the last {days} days"))
    labels = [(source_label(_, series.source, chart.read_by), len(series.points))
              for series in chart.series]
    sources = ", ".join(f"{label} ({count})" for label, count in labels)
    lines = [headline.format(line=chart.title, days=chart.days),
             _("Readings: {sources}").format(sources=sources),
             (_("Top-ups marked: {count}").format(count=len(chart.top_ups)) if chart.top_ups
              else _("No top-ups in this time."))]
    return "\n".join(lines)


def too_few_text(ui: Ui, chart: LineChart) -> str:
    """Instead of an empty chart: why, and how readings arrive for this line."""
    _ = ui._
    if chart.is_esim:
        how = _("I read this eSIM's data from {provider} regularly, so the chart fills in "
                "by itself.").format(provider=chart.read_by or _("the eSIM provider"))
    else:
        how = _("Readings come from the carrier where it can be read, and from you: send "
                "/balance to type the balance, or forward the carrier's balance SMS to me.")
    return _("Not enough readings yet for a chart of {line}: it needs at least {count} in "
             "the last {days} days. {how}").format(line=chart.title, count=MIN_POINTS,
                                                   days=chart.days, how=how)
