"""One-time codes: the policy (lifetime, tries, lockout, resend limits) as pure decisions."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

CODE_DIGITS = 6
# A code counts against its number's hourly cap this long after it was sent. Past that, and
# once any lockout it holds is over, it decides nothing any more: it is purged (its row keeps
# the number's blind index, which is phone-derived).
CAP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class OtpPolicy:
    lifetime: timedelta = timedelta(minutes=5)
    max_wrong_tries: int = 5
    lockout: timedelta = timedelta(minutes=15)
    resend_cooldown: timedelta = timedelta(seconds=60)
    max_sends_per_hour: int = 5


class SendRefusal(enum.Enum):
    LOCKED = "locked"  # too many wrong codes: wait for the lockout to end
    COOLDOWN = "cooldown"  # a code was sent moments ago
    HOURLY_CAP = "hourly_cap"  # too many codes to this number this hour


@dataclass(frozen=True)
class Refused:
    reason: SendRefusal
    retry_at: datetime


@dataclass(frozen=True)
class ChallengeView:
    """What the policy needs to know of the latest challenge."""

    created_at: datetime
    expires_at: datetime
    attempts: int
    locked_until: datetime | None
    consumed_at: datetime | None


def may_send(policy: OtpPolicy, now: datetime, latest: ChallengeView | None,
             sent_last_hour: int, oldest_in_hour: datetime | None,
             number_locked_until: datetime | None = None) -> Refused | None:
    """None when a new code may be sent now; otherwise why not and until when.

    ``latest`` is the asking account's own latest challenge for this number and purpose
    (the resend cooldown is per account); ``sent_last_hour``, ``oldest_in_hour`` and
    ``number_locked_until`` (the latest lockout end of any challenge to the number) are the
    number's, whoever asked and whatever for: a locked number gets no code from anyone.
    """
    locks = [until for until in (number_locked_until,
                                 latest.locked_until if latest is not None else None)
             if until is not None and until > now]
    if locks:
        return Refused(SendRefusal.LOCKED, max(locks))
    if latest is not None:
        ready = latest.created_at + policy.resend_cooldown
        if latest.consumed_at is None and ready > now:
            return Refused(SendRefusal.COOLDOWN, ready)
    if sent_last_hour >= policy.max_sends_per_hour:
        retry = (oldest_in_hour or now) + timedelta(hours=1)
        return Refused(SendRefusal.HOURLY_CAP, retry)
    return None


class CheckResult(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"
    EXPIRED = "expired"
    USED = "used"
    MALFORMED = "malformed"


def precheck(policy: OtpPolicy, now: datetime, challenge: ChallengeView,
             code: str) -> CheckResult | None:
    """A verdict reached without comparing the code, or None to go on and compare it."""
    if challenge.consumed_at is not None:
        return CheckResult.USED
    if challenge.locked_until is not None and challenge.locked_until > now:
        return CheckResult.LOCKED
    if challenge.expires_at <= now:
        return CheckResult.EXPIRED
    if challenge.attempts >= policy.max_wrong_tries:
        return CheckResult.LOCKED  # tries used up: the lockout may be over, the code is not
    if not is_well_formed(code):
        return CheckResult.MALFORMED
    return None


def still_counts(now: datetime, challenge: ChallengeView) -> bool:
    """Whether a code still decides something at ``now``: it is within the hourly cap's
    window, can still be typed, or holds a lockout. A code that does not is purged."""
    return (challenge.created_at > now - CAP_WINDOW or challenge.expires_at > now
            or (challenge.locked_until is not None and challenge.locked_until > now))


def lock_after_failure(policy: OtpPolicy, now: datetime, attempts_before: int) -> datetime | None:
    """The lockout end if this wrong code used up the last try."""
    if attempts_before + 1 >= policy.max_wrong_tries:
        return now + policy.lockout
    return None


def tries_left(policy: OtpPolicy, attempts: int) -> int:
    return max(0, policy.max_wrong_tries - attempts)


def normalize_code(text: str) -> str:
    """People paste codes with spaces or dashes: keep the digits only (ASCII and Khmer)."""
    khmer_digits = str.maketrans("០១២៣៤៥៦៧៨៩", "0123456789")
    return "".join(ch for ch in text.translate(khmer_digits) if ch.isascii() and ch.isdigit())


_CODE_LAYOUT = frozenset("0123456789០១២៣៤៥៦៧៨៩ -\t")


def looks_like_code(text: str) -> bool:
    """Text that is a code and nothing else (digits, spaces and dashes), the way people type
    one: "123456", "123 456", "១២៣៤៥៦". Other text with six digits in it is not."""
    return set(text.strip()) <= _CODE_LAYOUT and is_well_formed(normalize_code(text))


def is_well_formed(code: str) -> bool:
    return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()
