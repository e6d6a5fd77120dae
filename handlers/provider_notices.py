"""Admin notices about the top-up provider: our float there ran low, or is back."""

from __future__ import annotations

from typing import Any

from bot.domain.money import Money
from bot.services.provider_float import FLOAT_LOW, FLOAT_RESTORED
from handlers.common import Ui
from handlers.notification_views import Rendered, renders


def _money(params: dict[str, Any], key: str) -> Money | None:
    value, currency = params.get(key), params.get("currency")
    return Money(value, currency) if isinstance(value, int) and isinstance(currency, str) \
        else None


@renders(FLOAT_LOW)
def render_float_low(ui: Ui, params: dict[str, Any]) -> Rendered:
    balance, threshold = _money(params, "balance_minor"), _money(params, "threshold_minor")
    return ui._("⚠️ Our balance at {provider} is {balance}, below the alert level of "
                "{threshold}. Top-ups will start failing when it runs out: add funds to "
                "the {provider} account.").format(
        provider=params.get("backend", "?"),
        balance=ui.money(balance) if balance else "?",
        threshold=ui.money(threshold) if threshold else "?"), None


@renders(FLOAT_RESTORED)
def render_float_restored(ui: Ui, params: dict[str, Any]) -> Rendered:
    balance, lowest = _money(params, "balance_minor"), _money(params, "lowest_minor")
    return ui._("✅ Our balance at {provider} is back at {balance} (it went down to "
                "{lowest}).").format(
        provider=params.get("backend", "?"), balance=ui.money(balance) if balance else "?",
        lowest=ui.money(lowest) if lowest else "?"), None
