"""How each kind of queued notification reads in the chat, in the user's language.

The outbox stores a kind and the plain params of its notice (bot.services.notices); the
dispatcher renders them when it sends, so a message follows the user's current language.
Each flow module lists its views in ``NOTICE_VIEWS``: a notice type with the renderer of it,
a pair mypy checks. handlers/outbox.py puts those lists together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from telegram import InlineKeyboardMarkup

from bot.services.notices import Notice
from handlers.common import Ui

Rendered = tuple[str, InlineKeyboardMarkup | None]
N = TypeVar("N", bound=Notice)


@dataclass(frozen=True)
class NoticeView(Generic[N]):
    """One notification kind as it reads: its notice type and the renderer of it."""

    notice: type[N]
    render: Callable[[Ui, N], Rendered]
    # The message it replaces is a photo: its caption is edited, not its text.
    edits_caption: bool = False

    @property
    def kind(self) -> str:
        return self.notice.KIND

    def render_params(self, ui: Ui, params: Mapping[str, Any]) -> Rendered:
        """The text and buttons of a queued notice; NoticeError when its params are not a
        notice of this kind."""
        return self.render(ui, self.notice.from_params(params))


# A QR code's content, and the caption and buttons under it.
RenderedQr = tuple[str, str, InlineKeyboardMarkup | None]


@dataclass(frozen=True)
class QrView(Generic[N]):
    """A notification sent as a QR code whose content the notice itself holds (a KHQR)."""

    notice: type[N]
    render: Callable[[Ui, N], RenderedQr]

    @property
    def kind(self) -> str:
        return self.notice.KIND


def views_by_kind(*views: Iterable[NoticeView[Any]]) -> dict[str, NoticeView[Any]]:
    """The views of several flows by kind; ValueError when two render one kind."""
    found: dict[str, NoticeView[Any]] = {}
    for view in (view for group in views for view in group):
        if view.kind in found:
            raise ValueError(f"notification kind {view.kind!r} has two views")
        found[view.kind] = view
    return found
