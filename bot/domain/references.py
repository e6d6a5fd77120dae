"""Payment references shown where they are stored in plain text (receipts in the outbox):
only their last characters, like a card number, so a user can still tell them apart."""

from __future__ import annotations

SHOWN_CHARS = 4


def masked_reference(reference: str) -> str:
    """``stxAbCdEf123`` -> ``…f123``; a short reference shows at most half of itself."""
    text = reference.strip()
    shown = min(SHOWN_CHARS, len(text) // 2)
    return "…" + text[len(text) - shown:].strip() if shown else "…"
