"""The charge state machine: only the allowed moves, property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.charges import (
    FINAL_STATES,
    ChargeEvent,
    ChargeState,
    IllegalTransition,
    allowed_events,
    next_state,
)

S, E = ChargeState, ChargeEvent


@pytest.mark.parametrize(("state", "event", "after"), [
    (S.AWAITING_APPROVAL, E.APPROVE, S.APPROVED),
    (S.AWAITING_APPROVAL, E.DECLINE, S.DECLINED),
    (S.AWAITING_APPROVAL, E.EXPIRE, S.EXPIRED),
    (S.APPROVED, E.SUBMIT, S.SUBMITTED),
    (S.APPROVED, E.FAIL, S.FAILED),
    (S.SUBMITTED, E.SUCCEED, S.SUCCEEDED),
    (S.SUBMITTED, E.FAIL, S.FAILED),
])
def test_the_allowed_moves(state: ChargeState, event: ChargeEvent, after: ChargeState) -> None:
    assert next_state(state, event) is after


@pytest.mark.parametrize(("state", "event"), [
    (S.DECLINED, E.APPROVE),  # approve after decline
    (S.EXPIRED, E.APPROVE),  # approve after expiry
    (S.APPROVED, E.APPROVE),  # a second approve
    (S.SUBMITTED, E.SUBMIT),  # submitted twice
    (S.AWAITING_APPROVAL, E.SUBMIT),  # submitted without approval
    (S.SUCCEEDED, E.FAIL),
    (S.FAILED, E.SUCCEED),
    (S.SUBMITTED, E.DECLINE),  # too late to decline
])
def test_refused_moves(state: ChargeState, event: ChargeEvent) -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        next_state(state, event)
    assert excinfo.value.state is state
    assert excinfo.value.event is event


@given(st.sampled_from(ChargeState), st.sampled_from(ChargeEvent))
def test_every_pair_either_moves_as_listed_or_is_refused(state: ChargeState,
                                                         event: ChargeEvent) -> None:
    if event in allowed_events(state):
        assert next_state(state, event) is not state
    else:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


@given(st.lists(st.sampled_from(ChargeEvent), max_size=12))
def test_any_sequence_of_events_ends_in_a_reachable_state_and_final_states_never_move(
        events: list[ChargeEvent]) -> None:
    state = S.AWAITING_APPROVAL
    submitted = False
    for event in events:
        try:
            after = next_state(state, event)
        except IllegalTransition:
            continue
        assert not state.is_final  # nothing leaves a final state
        submitted = submitted or after is S.SUBMITTED
        if after is S.SUCCEEDED:
            assert submitted  # success only after the provider had it
        state = after
    assert state in set(ChargeState)


def test_final_states_allow_nothing_and_only_live_charges_hold_funds() -> None:
    for state in FINAL_STATES:
        assert allowed_events(state) == frozenset()
        assert not state.holds_funds
    assert S.APPROVED.holds_funds
    assert S.SUBMITTED.holds_funds
    assert not S.AWAITING_APPROVAL.holds_funds
