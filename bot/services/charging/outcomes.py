"""What the charging service answers: one frozen dataclass per outcome."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.gateways.topup import TopUpResult
from bot.services.charging.notices import ApprovalRequest
from bot.services.charging.policy import ApprovalReason, RequestProblem
from storage.charges import ChargeRecord


@dataclass(frozen=True)
class ChargeView:
    """A charge as the rest of the bot sees it: what it buys, where it stands, why it failed;
    not the provider's transaction id or money (those stay in storage and in receipts)."""

    id: int
    idempotency_key: str  # its cause (manual:<user>:<nonce>, rule:<id>:<period>, ...)
    reference: str  # ours, as the provider knows it
    user_id: int
    line_id: int
    rule_id: int | None
    cause: str
    amount: Money
    product_id: str | None
    state: ChargeState
    expires_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    failure_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, record: ChargeRecord) -> ChargeView:
        return cls(id=record.id, idempotency_key=record.idempotency_key, reference=record.reference,
                   user_id=record.user_id, line_id=record.line_id, rule_id=record.rule_id,
                   cause=record.cause, amount=record.amount, product_id=record.product_id,
                   state=record.state, expires_at=record.expires_at, attempts=record.attempts,
                   next_attempt_at=record.next_attempt_at,
                   failure_reason=record.failure_reason, created_at=record.created_at)


@dataclass(frozen=True)
class NotYourLine:
    """The line is unknown, someone else's or unbound: nothing was written."""


@dataclass(frozen=True)
class Invalid:
    problem: RequestProblem


@dataclass(frozen=True)
class Requested:
    charge: ChargeView
    created: bool  # False: this nonce asked before (a double tap): that earlier charge


@dataclass(frozen=True)
class AlreadyOpen:
    """The line already has an open charge (awaiting approval or in flight): nothing was
    written; the user is pointed at that one. A line has one open charge at a time."""

    charge: ChargeView
    line: str  # how the line is shown
    # The open charge's approval request as it stands (today's wallet balance), to show it
    # again with its buttons; None when it is in flight (approved or submitted).
    request: ApprovalRequest | None
    message_id: int | None = None  # the approval request in the chat, once it was sent

    @property
    def awaits_approval(self) -> bool:
        return self.charge.state is ChargeState.AWAITING_APPROVAL


@dataclass(frozen=True)
class NotYours:
    """Unknown charge or someone else's: nothing done, nothing revealed."""


@dataclass(frozen=True)
class AlreadyHandled:
    """The charge is past the question (approved before, declined, expired, settled)."""

    charge: ChargeView

    @property
    def state(self) -> ChargeState:
        return self.charge.state


@dataclass(frozen=True)
class InsufficientFunds:
    """The wallet cannot cover the charge: it still awaits approval; nothing was held."""

    charge: ChargeView
    available: Money
    request: ApprovalRequest  # the approval request, with today's wallet balance


@dataclass(frozen=True)
class PriceChanged:
    """The plan costs more than when it was asked for: the charge now asks for the new
    price and still awaits approval; nothing was held (never charged silently)."""

    charge: ChargeView  # with the new amount
    was: Money
    request: ApprovalRequest  # the approval request as it stands now


@dataclass(frozen=True)
class Approved:
    charge: ChargeView  # as it is after the submission: succeeded, submitted or failed


@dataclass(frozen=True)
class Declined:
    charge: ChargeView


@dataclass(frozen=True)
class RuleCharge:
    charge: ChargeView  # after the submission when it went ahead automatically
    created: bool  # False: this period or episode was charged before (that charge)
    approval: ApprovalReason | None  # why it waits for the user; None: it went ahead


class SkipReason(enum.StrEnum):
    RULE_INACTIVE = "rule_inactive"
    LINE_UNAVAILABLE = "line_unavailable"
    INVALID = "invalid"  # the rule no longer prices (its plan left the catalog)
    # The line has another open charge (awaiting approval or in flight): nothing was
    # written; the scheduler tries the run again once that charge is closed.
    LINE_BUSY = "line_busy"


@dataclass(frozen=True)
class RuleSkipped:
    reason: SkipReason
    open_charge: ChargeView | None = None  # LINE_BUSY: the line's open charge


@dataclass(frozen=True)
class ReconcileReport:
    looked_up: int = 0
    settled: int = 0  # found final at the provider and settled here
    pending: int = 0
    resent_or_failed: int = 0  # never reached the provider: sent now, or failed for good
    left_for_later: int = 0  # another worker's lease is still running
    submitted: int = 0  # approved charges whose submission never happened
    errors: list[int] = field(default_factory=list)


class _LookupFailed:
    """The provider could not answer a look-up: we still do not know."""


LOOKUP_FAILED = _LookupFailed()
Lookup = TopUpResult | None | _LookupFailed

