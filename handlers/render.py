"""How lines, plans and readings read in the chat (shared by several flows)."""

from __future__ import annotations

from datetime import datetime

from bot.domain.products import Product, ProductKind
from bot.domain.readings import LineReading, ReadingSource
from handlers.common import Ui


def data_text(megabytes: int) -> str:
    return f"{megabytes / 1024:.1f} GB" if megabytes >= 1024 else f"{megabytes} MB"


def plan_label(ui: Ui, product: Product) -> str:
    _ = ui._
    if product.kind is ProductKind.DATA and product.data_mb:
        what = _("{data} data").format(data=data_text(product.data_mb))
    else:
        what = _("{amount} airtime").format(amount=ui.money(product.airtime or product.price))
    return ui.ngettext("{what}, {days} day: {price}", "{what}, {days} days: {price}",
                       product.validity_days).format(what=what, days=product.validity_days,
                                                     price=ui.money(product.price))


def reading_text(ui: Ui, reading: LineReading | None, now_label: str,
                 read_by: str | None = None) -> str:
    """A reading and where it came from; ``read_by`` names the provider that read it (an
    eSIM's: "read from Airalo")."""
    _ = ui._
    if reading is None and read_by:  # an eSIM: nothing to report, its provider is asked
        return _("Not read from {provider} yet.").format(provider=read_by)
    if reading is None:
        return _("No balance known yet: report it with the button below, or forward the "
                 "carrier's balance SMS to me.")
    source = {
        ReadingSource.PROVIDER: (_("read from {provider}").format(provider=read_by)
                                 if read_by else _("read from the carrier")),
        ReadingSource.USER: _("reported by you"),
        ReadingSource.ESTIMATE: _("estimated from the last top-up"),
    }[reading.source]
    parts = []
    if reading.balance is not None:
        parts.append(_("Balance: {amount}").format(amount=ui.money(reading.balance)))
    if reading.data_mb is not None:
        parts.append(_("Data left: {data}").format(data=data_text(reading.data_mb)))
    if reading.validity_end is not None:
        parts.append(_("Valid until: {date}").format(date=ui.when(reading.validity_end)))
    parts.append(_("({source}, {age})").format(source=source, age=now_label))
    return "\n".join(parts)


def cooldown_text(ui: Ui, retry_at: datetime) -> str:
    """A new SMS code asked for too soon: when one can be sent, as "in 40 seconds" while
    that is within the hour."""
    _ = ui._
    wait = ui.soon(retry_at)
    if wait is not None:
        return _("A code was sent moments ago. Type it, or ask for a new one in "
                 "{wait}.").format(wait=wait)
    return _("A code was sent moments ago. Type it, or ask for a new one after "
             "{time}.").format(time=ui.when(retry_at))
