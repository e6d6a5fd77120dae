"""The provider commands: `topup-bot providers check` (are the chosen top-up and eSIM
providers usable with these settings? It gets a token - the first call does -, reads our
balance at each provider, the Cambodian operators' catalogs and the eSIMs for sale, asks
Bakong one KHQR look-up when KHQR is on, and prints them; any failure is named, and the
command exits 1) and how `topup-bot reconcile`
prints a day's differences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.gateways.topup import GatewayError, ProviderAccount
from bot.services.reconciliation import ReconciliationReport

if TYPE_CHECKING:
    from bot.wiring import Components

SHOWN_PRODUCTS = 6


class ProviderCheckFailed(Exception):
    """What failed, in one line."""


async def providers_check(components: Components) -> list[str]:
    """The lines to print; ProviderCheckFailed naming the step that failed."""
    backend = components.settings.gateways.carrier_backend
    provider = components.provider
    lines = [f"Provider: {backend}"]
    if isinstance(provider, ProviderAccount) and backend != "simulated":
        try:
            balance = await provider.balance()
        except GatewayError as exc:
            raise ProviderCheckFailed(f"{backend}: reading the balance failed: {exc}") from exc
        alert = components.settings.providers.float_alert
        low = (" - below PROVIDER_FLOAT_ALERT " + alert.plain()
               if balance.currency == alert.currency and balance < alert else "")
        lines.append(f"Balance: {balance.plain()}{low}")
    else:
        lines.append("Balance: none to read (the simulated carrier needs no float)")
    for operator in Operator:
        try:
            products = await provider.catalog(operator)
        except GatewayError as exc:
            raise ProviderCheckFailed(
                f"{backend}: reading the {operator.display_name} catalog failed: {exc}") from exc
        shown = ", ".join(f"{p.name} ({p.price.plain()})" for p in products[:SHOWN_PRODUCTS])
        more = f" and {len(products) - SHOWN_PRODUCTS} more" \
            if len(products) > SHOWN_PRODUCTS else ""
        lines.append(f"{operator.display_name}: {len(products)} products"
                     + (f": {shown}{more}" if products else ""))
    return lines + await _esim_check(components) + await _khqr_check(components)


# An MD5 no KHQR has: asking for it proves the token and the route without paying anything.
_NOBODYS_MD5 = "0" * 32


async def _khqr_check(components: Components) -> list[str]:
    """Bakong accepts our token from this host: a look-up that finds nothing is the proof."""
    checks = components.khqr_checks
    if checks is None:
        return ["KHQR: off (BAKONG_ACCOUNT_ID is not set)"]
    bakong = components.settings.bakong
    try:
        await checks.transaction(_NOBODYS_MD5)
    except GatewayError as exc:
        raise ProviderCheckFailed(f"Bakong ({bakong.api_root}): {exc}") from exc
    return [f"KHQR: on, paid to {bakong.account_id} ({bakong.merchant_name}, "
            f"{bakong.merchant_city}), QRs in {bakong.currency}; Bakong at "
            f"{bakong.api_root} accepts the token"]


async def _esim_check(components: Components) -> list[str]:
    backend = components.settings.gateways.esim_backend
    provider = components.esim_provider
    try:
        # The simulated provider keeps its credit in the database: nothing to ask.
        credit = (await provider.balance()).plain() if backend != "simulated" \
            else "none to read (the simulated eSIM provider)"
        packages = await provider.packages()
    except GatewayError as exc:
        raise ProviderCheckFailed(f"{backend} (eSIM): {exc}") from exc
    shown = ", ".join(f"{p.coverage} {p.title} ({p.price.plain()})"
                      for p in packages[:SHOWN_PRODUCTS])
    more = f" and {len(packages) - SHOWN_PRODUCTS} more" \
        if len(packages) > SHOWN_PRODUCTS else ""
    return [f"eSIM provider: {backend}", f"eSIM credit: {credit}",
            f"eSIMs for Cambodia: {len(packages)}" + (f": {shown}{more}" if packages else "")]


def format_reconciliation(report: ReconciliationReport) -> list[str]:
    lines = [f"Reconciled {report.backend} for {report.day}: {report.ours} charges of ours "
             f"succeeded, {report.theirs} transactions at the provider, "
             f"{len(report.differences)} differences."]
    for d in report.differences:
        ours = (Money(d.our_amount_minor, d.currency).plain()
                if d.our_amount_minor is not None and d.currency else "-")
        theirs = (Money(d.their_amount_minor, d.currency).plain()
                  if d.their_amount_minor is not None and d.currency else "-")
        lines.append(f"  {d.kind:<20} {d.reference}  charge {d.charge_id or '-'}: "
                     f"ours {d.our_state or '-'} {ours}, theirs {d.their_status or '-'} "
                     f"{theirs}")
    return lines
