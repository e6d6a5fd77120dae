"""Support requests: what a user can report, which reports are flagged for the admins, and
where a request stands."""

from __future__ import annotations

import enum

from bot.domain.broadcasts import message_length

# What a user or an admin writes, as Telegram counts it (UTF-16): a complaint needs room
# (references, what happened when), and the admins' copy adds the request's details (lines,
# wallet, the top-up) within Telegram's 4,096 of one message.
MAX_MESSAGE_CHARS = 3000


def message_too_long(text: str) -> bool:
    return message_length(text) > MAX_MESSAGE_CHARS


class SupportCategory(enum.StrEnum):
    """What a request is about: one of the user's charges, or anything else."""

    GENERAL = "general"  # no charge picked
    FAILED = "failed"  # the top-up failed
    CHARGED_TWICE = "charged_twice"
    NOT_RECEIVED = "not_received"  # the line did not receive what was paid for

    @property
    def needs_charge(self) -> bool:
        """Every category but GENERAL is about one charge."""
        return self is not SupportCategory.GENERAL

    @property
    def flagged(self) -> bool:
        """Money may have gone without the top-up (or twice): the admins' list shows such a
        request first until it is resolved."""
        return self in FLAGGED_CATEGORIES


FLAGGED_CATEGORIES = frozenset({SupportCategory.CHARGED_TWICE, SupportCategory.NOT_RECEIVED})
CHARGE_CATEGORIES = (SupportCategory.FAILED, SupportCategory.CHARGED_TWICE,
                     SupportCategory.NOT_RECEIVED)


class TicketStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Direction(enum.StrEnum):
    """Who wrote a message of a request."""

    USER = "user"
    ADMIN = "admin"
