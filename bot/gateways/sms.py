"""SMS delivery (OTP codes). The embedded default writes each message to stderr."""

from __future__ import annotations

import sys
from typing import Protocol, TextIO


class SmsSender(Protocol):
    async def send(self, phone_e164: str, text: str) -> None: ...


class ConsoleSms:
    """Writes ``SMS to <number>: <text>`` as one line, for operators and e2e tests to read."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, phone_e164: str, text: str) -> None:
        stream = self._stream or sys.stderr
        one_line = " ".join(text.split())
        stream.write(f"SMS to {phone_e164}: {one_line}\n")
        stream.flush()
