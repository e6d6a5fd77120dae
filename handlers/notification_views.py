"""How each kind of queued notification reads in the chat, in the user's language.

The outbox stores a kind and plain parameters; the dispatcher renders them when it sends,
so a message follows the user's current language. Flows register their kinds here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telegram import InlineKeyboardMarkup

from handlers.common import Ui

Rendered = tuple[str, InlineKeyboardMarkup | None]
Renderer = Callable[[Ui, dict[str, Any]], Rendered]

RENDERERS: dict[str, Renderer] = {}


def renders(kind: str) -> Callable[[Renderer], Renderer]:
    """Registers the renderer of one notification kind (once per kind)."""
    def register(renderer: Renderer) -> Renderer:
        if RENDERERS.get(kind, renderer) is not renderer:
            raise ValueError(f"notification kind {kind!r} already has a renderer")
        RENDERERS[kind] = renderer
        return renderer

    return register


def render(kind: str, ui: Ui, params: dict[str, Any]) -> Rendered:
    """The text and buttons of a notification; KeyError for a kind nobody registered."""
    return RENDERERS[kind](ui, params)
