"""The charge state machine: the only moves a charge can make.

awaiting_approval -> approved -> submitted -> succeeded | failed
awaiting_approval -> declined | expired
A charge that needs no approval is created approved. Funds are held on approval,
captured on success and released on failure, decline or expiry (see the ledger).
"""

from __future__ import annotations

import enum


class ChargeState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"  # funds held; about to be submitted
    SUBMITTED = "submitted"  # sent to the provider under our reference; outcome may be pending
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DECLINED = "declined"  # the user said no
    EXPIRED = "expired"  # nobody answered in time

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_open(self) -> bool:
        """Whether the charge is still open: awaiting approval or in flight. A line has at
        most one open charge (storage enforces it with a partial unique index)."""
        return self in OPEN_STATES

    @property
    def holds_funds(self) -> bool:
        """Whether the wallet has funds held for a charge in this state."""
        return self in (ChargeState.APPROVED, ChargeState.SUBMITTED)


class ChargeEvent(enum.StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    EXPIRE = "expire"
    SUBMIT = "submit"
    SUCCEED = "succeed"
    FAIL = "fail"


FINAL_STATES = frozenset({ChargeState.SUCCEEDED, ChargeState.FAILED, ChargeState.DECLINED,
                          ChargeState.EXPIRED})

OPEN_STATES = frozenset({ChargeState.AWAITING_APPROVAL, ChargeState.APPROVED,
                         ChargeState.SUBMITTED})

TRANSITIONS: dict[tuple[ChargeState, ChargeEvent], ChargeState] = {
    (ChargeState.AWAITING_APPROVAL, ChargeEvent.APPROVE): ChargeState.APPROVED,
    (ChargeState.AWAITING_APPROVAL, ChargeEvent.DECLINE): ChargeState.DECLINED,
    (ChargeState.AWAITING_APPROVAL, ChargeEvent.EXPIRE): ChargeState.EXPIRED,
    (ChargeState.APPROVED, ChargeEvent.SUBMIT): ChargeState.SUBMITTED,
    # Funds could not be held, or the provider refused before accepting: nothing was sent.
    (ChargeState.APPROVED, ChargeEvent.FAIL): ChargeState.FAILED,
    (ChargeState.SUBMITTED, ChargeEvent.SUCCEED): ChargeState.SUCCEEDED,
    (ChargeState.SUBMITTED, ChargeEvent.FAIL): ChargeState.FAILED,
}


class IllegalTransition(ValueError):
    def __init__(self, state: ChargeState, event: ChargeEvent) -> None:
        super().__init__(f"a {state.value} charge cannot {event.value}")
        self.state = state
        self.event = event


def next_state(state: ChargeState, event: ChargeEvent) -> ChargeState:
    """The state after ``event``, or IllegalTransition: callers never guess."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def allowed_events(state: ChargeState) -> frozenset[ChargeEvent]:
    return frozenset(event for (origin, event) in TRANSITIONS if origin is state)


class DeclineReason(enum.StrEnum):
    """Why a provider declined a top-up (a FAILED result's failure_reason); each has a text
    the user can read in every language (handlers/approvals.py)."""

    INVALID_NUMBER = "invalid_number"  # not a number the operator serves
    OPERATOR_UNAVAILABLE = "operator_unavailable"  # the operator is down or inactive
    PROVIDER_BALANCE = "provider_balance"  # our float at the provider ran out
    AMOUNT_NOT_OFFERED = "amount_not_offered"  # not a denomination the operator sells
    PRODUCT_UNAVAILABLE = "product_unavailable"  # the plan left the provider's catalog
    OPERATOR_TIMED_OUT = "operator_timed_out"  # the operator did not answer; not charged
    ESIM_RECYCLED = "esim_recycled"  # the eSIM provider took the eSIM back for good
    DECLINED = "declined_by_operator"  # any other refusal
