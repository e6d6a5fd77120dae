"""Admin notices about the top-up provider: our float there ran low, or is back."""

from __future__ import annotations

from bot.services.provider_float import FloatLow, FloatRestored
from handlers.common import Ui
from handlers.notification_views import NoticeView, Rendered


def render_float_low(ui: Ui, notice: FloatLow) -> Rendered:
    return ui._("⚠️ Our balance at {provider} is {balance}, below the alert level of "
                "{threshold}. Top-ups will start failing when it runs out: add funds to "
                "the {provider} account.").format(
        provider=notice.backend, balance=ui.money(notice.balance),
        threshold=ui.money(notice.threshold)), None


def render_float_restored(ui: Ui, notice: FloatRestored) -> Rendered:
    return ui._("✅ Our balance at {provider} is back at {balance} (it went down to "
                "{lowest}).").format(
        provider=notice.backend, balance=ui.money(notice.balance),
        lowest=ui.money(notice.lowest)), None


# Not annotated: mypy infers each pair's notice type and checks its renderer against it
# (NoticeView[Any] would let any renderer pass).
NOTICE_VIEWS = (
    NoticeView(FloatLow, render_float_low),
    NoticeView(FloatRestored, render_float_restored),
)
