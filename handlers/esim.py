"""/esim: buy a Cambodian eSIM from the wallet and get its QR code in the chat; and the
install code again (from /lines) for an eSIM not installed yet.

The shop lists the eSIMs for sale (a page at a time); a package's card shows its price and
the wallet; Confirm buys it (its button carries a nonce: two taps buy one eSIM). The QR code
arrives through the outbox when the order succeeds (``EsimReady``), read fresh from the
eSIM provider: no activation code is stored anywhere.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from bot.domain.products import Product
from bot.i18n import Translations
from bot.services.charging import CannotAfford, EsimOrdered, EsimReady
from bot.services.esims import (
    AlreadyInstalled,
    EsimService,
    Installable,
    InstallCard,
    NotAnEsimOfYours,
    package_token,
)
from bot.services.users import UsersService
from handlers import callback_data as cb
from handlers.common import Flow, Ui, edit_in_place, stopping
from handlers.notification_views import Rendered
from handlers.qr import qr_png
from handlers.render import data_text

log = logging.getLogger(__name__)

SHOP_KIND, OFFER_KIND, BUY_KIND, INSTALL_KIND = "esl", "eso", "esb", "esq"
SHOP = cb.register(SHOP_KIND, "page")
OFFER = cb.register(OFFER_KIND, "package")
BUY = cb.register(BUY_KIND, "package", "nonce")
INSTALL_AGAIN = cb.register(INSTALL_KIND, "line")
PER_PAGE = 5
ORDER_TASK = "esim-order:"  # names the background task that sends an eSIM order


def shop_button(ui: Ui) -> InlineKeyboardButton:
    """The way into the shop, for other flows (/start, /lines) to show."""
    return InlineKeyboardButton(ui._("🌐 Buy a Cambodian eSIM"),
                                callback_data=cb.encode(SHOP_KIND, 0))


def install_again_button(ui: Ui, line_id: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(ui._("📲 Show install code again"),
                                callback_data=cb.encode(INSTALL_KIND, line_id))


def package_text(ui: Ui, product: Product) -> str:
    """"1 GB · 7 days · $5.00" (and where it works, when not only in Cambodia)."""
    _ = ui._
    data = _("Unlimited") if product.data_mb is None else data_text(product.data_mb)
    parts = [data, ui.ngettext("{days} day", "{days} days", product.validity_days).format(
        days=product.validity_days),
             ui.money(product.price)]
    if product.coverage and product.coverage != "Cambodia":
        parts.append(product.coverage)
    return " · ".join(parts)


# --- the message that delivers an eSIM ------------------------------------------------------

def install_caption(ui: Ui, card: InstallCard, *, headline: str) -> Rendered:
    """The QR code's caption (HTML): the manual codes as tap-to-copy text, short install
    steps for iPhone and Android, and the warning that the code installs once."""
    _ = ui._
    code = html.escape
    smdp_label, code_label = _("SM-DP+ address:"), _("Activation code:")
    parts = [
        code(headline),
        "",
        code(_("Scan this QR code from your phone's settings to install the eSIM. It "
               "installs once: do not delete this message until it is installed.")),
        "",
        code(_("Or enter it by hand:")),
        f"{code(smdp_label)} <code>{code(card.smdp_address)}</code>",
        f"{code(code_label)} <code>{code(card.matching_id)}</code>",
        "",
        code(_("iPhone: Settings → Mobile Service → Add eSIM → Use QR Code.")),
        code(_("Android: Settings → Network & internet → SIMs → Add eSIM (or \"Download a "
               "SIM\") → scan the code.")),
        code(_("Then turn on data roaming for this eSIM and choose it for mobile data.")),
    ]
    markup = None
    if card.apple_install_url:
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(
            _("Install on iPhone (iOS 17.4 or later)"), url=card.apple_install_url)]])
    return "\n".join(parts), markup


def render_esim_ready(ui: Ui, notice: EsimReady, card: InstallCard) -> Rendered:
    _ = ui._
    what = notice.charge.product_name or _("your eSIM")
    headline = _("✅ Your eSIM is ready: {what} ({amount}). Wallet: {wallet}.").format(
        what=what, amount=ui.money(notice.charge.amount), wallet=ui.money(notice.wallet))
    return install_caption(ui, card, headline=headline)


@dataclass(frozen=True)
class InstallCodeView:
    """A notification sent as a QR code: it needs the eSIM's install code, read when it is
    sent (the deliverer asks the eSIM service for the line's)."""

    notice: type[EsimReady]
    render: Callable[[Ui, EsimReady, InstallCard], Rendered]

    @property
    def kind(self) -> str:
        return self.notice.KIND


PHOTO_VIEWS = (InstallCodeView(EsimReady, render_esim_ready),)


# --- the shop ---------------------------------------------------------------------------

class EsimFlow(Flow):
    def __init__(self, users: UsersService, i18n: Translations, esims: EsimService) -> None:
        super().__init__(users, i18n)
        self._esims = esims

    async def shop(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/esim, or a page of the shop."""
        query, page = update.callback_query, 0
        if query is None:
            ui = await self.ui(update)
        else:
            pressed = await self.pressed(update)
            if pressed is None:
                return
            ui, page = pressed.ui, pressed.int_arg("page") or 0
        _ = ui._
        products = await self._esims.shop()
        if query is not None:
            await query.answer()
        if not products:
            await self._show(update, _("No eSIMs can be bought at the moment. Please try "
                                       "again later."), None)
            return
        last = (len(products) - 1) // PER_PAGE
        page = min(max(page, 0), last)
        rows = [[InlineKeyboardButton(package_text(ui, p),
                                      callback_data=cb.encode(OFFER_KIND, package_token(p.id)))]
                for p in products[page * PER_PAGE:(page + 1) * PER_PAGE]]
        nav = []
        if page > 0:
            nav.append(InlineKeyboardButton("◀", callback_data=cb.encode(SHOP_KIND, page - 1)))
        if page < last:
            nav.append(InlineKeyboardButton("▶", callback_data=cb.encode(SHOP_KIND, page + 1)))
        if nav:
            rows.append(nav)
        text = _("🌐 eSIMs for Cambodia, paid from your wallet; the QR code comes here. "
                 "Tap one to see it (page {page} of {pages}):").format(page=page + 1,
                                                                      pages=last + 1)
        await self._show(update, text, InlineKeyboardMarkup(rows))

    async def offer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        offer = await self._esims.offer(pressed.user.id, pressed.arg("package"))
        if offer is None:
            await query.answer(_("That eSIM is no longer sold."), show_alert=True)
            return
        await query.answer()
        product = offer.product
        lines = [package_text(ui, product),
                 _("Data: {data}").format(data=_("unlimited") if product.data_mb is None
                                          else data_text(product.data_mb)),
                 ui.ngettext("Valid for {days} day from when it is installed.",
                             "Valid for {days} days from when it is installed.",
                             product.validity_days).format(days=product.validity_days),
                 _("Works in: {where}").format(where=product.coverage or "Cambodia"),
                 _("Network in Cambodia: {network}").format(
                     network=product.operator.display_name),
                 _("Price: {price}").format(price=ui.money(product.price)),
                 _("Your wallet: {wallet}").format(wallet=ui.money(offer.wallet))]
        rows: list[list[InlineKeyboardButton]] = []
        if offer.short is not None:
            lines.append(_("That is {short} short: add money with /wallet, then come back.")
                         .format(short=ui.money(offer.short)))
        else:
            lines.append(_("It needs a phone that takes eSIMs and is not carrier-locked."))
            rows.append([InlineKeyboardButton(
                _("✅ Buy for {price}").format(price=ui.money(product.price)),
                callback_data=cb.encode(BUY_KIND, package_token(product.id), offer.nonce))])
        rows.append([InlineKeyboardButton(_("◀ Back to the list"),
                                          callback_data=cb.encode(SHOP_KIND, 0))])
        await self._show(update, "\n".join(lines), InlineKeyboardMarkup(rows))

    async def buy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        result = await self._esims.buy(pressed.user.id, pressed.arg("package"),
                                       pressed.arg("nonce"))
        if isinstance(result, CannotAfford):
            await query.answer(_("Your wallet has {wallet}; this eSIM costs {price}. Add "
                                 "money with /wallet.").format(
                wallet=ui.money(result.available), price=ui.money(result.price)),
                show_alert=True)
            return
        if not isinstance(result, EsimOrdered):
            await query.answer(_("That eSIM is no longer sold."), show_alert=True)
            return
        if not result.created:
            await query.answer(_("This purchase is already on its way."))
            return
        await query.answer()
        await self._show(update, _("⏳ Buying your eSIM ({amount})... Its QR code will "
                                   "arrive here in a moment.").format(
            amount=ui.money(result.charge.amount)), None)
        # The tap is answered; the order goes out in the background. Should the process
        # die first, the approved charge is in the database and the charges sweep sends it.
        charge_id = result.charge.id
        context.application.create_task(self._send(charge_id), name=f"{ORDER_TASK}{charge_id}")

    async def _send(self, charge_id: int) -> None:
        try:
            await self._esims.send_order(charge_id)
        except Exception:
            log.exception("eSIM purchase %s is approved; sending its order failed and is "
                          "left to the charges sweep", charge_id)

    async def install_again(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """"Show install code again" on an eSIM's card: only while it is not installed."""
        pressed = await self.pressed(update)
        if pressed is None:
            return
        query, ui = pressed.query, pressed.ui
        _ = ui._
        line_id = pressed.int_arg("line")
        result = (await self._esims.install_code(pressed.user.id, line_id)
                  if line_id is not None else NotAnEsimOfYours())
        if isinstance(result, NotAnEsimOfYours):
            await query.answer(_("That line is not yours or no longer bound."),
                               show_alert=True)
            return
        if isinstance(result, AlreadyInstalled):
            await query.answer(_("This eSIM is already installed: its code cannot be used "
                                 "again."), show_alert=True)
            return
        if not isinstance(result, Installable):
            await query.answer(_("I could not reach the eSIM provider. Please try again in "
                                 "a minute."), show_alert=True)
            return
        await query.answer()
        caption, markup = install_caption(ui, result.card, headline=_(
            "The install code of {line} again:").format(line=result.label))
        assert update.effective_chat is not None
        await context.bot.send_photo(update.effective_chat.id,
                                     qr_png(result.card.activation_code), caption=caption,
                                     parse_mode="HTML", reply_markup=markup)

    async def _show(self, update: Update, text: str,
                    markup: InlineKeyboardMarkup | None) -> None:
        """Edits the button's message, or answers a command with a new one."""
        query = update.callback_query
        if query is None:
            await self.reply(update, text, reply_markup=markup)
            return
        await edit_in_place(query, text, markup)

    def handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        return [CommandHandler("esim", self.shop)]

    def button_handlers(self) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, Any]]:
        """The shop's buttons: answered ahead of any conversation in progress (a purchase
        is money, like an approval)."""
        return [CallbackQueryHandler(stopping(self.shop), pattern=SHOP),
                CallbackQueryHandler(stopping(self.offer), pattern=OFFER),
                CallbackQueryHandler(stopping(self.buy), pattern=BUY),
                CallbackQueryHandler(stopping(self.install_again), pattern=INSTALL_AGAIN)]
