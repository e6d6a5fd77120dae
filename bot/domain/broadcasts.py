"""Promotions broadcast by an admin: who an offer is for, what it may say, when each copy
goes out, and how the copies ended.

An offer goes to the users who opted in (/settings), all of them or those with a bound
line of one operator. It is one Telegram message: the admin's text and an opt-out line
under it, so the text keeps room for that line within Telegram's 4,096 characters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.operators import Operator
from bot.domain.quiet_hours import QuietHours
from bot.domain.watch import quiet_hours_end

TELEGRAM_MESSAGE_LIMIT = 4096  # characters (UTF-16 code units) of one text message
# The admin's text at most: what is left leaves room for "\n\n" and the opt-out line in
# any language we ship.
MAX_OFFER_CHARS = 4000
EVERYONE = "all"  # the audience word for every opted-in user
AUDIENCE_WORDS = (EVERYONE, *(operator.value for operator in Operator))


class OfferTextError(ValueError):
    """An offer that cannot be sent as it is."""

    class Reason(enum.StrEnum):
        EMPTY = "empty"
        TOO_LONG = "too_long"

    def __init__(self, reason: Reason, length: int = 0) -> None:
        super().__init__(f"{reason.value} ({length} characters)")
        self.reason = reason
        self.length = length


class UnknownAudience(ValueError):
    """Not ``all`` nor an operator's name."""

    def __init__(self, word: str) -> None:
        super().__init__(f"{word!r} is not an audience: one of {', '.join(AUDIENCE_WORDS)}")
        self.word = word


def parse_audience(word: str) -> Operator | None:
    """The operator an audience word names, None for ``all``; UnknownAudience otherwise."""
    cleaned = word.strip().lower()
    if cleaned == EVERYONE:
        return None
    try:
        return Operator(cleaned)
    except ValueError:
        raise UnknownAudience(word) from None


def audience_word(operator: Operator | None) -> str:
    return EVERYONE if operator is None else operator.value


def message_length(text: str) -> int:
    """The length Telegram counts: UTF-16 code units (an emoji is often two)."""
    return len(text.encode("utf-16-le")) // 2


def check_offer_text(text: str | None) -> str:
    """The offer's text, trimmed; OfferTextError when it is empty or too long for one
    message with its opt-out line."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise OfferTextError(OfferTextError.Reason.EMPTY)
    length = message_length(cleaned)
    if length > MAX_OFFER_CHARS:
        raise OfferTextError(OfferTextError.Reason.TOO_LONG, length)
    return cleaned


def offer_send_at(start: datetime, offset: timedelta, quiet: QuietHours | None,
                  zone: ZoneInfo) -> datetime:
    """When one copy goes out: its slot (``start`` + ``offset``, which paces the
    broadcast), or, when that falls in the user's quiet hours, the end of them plus the
    same offset (so the copies held overnight do not all go at the same minute)."""
    slot = start + offset
    if quiet is None:
        return slot
    end = quiet_hours_end(slot, quiet, zone)
    return slot if end == slot else end + offset


@dataclass(frozen=True)
class Tally:
    """How a broadcast's copies ended so far."""

    delivered: int = 0
    blocked: int = 0  # the user blocked the bot (or deleted their account)
    failed: int = 0  # Telegram refused it, or it ran out of attempts
    opted_out: int = 0  # withdrawn: the user turned promotions off before it went out
    pending: int = 0  # not sent yet (quiet hours, pacing, retries)

    @property
    def total(self) -> int:
        return self.delivered + self.blocked + self.failed + self.opted_out + self.pending

    @property
    def final(self) -> bool:
        return self.pending == 0


# --- in the outbox ------------------------------------------------------------------------

OFFER_KIND = "promotion"  # the notification kind of one copy of an offer
REPORT_KIND = "broadcast_report"  # the admins' report when every copy is final
# Why a copy was dropped when its user turned promotions off before it went out (the
# dispatcher's own drops say the user blocked the bot).
OPTED_OUT_REASON = "opted out of promotions"


def offer_key(broadcast_id: int, user_id: int) -> str:
    """The outbox key of one copy: a broadcast reaches each user once."""
    return f"broadcast:{broadcast_id}:{user_id}"


def offer_key_pattern(broadcast_id: int) -> str:
    """A LIKE pattern of every copy of one broadcast (no wildcard in the prefix)."""
    return f"broadcast:{broadcast_id}:%"


def report_key(broadcast_id: int, chat_id: int) -> str:
    return f"broadcast_report:{broadcast_id}:{chat_id}"


@dataclass(frozen=True)
class Broadcast:
    """One broadcast, from its preview on."""

    id: int
    text: str
    operator: Operator | None  # None: every opted-in user
    audience: int  # counted for the preview
    created_at: datetime
    created_by: str  # admin:<id>, cli
    chat_id: int | None  # where it was previewed: confirmed there, reported there
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    queued: int | None = None  # copies in the outbox, once every one is queued
    cancelled_at: datetime | None = None
    finished_at: datetime | None = None  # every copy final, and reported

    @property
    def audience_word(self) -> str:
        return audience_word(self.operator)
