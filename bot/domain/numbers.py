"""Whole numbers as people type them: ASCII or Khmer digits only.

``str.isdigit`` is not enough: it accepts "²" and "¹⁰", which ``int`` refuses, so a check
written with it lets a typed superscript crash the handler behind it.
"""

from __future__ import annotations

_KHMER_DIGITS = str.maketrans("០១២៣៤៥៦៧៨៩", "0123456789")


def whole_number(text: str, *, max_digits: int = 18) -> int | None:
    """The number ``text`` spells (surrounding spaces ignored), or None when it is anything
    else: empty, signed, with other characters, or longer than ``max_digits``."""
    digits = text.strip().translate(_KHMER_DIGITS)
    if not digits or len(digits) > max_digits or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)
