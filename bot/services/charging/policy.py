"""What charging decides by: retry timing, why a charge waits or fails, rule keys."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.domain.rules import Trigger

DEFAULT_ZONE = ZoneInfo("Asia/Phnom_Penh")
TOPUP_CURRENCY = "USD"  # Cambodian prepaid airtime is sold in US dollars
MAX_NONCE_CHARS = 80

# Notification kinds this service queues (charging/notices.py; rendered by handlers/approvals.py).
APPROVAL_REQUEST = "approval_request"
RECEIPT = "receipt"
CHARGE_FAILED = "charge_failed"
CHARGE_PROCESSING = "charge_processing"
CHARGE_EXPIRED = "charge_expired"
CHARGE_STUCK = "charge_stuck"  # admins: the provider cannot say what became of a top-up
ESIM_READY = "esim_ready"  # an eSIM bought: its QR code and install code
ESIM_PURCHASE = "esim"  # the cause of a charge that buys a new eSIM
# A bought eSIM is first read this long after its purchase (time to install it).
FIRST_ESIM_CHECK = timedelta(minutes=15)

# Why a charge failed (failure_reason); the renderer explains each to the user.
NOT_ACCEPTED = "not_accepted"  # the provider never took it, after every retry
LINE_UNAVAILABLE = "line_unavailable"  # the line was unbound or changed hands meanwhile

Checkpoint = Callable[[str, int], Awaitable[None]]


class ApprovalReason(enum.StrEnum):
    """Why a charge waits for the user's button."""

    MANUAL = "manual"  # the user asked for it ("Top up now")
    ASK = "ask"  # the rule asks before every charge
    OVER_CAP = "over_cap"  # an automatic rule would go over its monthly cap
    INSUFFICIENT_FUNDS = "insufficient_funds"  # automatic, but the wallet is short


class RequestProblem(enum.StrEnum):
    NOTHING_TO_BUY = "nothing_to_buy"
    BOTH_AMOUNT_AND_PLAN = "both_amount_and_plan"
    UNKNOWN_PLAN = "unknown_plan"  # not in the catalog of the line's operator
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    AMOUNT_TOO_SMALL = "amount_too_small"
    AMOUNT_TOO_LARGE = "amount_too_large"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again (tenacity's wait_exponential, as timestamps: nothing sleeps)."""

    max_attempts: int = 4  # sends of one reference to the provider, at most
    first_delay: timedelta = timedelta(seconds=30)
    multiplier: float = 2.0
    max_delay: timedelta = timedelta(minutes=30)
    poll_interval: timedelta = timedelta(seconds=30)  # how often a pending top-up is looked up
    # How long "come back later" refusals (TryLater) use up no attempt of a charge.
    try_later_for: timedelta = timedelta(minutes=30)
    # How long a worker owns a charge it is working on. Longer than any provider call: a
    # sweep never looks up (and so never re-sends) a charge whose call may be in flight.
    lease: timedelta = timedelta(minutes=2)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th try: first_delay * multiplier^(attempts-1),
        at most max_delay."""
        exponent = min(max(0, attempts - 1), 32)
        seconds = self.first_delay.total_seconds() * self.multiplier ** exponent
        return min(self.max_delay, timedelta(seconds=seconds))


# --- outcomes ---------------------------------------------------------------------------

def rule_charge_key(rule_id: int, *, period_key: str | None = None,
                    episode: int | str | None = None) -> str:
    """The idempotency key of one run of a rule: rule + calendar period, or rule + episode
    (a threshold crossing, or the validity end a keep-alive rule tops up before)."""
    if (period_key is None) == (episode is None):
        raise ValueError("give a period_key or an episode")
    key = (f"rule:{rule_id}:{period_key}" if period_key is not None
           else f"rule:{rule_id}:episode:{episode}")
    if len(key) > 128:
        raise ValueError("period key too long")
    return key


def cause_of(trigger: Trigger) -> str:
    return {Trigger.CALENDAR: "scheduled", Trigger.BALANCE_BELOW: "low_balance",
            Trigger.DATA_BELOW: "low_balance", Trigger.KEEP_ALIVE: "keep_alive"}[trigger]

