"""The one codec for inline-button data: short, versioned, never trusted.

``v1:<kind>:<arg>:<arg>`` - at most 64 bytes (Telegram's limit). Decoding refuses anything
malformed, of another version or of an unknown kind; handlers still re-read the object
and check the clicking user owns it and that its state allows the action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION = "v1"
MAX_BYTES = 64
_ARG = re.compile(r"[A-Za-z0-9_-]{1,24}")  # always fullmatch: "$" would allow a "\n"

# kind -> names of its arguments (each a short token: ids, actions, page numbers)
KINDS: dict[str, tuple[str, ...]] = {}


def register(kind: str, *arg_names: str) -> str:
    """Declares a button kind; returns the regex pattern a CallbackQueryHandler matches."""
    if not re.fullmatch(r"[a-z]{1,4}", kind):
        raise ValueError(f"bad callback kind {kind!r}")
    if KINDS.get(kind, arg_names) != arg_names:
        raise ValueError(f"callback kind {kind!r} registered twice with other arguments")
    KINDS[kind] = arg_names
    return rf"^{VERSION}:{kind}(:|$)"


@dataclass(frozen=True)
class Callback:
    kind: str
    args: tuple[str, ...]

    def arg(self, name: str) -> str:
        return self.args[KINDS[self.kind].index(name)]

    def int_arg(self, name: str) -> int | None:
        value = self.arg(name)
        return int(value) if value.isdigit() and len(value) <= 18 else None


def encode(kind: str, *args: object) -> str:
    if kind not in KINDS or len(args) != len(KINDS[kind]):
        raise ValueError(f"callback {kind!r} takes {KINDS.get(kind)}")
    parts = [str(a) for a in args]
    for part in parts:
        if not _ARG.fullmatch(part):
            raise ValueError(f"callback argument {part!r} is not a short token")
    data = ":".join([VERSION, kind, *parts])
    if len(data.encode()) > MAX_BYTES:
        raise ValueError("callback data over 64 bytes")
    return data


def decode(data: str | None) -> Callback | None:
    """The callback, or None for anything we did not produce (forged, stale version, junk)."""
    if not data or not data.isascii() or len(data) > MAX_BYTES:
        return None
    version, _, rest = data.partition(":")
    if version != VERSION:
        return None
    kind, *args = rest.split(":") if rest else [""]
    expected = KINDS.get(kind)
    if expected is None or len(args) != len(expected):
        return None
    if not all(_ARG.fullmatch(arg) for arg in args):
        return None
    return Callback(kind, tuple(args))
