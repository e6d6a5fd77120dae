"""/lines: each line with operator, plan and latest reading; rename, unbind, choose a plan."""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.domain.products import Product
from bot.i18n import Translations
from bot.services.lines import MAX_NICKNAME_CHARS, LineCard, LinesService
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.approvals import PlanOffer, top_up_now_buttons
from handlers.autorecharge import rules_button
from handlers.balance import REPORT_KIND
from handlers.charts import chart_button
from handlers.common import CONVERSATION_TIMEOUT_SECONDS, END, Flow, Ui, edit_in_place, too_long
from handlers.esim import install_again_button
from handlers.history import history_button
from handlers.render import plan_label, reading_text

LINE = cb.register("ln", "line", "action")  # show, ren, unb, unbok; list (line 0)
PLANS = cb.register("pl", "line", "page")
PICK_PLAN = cb.register("pc", "line", "plan")
ASK_NAME = "lines:name"
RENAMING = "rename_line"  # user_data key: id of the line being renamed
PLANS_PER_PAGE = 5


class LinesFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService) -> None:
        super().__init__(users, i18n)
        self._lines = lines

    async def show_lines(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        _ = ui._
        text, markup = await self._list(ui, user.id)
        await self.reply(update, text, reply_markup=markup)

    async def _list(self, ui: Ui, user_id: int) -> tuple[str, InlineKeyboardMarkup | None]:
        """The user's lines, each a button to its card (or how to add one)."""
        _ = ui._
        lines = await self._lines.for_user(user_id)
        if not lines:
            return _("You have no lines yet. Send /bind to add one."), None
        buttons = [[InlineKeyboardButton(
            f"{line.label} · {line.operator.display_name}",
            callback_data=cb.encode("ln", line.id, "show"))] for line in lines]
        return (_("Your lines. Tap one to see it and change it:"),
                InlineKeyboardMarkup(buttons))

    async def on_line(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        line_id, action = pressed.int_arg("line"), pressed.arg("action")
        if action == "list":  # the card's way back to the list
            await query.answer()
            text, markup = await self._list(ui, user.id)
            await self._edit(query, text, markup)
            return END
        if action not in ("ren", "unb", "unbok"):  # show the card: one read checks and fetches
            found = await self._lines.card(user.id, line_id) if line_id else None
            if found is None:
                await query.answer(_("That line is not yours or no longer bound."),
                                   show_alert=True)
                return END
            await query.answer()
            await self._edit(query, self._card(ui, found),
                             self._card_buttons(ui, found.line.id, found.plan,
                                                esim=found.line.is_esim))
            return END
        line = await self._lines.own(user.id, line_id) if line_id is not None else None
        if line is None:
            await query.answer(_("That line is not yours or no longer bound."), show_alert=True)
            return END
        if action == "ren":
            await query.answer()
            if context.user_data is not None:
                context.user_data[RENAMING] = line.id
            await self.reply(update, _("Send the new name for {line} (up to {limit} "
                                       "characters).").format(line=line.label,
                                                              limit=MAX_NICKNAME_CHARS))
            return ASK_NAME
        if action == "unb":
            await query.answer()
            keyboard = InlineKeyboardMarkup([[
                InlineKeyboardButton(_("Yes, unbind"),
                                     callback_data=cb.encode("ln", line.id, "unbok")),
                InlineKeyboardButton(_("No, keep it"),
                                     callback_data=cb.encode("ln", line.id, "show"))]])
            await self._edit(query, _("Unbind {line}? Its auto-recharge rules stop, and I will "
                                      "no longer watch its balance.").format(line=line.label),
                             keyboard)
            return END
        # "unbok": the unbinding confirmed
        unbound = await self._lines.unbind(user.id, line.id)
        await query.answer()
        await self._edit(query, _("{line} is unbound. Its auto-recharge is off.").format(
            line=(unbound or line).label), None)
        return END

    def _card(self, ui: Ui, found: LineCard) -> str:
        _ = ui._
        line, plan, latest = found.line, found.plan, found.reading
        age = ui.age(latest.read_at) if latest is not None else ""
        what = line.number.national if line.number is not None else _("eSIM")
        lines = [f"{line.label} · {what} · {line.operator.display_name}",
                 _("Plan: {plan}").format(plan=plan_label(ui, plan) if plan else _("none chosen")),
                 reading_text(ui, latest, age, found.read_by)]
        return "\n".join(lines)

    def _card_buttons(self, ui: Ui, line_id: int, plan: Product | None, *,
                      esim: bool) -> InlineKeyboardMarkup:
        _ = ui._
        choose = InlineKeyboardButton(_("📋 Choose plan"),
                                      callback_data=cb.encode("pl", line_id, 0))
        # An eSIM is read from its provider (nothing to report) and takes only its own
        # top-ups; while it is not installed its code can be shown again.
        middle = ([[choose], [install_again_button(ui, line_id)]] if esim
                  else [[choose, InlineKeyboardButton(
                      _("💬 Report balance"), callback_data=cb.encode(REPORT_KIND, line_id))]])
        return InlineKeyboardMarkup([
            *top_up_now_buttons(ui, line_id, PlanOffer.of(plan), airtime=not esim),
            *middle,
            [rules_button(ui, line_id)],
            [chart_button(ui, line_id), history_button(ui, line_id)],
            [InlineKeyboardButton(_("✏️ Rename"), callback_data=cb.encode("ln", line_id, "ren")),
             InlineKeyboardButton(_("🗑 Unbind"), callback_data=cb.encode("ln", line_id, "unb"))],
            [InlineKeyboardButton(_("« All lines"), callback_data=cb.encode("ln", 0, "list"))],
        ])

    async def _edit(self, query: Any, text: str, markup: InlineKeyboardMarkup | None) -> None:
        await edit_in_place(query, text, markup)

    async def rename(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        line_id = context.user_data.get(RENAMING) if context.user_data is not None else None
        name = (message.text or "").strip()
        if not name or too_long(name) or len(name) > MAX_NICKNAME_CHARS:
            await message.reply_text(_("A name is 1 to {limit} characters. Try again, or "
                                       "/cancel.").format(limit=MAX_NICKNAME_CHARS))
            return ASK_NAME
        renamed = (await self._lines.rename(user.id, line_id, name)
                   if isinstance(line_id, int) else None)
        if context.user_data is not None:
            context.user_data.pop(RENAMING, None)
        if renamed is None:
            await message.reply_text(_("That line is not yours or no longer bound."))
            return END
        await message.reply_text(_("Renamed: {line}.").format(line=renamed.label))
        return END

    async def plans(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, user, ui = pressed.query, pressed.user, pressed.ui
        _ = ui._
        line_id, page = pressed.int_arg("line"), pressed.int_arg("page") or 0
        found = await self._lines.catalog(user.id, line_id) if line_id is not None else None
        if found is None:
            await query.answer(_("That line is not yours or no longer bound."), show_alert=True)
            return
        await query.answer()
        line, products = found
        pages = max(1, -(-len(products) // PLANS_PER_PAGE))
        page = min(page, pages - 1)
        shown = products[page * PLANS_PER_PAGE:(page + 1) * PLANS_PER_PAGE]
        rows = [[InlineKeyboardButton(plan_label(ui, p),
                                      callback_data=cb.encode("pc", line.id, p.id))]
                for p in shown]
        nav = []
        if page > 0:
            nav.append(InlineKeyboardButton("‹", callback_data=cb.encode("pl", line.id, page - 1)))
        if page < pages - 1:
            nav.append(InlineKeyboardButton("›", callback_data=cb.encode("pl", line.id, page + 1)))
        if nav:
            rows.append(nav)
        rows.append([InlineKeyboardButton(_("« Back"),
                                          callback_data=cb.encode("ln", line.id, "show"))])
        await self._edit(query, _("{operator} plans for {line} (page {page} of {pages}):").format(
            operator=line.operator.display_name, line=line.label, page=page + 1,
            pages=pages), InlineKeyboardMarkup(rows))

    async def pick_plan(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        line_id = pressed.int_arg("line")
        chosen = (await self._lines.choose_plan(pressed.user.id, line_id, pressed.arg("plan"))
                  if line_id is not None else None)
        if chosen is None or chosen.plan is None:
            await query.answer(_("That plan or line is not available."), show_alert=True)
            return
        await query.answer(_("Plan saved."))
        await self._edit(query, _("{line} plan: {plan}.").format(
            line=chosen.line.label, plan=plan_label(ui, chosen.plan)),
            self._card_buttons(ui, chosen.line.id, chosen.plan,
                                                esim=chosen.line.is_esim))

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        rename = ConversationHandler(
            name="rename_line", persistent=True,
            entry_points=[CallbackQueryHandler(self.on_line, pattern=LINE)],
            states={
                # A button on any line's card mid-rename acts on that line.
                ASK_NAME: [CallbackQueryHandler(self.on_line, pattern=LINE),
                           MessageHandler(filters.TEXT & ~filters.COMMAND, self.rename)],
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )
        return [CommandHandler("lines", self.show_lines), rename,
                CallbackQueryHandler(self.plans, pattern=PLANS),
                CallbackQueryHandler(self.pick_plan, pattern=PICK_PLAN)]
