"""/history (and "🧾 History" on a line's card and on /wallet): charges, wallet movements and
warnings, newest first, a page at a time in one message edited in place; "Export CSV" sends
the ledger as a file; the monthly summary, and its opt-in push on the 1st.

Buttons: ``v1:hi:<all|line>:<page>``, ``v1:hx:<all|line>``, ``v1:hm:<now|YYYY-MM>``,
``v1:hp:<on|off>:<YYYY-MM>``. Each press asks the service again, which re-reads the line
and its rows; anything it does not accept is "no longer active" and changes nothing.
"""

from __future__ import annotations

from typing import Any

from babel.dates import format_skeleton
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.domain.charges import ChargeState
from bot.domain.history import Month
from bot.domain.money import Money
from bot.domain.wallet import EntryKind
from bot.domain.watch import WarningKind
from bot.i18n import Translations
from bot.services.history import (
    ChargeItem,
    HistoryItem,
    HistoryPage,
    HistoryService,
    LineChoice,
    LineSummary,
    MonthlySummary,
    MonthlySummaryReady,
    MovementItem,
    SummaryTotals,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place, stopping
from handlers.notification_views import NoticeView, Rendered

PAGE_KIND, EXPORT_KIND, MONTH_KIND, PUSH_KIND = "hi", "hx", "hm", "hp"
PAGE = cb.register(PAGE_KIND, "scope", "page")  # scope: all, or a line id
EXPORT = cb.register(EXPORT_KIND, "scope")
MONTH = cb.register(MONTH_KIND, "month")  # now, or YYYY-MM
PUSH = cb.register(PUSH_KIND, "on", "month")  # on | off, the month shown
ALL = "all"
THIS_MONTH = "now"


def _scope(line: LineChoice | int | None) -> str:
    if line is None:
        return ALL
    return str(line if isinstance(line, int) else line.id)


def history_button(ui: Ui, line_id: int | None = None) -> InlineKeyboardButton:
    """The button that opens the history (of one line, or of all)."""
    return InlineKeyboardButton(ui._("🧾 History"),
                                callback_data=cb.encode(PAGE_KIND, _scope(line_id), 0))


# --- how things read ----------------------------------------------------------------------


def _signed(ui: Ui, amount: Money) -> str:
    shown = ui.money(Money(abs(amount.minor), amount.currency))
    return f"+{shown}" if amount.minor >= 0 else f"−{shown}"


def _state(ui: Ui, state: ChargeState) -> str:
    _ = ui._
    return {
        ChargeState.AWAITING_APPROVAL: _("waiting for your approval"),
        ChargeState.APPROVED: _("approved, on its way"),
        ChargeState.SUBMITTED: _("approved, on its way"),
        ChargeState.SUCCEEDED: _("done"),
        ChargeState.FAILED: _("did not go through, money returned"),
        ChargeState.DECLINED: _("declined by you"),
        ChargeState.EXPIRED: _("expired unanswered"),
    }[state]


def _movement(ui: Ui, kind: EntryKind) -> str:
    _ = ui._  # the same words as /wallet's movements
    return {
        EntryKind.PAYMENT: _("Paid through Telegram"),
        EntryKind.OPERATOR_CREDIT: _("Cash or bank transfer"),
        EntryKind.KHQR: _("Paid by KHQR"),
        EntryKind.HOLD: _("Top-up of a line"),
        EntryKind.RELEASE: _("Top-up did not go through: returned"),
        EntryKind.REFUND: _("Refunded to you"),
    }[kind]


def _warning(ui: Ui, warning: WarningKind | None) -> str:
    _ = ui._
    if warning is None:  # a kind a later version sent
        return _("Warning")
    return {
        WarningKind.LOW_BALANCE: _("Warning: low balance"),
        WarningKind.LOW_DATA: _("Warning: low data"),
        WarningKind.VALIDITY_3_DAYS: _("Warning: validity ends within three days"),
        WarningKind.VALIDITY_24_HOURS: _("Warning: validity ends within 24 hours"),
        WarningKind.VALIDITY_HOUR: _("Warning: validity ends within the hour"),
        WarningKind.RECYCLING: _("Warning: the number may be taken back"),
    }[warning]


def item_text(ui: Ui, item: HistoryItem) -> str:
    _ = ui._
    when = ui.when(item.at)
    if isinstance(item, ChargeItem):
        what = (_("⚡ Automatic top-up {amount}: {state}") if item.automatic
                else _("⚡ Top-up {amount}: {state}"))
        return "\n".join([f"{when} · {item.line}",
                          what.format(amount=ui.money(item.amount),
                                      state=_state(ui, item.state)),
                          _("Reference: {reference}").format(reference=item.reference)])
    if isinstance(item, MovementItem):
        out = [f"{when} · {item.line}" if item.line else when,
               f"👛 {_signed(ui, item.amount)} {_movement(ui, item.kind)}"]
        if item.reference:
            out.append(_("Reference: {reference}").format(reference=item.reference))
        return "\n".join(out)
    return f"{when} · {item.line}\n⚠️ {_warning(ui, item.warning)}"


def history_text(ui: Ui, page: HistoryPage) -> str:
    _ = ui._
    title = (_("🧾 History of {line}").format(line=page.line.label) if page.line is not None
             else _("🧾 History of all your lines"))
    if page.pages > 1:
        title += " " + _("(page {page} of {pages})").format(page=page.page + 1,
                                                           pages=page.pages)
    if not page.items:
        empty = (_("Nothing yet. Its top-ups, the money held and returned for them, and its "
                   "balance warnings will appear here, newest first.")
                 if page.line is not None else
                 _("Nothing yet. Your top-ups, wallet payments, refunds and balance warnings "
                   "will appear here, newest first."))
        return f"{title}\n\n{empty}"
    return "\n\n".join([title, *(item_text(ui, item) for item in page.items)])


def history_markup(ui: Ui, page: HistoryPage) -> InlineKeyboardMarkup:
    _ = ui._
    scope = _scope(page.line)
    rows: list[list[InlineKeyboardButton]] = []
    nav = []
    if page.page > 0:
        nav.append(InlineKeyboardButton(_("‹ Newer"),
                                        callback_data=cb.encode(PAGE_KIND, scope, page.page - 1)))
    if page.page < page.pages - 1:
        nav.append(InlineKeyboardButton(_("Older ›"),
                                        callback_data=cb.encode(PAGE_KIND, scope, page.page + 1)))
    if nav:
        rows.append(nav)
    if page.lines:  # choose what to see: every line, or one (the one shown is marked)
        choices = [(None, _("All lines")), *((line, line.label) for line in page.lines)]
        buttons = [InlineKeyboardButton(
            f"• {label}" if _scope(line) == scope else label,
            callback_data=cb.encode(PAGE_KIND, _scope(line), 0)) for line, label in choices]
        rows.extend(buttons[i:i + 2] for i in range(0, len(buttons), 2))
    rows.append([InlineKeyboardButton(_("📄 Export CSV"),
                                      callback_data=cb.encode(EXPORT_KIND, scope)),
                 InlineKeyboardButton(_("📊 Monthly summary"),
                                      callback_data=cb.encode(MONTH_KIND, THIS_MONTH))])
    return InlineKeyboardMarkup(rows)


def month_name(ui: Ui, month: Month) -> str:
    return str(format_skeleton("yMMMM", month.first_day, locale=ui.locale))


def _spent(ui: Ui, top_ups: int, spent: Money) -> str:
    return ui._("Top-ups: {count}, {amount}").format(count=top_ups, amount=ui.money(spent))


def _capped(ui: Ui, capped: Money, cap: Money | None) -> str | None:
    _ = ui._
    if cap is not None:
        return _("Auto-recharge: {spent} of {cap} in monthly caps").format(
            spent=ui.money(capped), cap=ui.money(cap))
    if capped.is_positive:  # a rule that is off now spent it
        return _("Auto-recharge: {spent}").format(spent=ui.money(capped))
    return None


def _figures(ui: Ui, figures: LineSummary | SummaryTotals) -> list[str]:
    out = [_spent(ui, figures.top_ups, figures.spent)]
    capped = _capped(ui, figures.capped, figures.cap)
    if capped is not None:
        out.append(capped)
    out.append(ui._("Warnings: {count}").format(count=figures.warnings))
    return out


def summary_text(ui: Ui, summary: MonthlySummary) -> str:
    _ = ui._
    name = month_name(ui, summary.month)
    title = (_("📊 {month}, so far") if summary.current else _("📊 {month}")).format(
        month=name)
    blocks = [title]
    blocks += ["\n".join([line.line.label, *_figures(ui, line)]) for line in summary.lines]
    total = summary.total
    blocks.append("\n".join([_("All lines"), *_figures(ui, total),
                             _("Added to your wallet: {amount}").format(
                                 amount=ui.money(total.added))]))
    return "\n\n".join(blocks)


def summary_markup(ui: Ui, summary: MonthlySummary) -> InlineKeyboardMarkup:
    _ = ui._
    month = summary.month
    nav = []
    if not summary.earliest:
        nav.append(InlineKeyboardButton(
            f"‹ {month_name(ui, month.previous())}",
            callback_data=cb.encode(MONTH_KIND, month.previous().key)))
    if not summary.current:
        nav.append(InlineKeyboardButton(f"{month_name(ui, month.next())} ›",
                                        callback_data=cb.encode(MONTH_KIND, month.next().key)))
    rows = [nav] if nav else []
    rows.append([InlineKeyboardButton(
        _("🔕 Stop the summary on the 1st") if summary.push
        else _("🔔 Send me this on the 1st of each month"),
        callback_data=cb.encode(PUSH_KIND, "off" if summary.push else "on", month.key))])
    rows.append([InlineKeyboardButton(_("« History"),
                                      callback_data=cb.encode(PAGE_KIND, ALL, 0))])
    return InlineKeyboardMarkup(rows)


def render_monthly_summary(ui: Ui, notice: MonthlySummaryReady) -> Rendered:
    """Pushed on the 1st: the month's totals, and the way to each line's figures."""
    _ = ui._
    month = Month.parse(notice.month)
    shown = month_name(ui, month) if month is not None else notice.month
    lines = [_("📊 Your summary of {month}").format(month=shown),
             _spent(ui, notice.top_ups, notice.spent)]
    capped = _capped(ui, notice.capped, notice.cap)
    if capped is not None:
        lines.append(capped)
    lines += [_("Warnings: {count}").format(count=notice.warnings),
              _("Added to your wallet: {amount}").format(amount=ui.money(notice.added))]
    if month is None:
        return "\n".join(lines), None
    return "\n".join(lines), InlineKeyboardMarkup([
        [InlineKeyboardButton(_("📊 Each line"),
                              callback_data=cb.encode(MONTH_KIND, month.key))],
        [InlineKeyboardButton(_("🔕 Stop the summary on the 1st"),
                              callback_data=cb.encode(PUSH_KIND, "off", month.key))]])


# Not annotated: mypy checks the renderer against the notice type.
NOTICE_VIEWS = (NoticeView(MonthlySummaryReady, render_monthly_summary),)


# --- the flow -----------------------------------------------------------------------------


def _line_of(data: cb.Callback) -> tuple[bool, int | None]:
    """A button's scope: (valid, the line id or None for all lines); not valid when it is
    forged."""
    scope = data.arg("scope")
    if scope == ALL:
        return True, None
    if scope.isdigit() and len(scope) <= 18:
        return True, int(scope)
    return False, None


def _stale(ui: Ui) -> str:
    return ui._("That button is no longer active.")


class HistoryFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations,
                 history: HistoryService) -> None:
        super().__init__(users, i18n)
        self._history = history

    async def show(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        page = await self._history.page(user.id, None)
        assert page is not None  # all lines: always a page
        await self.reply(update, history_text(ui, page), reply_markup=history_markup(ui, page))

    async def on_page(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        valid, line_id = _line_of(pressed.data)
        number = pressed.int_arg("page")
        page = (await self._history.page(user.id, line_id, number)
                if valid and number is not None else None)
        if page is None:
            await query.answer(_stale(ui))
            return
        await query.answer()
        await edit_in_place(query, history_text(ui, page), history_markup(ui, page))

    async def on_export(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        chat = update.effective_chat
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        valid, line_id = _line_of(pressed.data)
        export = await self._history.export(user.id, line_id) if valid else None
        if export is None or chat is None:
            await query.answer(_stale(ui))
            return
        if not export.rows:
            await query.answer(_("Nothing to export yet."))
            return
        await query.answer()
        await context.bot.send_document(
            chat.id, InputFile(export.content, filename=export.filename),
            caption=_("Your history: {rows} rows, one per charge and per wallet movement. "
                      "Dates are in your time zone.").format(rows=export.rows))

    async def on_month(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        token = pressed.arg("month")
        month = None if token == THIS_MONTH else Month.parse(token)
        summary = (await self._history.month(user.id, month)
                   if month is not None or token == THIS_MONTH else None)
        if summary is None:
            await query.answer(_stale(ui))
            return
        await query.answer()
        await edit_in_place(query, summary_text(ui, summary), summary_markup(ui, summary))

    async def on_push(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        wanted, month = pressed.arg("on"), Month.parse(pressed.arg("month"))
        if wanted not in ("on", "off") or month is None:
            await query.answer(_stale(ui))
            return
        on = await self._history.set_push(user.id, wanted == "on")
        await query.answer(_("I will send you the summary on the 1st of each month.") if on
                           else _("No more summaries on the 1st."))
        summary = await self._history.month(user.id, month)
        if summary is not None:
            await edit_in_place(query, summary_text(ui, summary), summary_markup(ui, summary))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        return [CommandHandler("history", self.show)]

    def button_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """Answered ahead of any conversation in progress: reading history (or its CSV)
        while a wizard waits changes nothing of it."""
        return [CallbackQueryHandler(stopping(self.on_page), pattern=PAGE),
                CallbackQueryHandler(stopping(self.on_export), pattern=EXPORT),
                CallbackQueryHandler(stopping(self.on_month), pattern=MONTH),
                CallbackQueryHandler(stopping(self.on_push), pattern=PUSH)]
