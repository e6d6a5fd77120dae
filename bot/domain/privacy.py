"""Forgetting a user: what stands in the way, what is stored, what a forget did, and how to
tell personal details from what the accounts keep."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from bot.domain.money import Money
from bot.domain.phone import MobileNumber

# Audit details that are a user's settings, or text that could name them (a line's label is
# its name or its masked number; a line id is a number and stays).
SETTINGS_KEYS = frozenset({"language", "timezone", "quiet_start_minute", "quiet_end_minute"})
TEXT_KEYS = frozenset({"line", "label", "nickname", "name", "number", "phone", "iccid", "text"})
# Audit details naming a user as a line's previous owner (bot.services.binding).
PREVIOUS_OWNER_KEYS = frozenset({"from_user"})


def number_shapes(number: MobileNumber) -> list[str]:
    """How a number can be written: +855..., 855..., 0... (also spaced) and masked."""
    national = "0" + number.e164.removeprefix("+855")
    spaced = f"{national[:3]} {national[3:6]} {national[6:]}"
    return [number.e164, number.e164.removeprefix("+"), national, spaced, number.masked]


def mentions(value: Any, needles: Sequence[str]) -> bool:
    """Whether ``value`` (JSON: text, numbers, lists, objects) contains one of ``needles``."""
    if isinstance(value, str):
        return any(needle in value for needle in needles)
    if isinstance(value, dict):
        return any(mentions(v, needles) for v in value.values())
    if isinstance(value, list | tuple):
        return any(mentions(v, needles) for v in value)
    return False


def scrub_details(details: dict[str, Any], needles: Sequence[str], *,
                  user_id: int | None = None) -> dict[str, Any]:
    """Audit details without what could name the user: their settings, labels and masked
    numbers, anything that mentions one of ``needles`` (their numbers, ICCIDs, names), and
    their id as a line's previous owner (``user_id``)."""
    kept = {key: value for key, value in details.items()
            if key not in SETTINGS_KEYS
            and not (key in TEXT_KEYS and isinstance(value, str))
            and not mentions(value, needles)}
    return unlink_details(kept, user_id) if user_id is not None else kept


def unlink_details(details: dict[str, Any], user_id: int) -> dict[str, Any]:
    """Another user's audit details without the forgotten user's id as the previous owner
    of their line (``{"from_user": id}`` on a line that moved): it would tie the forgotten
    user to that number. The rest is the other user's and stays."""
    return {key: value for key, value in details.items()
            if not (key in PREVIOUS_OWNER_KEYS and value == user_id)}


def money_token(amounts: Sequence[Money]) -> str:
    """A short token for the money a question showed (a button carries it back): a press
    that would leave another amount in the wallet is asked again."""
    shown = ",".join(f"{amount.minor}{amount.currency}" for amount in
                     sorted(amounts, key=lambda money: money.currency))
    return hashlib.sha256(shown.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Obstacles:
    """What the wallet holds and what is not settled yet (all empty: nothing)."""

    balances: tuple[Money, ...] = ()  # money in the wallet (not zero), per currency
    held: tuple[Money, ...] = ()  # held for top-ups in progress
    charges_open: int = 0  # waiting for approval, approved or on their way
    khqr_checked_until: datetime | None = None  # a KHQR may still be paid and credited
    disputes_held: int = 0  # payments not credited, waiting for an admin's refund

    @property
    def money_left(self) -> tuple[Money, ...]:
        """Money in the wallet. It does not stop a forget the user confirms knowing of it:
        the ledger keeps it under their Telegram id, and it is theirs again if they come
        back (nothing in the bot can pay cash, a transfer or a KHQR back out)."""
        return tuple(amount for amount in self.balances if amount.minor > 0)

    @property
    def blocking(self) -> bool:
        """What must settle first: a wallet below zero, money held for a top-up, a charge
        open, a KHQR that may still be paid, a payment waiting for its refund."""
        return bool(any(amount.minor < 0 for amount in self.balances) or self.held
                    or self.charges_open or self.disputes_held
                    or self.khqr_checked_until is not None)


@dataclass(frozen=True)
class Stored:
    """How much is stored of a user: what a forget deletes, and what it keeps."""

    lines: int = 0
    readings: int = 0
    rules: int = 0
    tickets: int = 0
    support_messages: int = 0
    # Kept for the accounts:
    charges: int = 0
    payments: int = 0
    movements: int = 0


@dataclass(frozen=True)
class Erased:
    """What one forget did, counted (its audit row and the user's last message say it)."""

    lines_deleted: int = 0
    lines_scrubbed: int = 0  # tombstones: charges are kept on them
    lines_stood_in: int = 0  # lines gone to someone else: their charges moved to tombstones
    readings: int = 0
    rules: int = 0
    tickets: int = 0
    support_messages: int = 0
    notifications: int = 0
    offers_withdrawn: int = 0
    codes_deleted: int = 0
    codes_detached: int = 0  # still count against their number, naming nobody
    drafts: int = 0
    audit_scrubbed: int = 0
    kept: Stored = field(default_factory=Stored)

    @property
    def lines(self) -> int:
        return self.lines_deleted + self.lines_scrubbed

    def as_details(self) -> dict[str, int]:
        """Counts only: what the audit row of a forget says."""
        counts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kept"}
        counts.update(kept_charges=self.kept.charges, kept_payments=self.kept.payments,
                      kept_movements=self.kept.movements)
        return counts
