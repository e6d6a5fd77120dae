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


def source_text(ui: Ui, source: ReadingSource, read_by: str | None = None) -> str:
    """Where a reading came from: "read from the carrier", "reported by you"; ``read_by``
    names the provider that read it (an eSIM's: "read from Airalo")."""
    _ = ui._
    return {
        ReadingSource.PROVIDER: (_("read from {provider}").format(provider=read_by)
                                 if read_by else _("read from the carrier")),
        ReadingSource.USER: _("reported by you"),
        ReadingSource.ESTIMATE: _("estimated from the last top-up"),
    }[source]


def origin_text(ui: Ui, source: ReadingSource, age: str, read_by: str | None = None) -> str:
    """Where a reading came from and how old it is, as warnings, line cards, approval
    requests and receipts all say it: "(read from the carrier, 3 minutes ago)"."""
    return ui._("({source}, {age})").format(source=source_text(ui, source, read_by), age=age)


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
    parts = []
    if reading.balance is not None:
        parts.append(_("Balance: {amount}").format(amount=ui.money(reading.balance)))
    if reading.data_mb is not None:
        parts.append(_("Data left: {data}").format(data=data_text(reading.data_mb)))
    if reading.validity_end is not None:
        parts.append(_("Valid until: {date}").format(date=ui.when(reading.validity_end)))
    parts.append(origin_text(ui, reading.source, now_label, read_by))
    return "\n".join(parts)


def trigger_text(ui: Ui, reading: LineReading, read_by: str | None = None) -> str | None:
    """Which reading made a rule charge, for its approval request and its receipt: the
    figure it fired on and where that came from, as the warnings say it ("Why now: balance
    $0.50 (read from the carrier, 3 minutes ago)."). None for a reading without a figure."""
    _ = ui._
    origin = origin_text(ui, reading.source, ui.age(reading.read_at), read_by)
    if reading.balance is not None:
        return _("Why now: balance {amount} {origin}.").format(
            amount=ui.money(reading.balance), origin=origin)
    if reading.data_mb is not None:
        return _("Why now: {data} of data left {origin}.").format(
            data=data_text(reading.data_mb), origin=origin)
    if reading.validity_end is not None:
        return _("Why now: valid until {date} {origin}.").format(
            date=ui.when(reading.validity_end), origin=origin)
    return None


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
