"""Invariants that guard money and data: checked always, not only when asserts are on.

``assert`` vanishes under ``python -O``; a broken invariant there would go on to move money
on a false premise. These raise ``InvariantError`` instead, which rolls back the
transaction it happens in. ``assert`` stays for what only narrows a type.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class InvariantError(RuntimeError):
    """Something that cannot happen did: a bug or a broken database, never bad input."""


def holds(condition: bool, what: str) -> None:
    """Raises InvariantError naming ``what`` (the invariant) unless ``condition``."""
    if not condition:
        raise InvariantError(what)


def present(value: T | None, what: str) -> T:
    """``value``, which the invariant ``what`` says exists; InvariantError when it is None."""
    if value is None:
        raise InvariantError(what)
    return value
