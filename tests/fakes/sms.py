"""The SMS gateway of the tests: an SmsSender kept in the process (no server, unlike the
other fakes here). Flow and unit tests alike read the codes it was given, as a user reads
their SMS, and can make it fail like an unreachable gateway."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")  # a one-time code: six digits, no more


@dataclass
class RecordingSms:
    """Keeps every SMS sent, as (phone in E.164, text)."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    failing: bool = False  # while True, every send raises ConnectionError and sends nothing
    attempts: int = 0  # sends tried, the failed ones too

    async def send(self, phone_e164: str, text: str) -> None:
        self.attempts += 1
        if self.failing:
            raise ConnectionError("SMS gateway unreachable")
        self.sent.append((phone_e164, text))

    def last_code(self, phone_e164: str | None = None) -> str:
        """The code in the last SMS (the last one to ``phone_e164``, when given), which must
        hold exactly one."""
        texts = [text for phone, text in self.sent if phone_e164 in (None, phone)]
        assert texts, f"no SMS was sent to {phone_e164}" if phone_e164 else "no SMS was sent"
        codes = CODE.findall(texts[-1])
        assert len(codes) == 1, texts[-1]
        return str(codes[0])
