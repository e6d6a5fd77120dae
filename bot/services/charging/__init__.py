"""Charging: approval requests, approvals, holds, submission to the provider, recovery.

A charge is created once per cause (its UNIQUE idempotency key) and moves through the state
machine of ``bot.domain.charges``; every move is one transaction with its audit row and the
message it causes (the notifications outbox), and is a compare-and-set on the state read,
so a second tap, a second worker or a replayed update finds the move already made.

A line has at most one open charge (awaiting approval, approved or submitted): a second
trigger - "Top up now" while a rule's request waits, a rule while a top-up is in flight -
writes nothing and is pointed at the open one (``ChargesRepository.create`` checks; a
partial unique index is the backstop for concurrent creations).

The provider is never called inside a transaction, and never blind:

* ``approved -> submitted`` (attempts + 1) is committed *before* the provider is called, so
  a crash after it is recovered by looking the reference up, not by sending again;
* an unknown outcome (timeout, a refused duplicate reference, a crash) is looked up by our
  reference; only when the provider says it never saw the reference is it sent again,
  with exponential back-off, at most ``RetryPolicy.max_attempts`` times; then it fails and
  the hold is released, and the user and the admins are told why;
* a pending top-up is looked up every ``poll_interval`` until it settles.

Nothing here sleeps: what is due next is a ``next_attempt_at`` in the database, worked by
``process_due`` (a repeating job) under a lease, so several workers never work one charge.

The package has one module per phase, each read top to bottom: ``asking`` (requests and rule
runs become charges; expiry), ``answering`` (Approve, Decline), ``submission`` (to the
provider, never blind), ``settlement`` (the provider's answer becomes the charge's end) and
``recovery`` (the sweep, the look-up after a restart); ``common`` is what they share,
``service`` the one object the bot talks to.
"""

from bot.services.charging.buying import CannotAfford, EsimOrdered
from bot.services.charging.notices import (
    ApprovalRequest,
    ChargeExpired,
    ChargeFacts,
    ChargeFailed,
    ChargeProcessing,
    ChargeStuck,
    EsimReady,
    Receipt,
    TriggerShown,
)
from bot.services.charging.outcomes import (
    AlreadyHandled,
    AlreadyOpen,
    Approved,
    ChargeView,
    Declined,
    InsufficientFunds,
    Invalid,
    NotYourLine,
    NotYours,
    PriceChanged,
    ReconcileReport,
    Requested,
    RuleCharge,
    RuleSkipped,
    SkipReason,
)
from bot.services.charging.policy import (
    APPROVAL_REQUEST,
    CHARGE_EXPIRED,
    CHARGE_FAILED,
    CHARGE_PROCESSING,
    CHARGE_STUCK,
    ESIM_PURCHASE,
    ESIM_READY,
    LINE_UNAVAILABLE,
    NOT_ACCEPTED,
    RECEIPT,
    ApprovalReason,
    Checkpoint,
    RequestProblem,
    RetryPolicy,
    rule_charge_key,
)
from bot.services.charging.service import ChargingService

__all__ = [
    "APPROVAL_REQUEST",
    "CHARGE_EXPIRED",
    "CHARGE_FAILED",
    "CHARGE_PROCESSING",
    "CHARGE_STUCK",
    "ESIM_PURCHASE",
    "ESIM_READY",
    "LINE_UNAVAILABLE",
    "NOT_ACCEPTED",
    "RECEIPT",
    "AlreadyHandled",
    "AlreadyOpen",
    "ApprovalReason",
    "ApprovalRequest",
    "Approved",
    "CannotAfford",
    "ChargeExpired",
    "ChargeFacts",
    "ChargeFailed",
    "ChargeProcessing",
    "ChargeStuck",
    "ChargeView",
    "ChargingService",
    "Checkpoint",
    "Declined",
    "EsimOrdered",
    "EsimReady",
    "InsufficientFunds",
    "Invalid",
    "NotYourLine",
    "NotYours",
    "PriceChanged",
    "Receipt",
    "ReconcileReport",
    "RequestProblem",
    "Requested",
    "RetryPolicy",
    "RuleCharge",
    "RuleSkipped",
    "SkipReason",
    "TriggerShown",
    "rule_charge_key",
]
