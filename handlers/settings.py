"""/settings and /language: language, time zone, quiet hours, low-balance warnings,
promotions (offers the admins broadcast: off until the user turns them on)."""

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

from bot.domain.money import MoneyError, parse_money
from bot.domain.quiet_hours import QuietHoursError, parse_quiet_hours
from bot.i18n import LANGUAGE_NAMES, SUPPORTED_LANGUAGES, Translations
from bot.services.lines import LinesService
from bot.services.promotions import PromotionsService
from bot.services.readings import ReadingsService
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

LANGUAGE = cb.register("lg", "code")
MENU = cb.register("st", "item")  # tz, quiet, warn, promo_on, promo_off
PROMOTIONS_ON, PROMOTIONS_OFF = "promo_on", "promo_off"  # menu items: what the tap sets
ZONE = cb.register("tz", "index")
WARN_LINE = cb.register("wl", "line")
ASK_ZONE, ASK_QUIET, ASK_WARNING = "settings:zone", "settings:quiet", "settings:warning"
WARN_DRAFT = "warn_line"  # user_data key: the line whose warning threshold is being set

COMMON_ZONES = ("Asia/Phnom_Penh", "Asia/Bangkok", "Asia/Ho_Chi_Minh", "Asia/Singapore",
                "Asia/Shanghai", "Asia/Seoul", "Asia/Tokyo", "Australia/Sydney", "Europe/London",
                "Europe/Paris", "America/New_York", "America/Los_Angeles", "UTC")
LANGUAGE_CODES = {"en": "en", "km": "km", "zh": "zh_Hans"}  # callback token -> language


def _language_buttons() -> InlineKeyboardMarkup:
    token_of = {language: token for token, language in LANGUAGE_CODES.items()}
    return InlineKeyboardMarkup([[InlineKeyboardButton(
        LANGUAGE_NAMES[language], callback_data=cb.encode("lg", token_of[language]))]
        for language in SUPPORTED_LANGUAGES])


class SettingsFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, lines: LinesService,
                 readings: ReadingsService, promotions: PromotionsService | None = None,
                 ) -> None:
        super().__init__(users, i18n)
        self._lines = lines
        self._readings = readings
        self._promotions = promotions

    async def language(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ui = await self.ui(update)
        await self.reply(update, ui._("Choose your language:"), reply_markup=_language_buttons())

    async def on_language(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query = pressed.query
        language = LANGUAGE_CODES.get(pressed.arg("code"))
        if language is None or not await self.users.set_language(pressed.user.id, language):
            await query.answer(pressed.ui._("That button is no longer active."))
            return
        await query.answer()
        ui = await self.ui(update)  # in the language just chosen
        await self.reply(update, ui._("Done. I will speak English with you.")
                         if language == "en" else ui._("Done. I will speak your language."))

    async def menu(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        assert user is not None
        ui = await self.ui(update)
        text, keyboard = await self._menu_view(ui, user.id)
        await self.reply(update, text, reply_markup=keyboard)

    async def _menu_view(self, ui: Ui, user_id: int) -> tuple[str, InlineKeyboardMarkup]:
        _ = ui._
        record = await self.users.settings_of(user_id)
        quiet = _("off")
        if record and record.quiet_start_minute is not None and record.quiet_end_minute is not None:
            quiet = (f"{record.quiet_start_minute // 60:02d}:{record.quiet_start_minute % 60:02d}"
                     f"–{record.quiet_end_minute // 60:02d}:{record.quiet_end_minute % 60:02d}")
        text = "\n".join([
            _("Your settings:"),
            _("Language: {language}").format(language=LANGUAGE_NAMES[ui.language]),
            _("Time zone: {zone}").format(zone=ui.zone.key),
            _("Quiet hours: {quiet}").format(quiet=quiet),
        ])
        rows = [
            [InlineKeyboardButton(_("🌐 Language"), callback_data=cb.encode("st", "lang")),
             InlineKeyboardButton(_("🕒 Time zone"), callback_data=cb.encode("st", "tz"))],
            [InlineKeyboardButton(_("🌙 Quiet hours"), callback_data=cb.encode("st", "quiet")),
             InlineKeyboardButton(_("⚠️ Low-balance warning"),
                                  callback_data=cb.encode("st", "warn"))],
        ]
        if self._promotions is not None:
            on = await self._promotions.opted_in(user_id)
            text += "\n" + (_("Promotions: on") if on else _("Promotions: off"))
            rows.append([InlineKeyboardButton(
                _("📣 Turn promotions off") if on else _("📣 Turn promotions on"),
                callback_data=cb.encode("st", PROMOTIONS_OFF if on else PROMOTIONS_ON))])
        return text, InlineKeyboardMarkup(rows)

    async def on_menu(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        query, user, ui = pressed.query, pressed.user, pressed.ui
        item = pressed.arg("item")
        if item in (PROMOTIONS_ON, PROMOTIONS_OFF):
            await self._promotions_tapped(pressed, on=item == PROMOTIONS_ON)
            return END
        await query.answer()
        _ = ui._
        if item == "lang":
            await self.reply(update, _("Choose your language:"),
                             reply_markup=_language_buttons())
            return END
        if item == "tz":
            rows = [[InlineKeyboardButton(zone, callback_data=cb.encode("tz", index))]
                    for index, zone in enumerate(COMMON_ZONES)]
            await self.reply(update, _("Choose your time zone, or type its name (like "
                                       "Asia/Phnom_Penh):"),
                             reply_markup=InlineKeyboardMarkup(rows))
            return ASK_ZONE
        if item == "quiet":
            await self.reply(update, _("Send the hours when I should not send warnings, like "
                                       "22-7 or 22:30-06:00, or \"off\"."))
            return ASK_QUIET
        if item == "warn":
            lines = await self._lines.for_user(user.id)
            if not lines:
                await self.reply(update, _("You have no lines yet. Send /bind to add one."))
                return END
            rows = [[InlineKeyboardButton(line.label, callback_data=cb.encode("wl", line.id))]
                    for line in lines]
            await self.reply(update, _("Which line?"), reply_markup=InlineKeyboardMarkup(rows))
            return ASK_WARNING
        return END

    async def _promotions_tapped(self, pressed: Pressed, *, on: bool) -> None:
        """Turns promotions on or off as the button says (so a second tap changes nothing)
        and shows the menu again, in place."""
        query, user_id, ui = pressed.query, pressed.user.id, pressed.ui
        _ = ui._
        if self._promotions is None:
            await query.answer(_("That button is no longer active."))
            return
        on = await self._promotions.set_opted_in(user_id, on)
        await query.answer(_("Promotions are on: now and then I will send you an offer. Turn "
                             "them off here any time.") if on
                           else _("Promotions are off: I will not send you offers."))
        text, keyboard = await self._menu_view(ui, user_id)
        await edit_in_place(query, text, keyboard)

    async def zone_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        index = pressed.int_arg("index")
        await pressed.query.answer()
        if index is None or index >= len(COMMON_ZONES):
            await self.reply(update, pressed.ui._("That button is no longer active."))
            return END
        return await self._set_zone(update, pressed.user.id, COMMON_ZONES[index])

    async def zone_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        text = (message.text or "").strip()
        if too_long(text) or ("/" not in text and text.upper() != "UTC"):
            await message.reply_text((await self.ui(update))._(
                "That is not a time zone name. Use one like Asia/Phnom_Penh, or /cancel."))
            return ASK_ZONE
        return await self._set_zone(update, user.id, text)

    async def _set_zone(self, update: Update, user_id: int, name: str) -> str | int:
        zone = await self.users.set_timezone(user_id, name)
        ui = await self.ui(update)
        if zone is None:
            await self.reply(update, ui._("That is not a time zone name. Use one like "
                                          "Asia/Phnom_Penh, or /cancel."))
            return ASK_ZONE
        await self.reply(update, ui._("Time zone set: {zone}. Times I show and schedules use it.")
                         .format(zone=zone.key))
        return END

    async def quiet_typed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        text = (message.text or "").strip()
        if text.lower() in {"off", _("off").lower()}:
            await self.users.set_quiet_hours(user.id, None)
            await message.reply_text(_("Quiet hours are off."))
            return END
        try:
            quiet = parse_quiet_hours("" if too_long(text) else text)
        except QuietHoursError:
            await message.reply_text(_("Send hours like 22-7 or 22:30-06:00, or \"off\"."))
            return ASK_QUIET
        await self.users.set_quiet_hours(user.id, quiet)
        await message.reply_text(_("Quiet hours: {hours} ({zone}). Warnings wait until they end, "
                                   "except when a line is about to run out.").format(
            hours=quiet.label(), zone=ui.zone.key))
        return END

    async def warn_line(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | int:
        pressed = await self.pressed(update)
        if pressed is None:
            return END
        ui = pressed.ui
        await pressed.query.answer()
        line_id = pressed.int_arg("line")
        line = await self._lines.own(pressed.user.id, line_id) if line_id is not None else None
        if line is None:
            await self.reply(update, ui._("That line is not yours or no longer bound."))
            return END
        if context.user_data is not None:
            context.user_data[WARN_DRAFT] = line.id
        await self.reply(update, ui._("Warn me when {line} falls below which balance? Send an "
                                      "amount like 1 or $0.50, or \"off\".").format(
            line=line.label))
        return ASK_WARNING

    async def warning_typed(self, update: Update,
                            context: ContextTypes.DEFAULT_TYPE) -> str | int:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        ui = await self.ui(update)
        _ = ui._
        line_id = context.user_data.get(WARN_DRAFT) if context.user_data is not None else None
        if not isinstance(line_id, int):
            await message.reply_text(_("Which line? Tap one of the buttons above, or /cancel."))
            return ASK_WARNING
        text = (message.text or "").strip()
        threshold = None
        if text.lower() not in {"off", _("off").lower()}:
            try:
                threshold = parse_money("" if too_long(text) else text, "USD")
            except MoneyError:
                await message.reply_text(_("Send an amount like 1 or $0.50, or \"off\"."))
                return ASK_WARNING
            if threshold.currency != "USD":
                await message.reply_text(_("Line balances are in US dollars: send an amount "
                                           "like 1 or $0.50."))
                return ASK_WARNING
        stored = await self._readings.set_warning_thresholds(user.id, line_id, threshold, None)
        if context.user_data is not None:
            context.user_data.pop(WARN_DRAFT, None)
        if not stored:
            await message.reply_text(_("That line is not yours or no longer bound."))
        elif threshold is None:
            await message.reply_text(_("Low-balance warnings are off for that line."))
        else:
            await message.reply_text(_("I will warn you when the balance falls below {amount}.")
                                     .format(amount=ui.money(threshold)))
        return END

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        text = filters.TEXT & ~filters.COMMAND
        menu: BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any] = CallbackQueryHandler(
            self.on_menu, pattern=MENU)
        conversation = ConversationHandler(
            name="settings", persistent=True,
            entry_points=[menu],
            states={
                # Another menu item tapped while one waits for input switches to it.
                ASK_ZONE: [CallbackQueryHandler(self.zone_button, pattern=ZONE), menu,
                           MessageHandler(text, self.zone_typed)],
                ASK_QUIET: [menu, MessageHandler(text, self.quiet_typed)],
                ASK_WARNING: [CallbackQueryHandler(self.warn_line, pattern=WARN_LINE), menu,
                              MessageHandler(text, self.warning_typed)],
                ConversationHandler.TIMEOUT: [MessageHandler(filters.ALL, self.timed_out),
                                              CallbackQueryHandler(self.timed_out)],
            },
            fallbacks=[CommandHandler("cancel", self.cancel),
                       MessageHandler(filters.COMMAND, self.busy)],
            conversation_timeout=CONVERSATION_TIMEOUT_SECONDS,
        )
        return [CommandHandler("settings", self.menu), CommandHandler("language", self.language),
                CallbackQueryHandler(self.on_language, pattern=LANGUAGE), conversation]
