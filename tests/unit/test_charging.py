"""The charging service on every backend, against the simulated carrier: approval requests,
approvals (once, even under 50 concurrent taps), declines and expiry, holds and receipts,
and every failure the providers really have: timeouts, lost answers, declines, pending
top-ups that settle later, and replayed references that are refused or paid twice."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.charges import ChargeState
from bot.domain.operators import Operator
from bot.gateways.simulated_carrier import ReplayBehaviour, SimulatorKnobs
from bot.gateways.simulated_catalog import CATALOG
from bot.services.charging import (
    AlreadyHandled,
    ApprovalReason,
    Approved,
    Declined,
    InsufficientFunds,
    Invalid,
    NotYourLine,
    NotYours,
    Requested,
    RequestProblem,
    RetryPolicy,
)
from storage.audit import AuditRepository
from storage.charges import reference_for
from storage.tables import audit_log, charges, holds, ledger_entries, notifications
from storage.wallet import WalletRepository
from tests.unit.charging_world import (
    ADMINS,
    ALICE,
    ALICE_NUMBER,
    BOB,
    RETRY,
    World,
    check_invariants,
    drive_to_completion,
    usd,
)


async def requested(world: World, user_id: int = ALICE, cents: int = 500,
                    nonce: str = "n1", product_id: str | None = None,
                    line_id: int | None = None) -> int:
    result = await world.service().request_manual(
        user_id, world.lines[user_id] if line_id is None else line_id,
        None if product_id else usd(cents), product_id, nonce)
    assert isinstance(result, Requested), result
    return result.charge.id


async def table_counts(world: World) -> dict[str, int]:
    return {table.name: await world.count(table)
            for table in (charges, holds, ledger_entries, notifications, audit_log)}


# --- pure parts -------------------------------------------------------------------------

def test_the_reference_is_a_short_stable_hash_of_the_key() -> None:
    reference = reference_for("manual:101:77:1:a500")
    assert reference == reference_for("manual:101:77:1:a500")
    assert reference != reference_for("manual:101:77:1:a200")
    assert reference.startswith("tb-") and len(reference) == 27
    assert "manual" not in reference


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(first_delay=timedelta(seconds=30), multiplier=2,
                         max_delay=timedelta(minutes=5))
    assert [policy.delay(n).total_seconds() for n in range(1, 7)] == [30, 60, 120, 240, 300,
                                                                      300]
    assert policy.delay(10_000) == timedelta(minutes=5)  # no overflow
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# --- asking -----------------------------------------------------------------------------

async def test_a_manual_request_asks_once_per_nonce(world: World) -> None:
    await world.fund(ALICE, 2000)
    service = world.service()
    first = await service.request_manual(ALICE, world.lines[ALICE], usd(500), None, "77:1:a500")
    again = await service.request_manual(ALICE, world.lines[ALICE], usd(500), None, "77:1:a500")

    assert isinstance(first, Requested) and first.created
    assert isinstance(again, Requested) and not again.created
    assert again.charge.id == first.charge.id
    charge = first.charge
    assert charge.state is ChargeState.AWAITING_APPROVAL
    assert charge.expires_at == world.clock.now() + timedelta(hours=1)
    assert charge.idempotency_key == f"manual:{ALICE}:77:1:a500"
    [request] = await world.notifications("approval_request")
    assert request["dedupe_key"] == f"approval:{charge.id}"
    assert request["chat_id"] == ALICE
    params: dict[str, Any] = request["params"]  # type: ignore[assignment]
    assert params["line"] == ALICE_NUMBER.masked
    assert ALICE_NUMBER.e164 not in str(params)
    assert (params["amount_minor"], params["currency"]) == (500, "USD")
    assert (params["wallet_minor"], params["wallet_currency"]) == (2000, "USD")
    assert params["reason"] == "manual"
    assert await world.count(charges) == 1


async def test_a_plan_request_is_priced_from_the_catalog(world: World) -> None:
    plan = next(p for p in CATALOG[Operator.CELLCARD] if p.data_mb)
    charge_id = await requested(world, product_id=plan.id)
    charge = await world.charge(charge_id)
    assert charge.amount == plan.price
    assert charge.product_id == plan.id
    [request] = await world.notifications("approval_request")
    assert request["params"]["product_name"] == plan.name  # type: ignore[index]


async def test_nobody_asks_for_a_top_up_of_someone_elses_line(world: World) -> None:
    before = await table_counts(world)
    result = await world.service().request_manual(BOB, world.lines[ALICE], usd(500), None, "x")
    assert isinstance(result, NotYourLine)
    assert await table_counts(world) == before


@pytest.mark.parametrize(("amount", "product", "problem"), [
    (None, None, RequestProblem.NOTHING_TO_BUY),
    (500, "cellcard-air-500", RequestProblem.BOTH_AMOUNT_AND_PLAN),
    (None, "no-such-plan", RequestProblem.UNKNOWN_PLAN),
    (None, "smart-air-500", RequestProblem.UNKNOWN_PLAN),  # another operator's plan
    (50, None, RequestProblem.AMOUNT_TOO_SMALL),
    (1_000_01, None, RequestProblem.AMOUNT_TOO_LARGE),
])
async def test_requests_that_cannot_be_bought_write_nothing(
        world: World, amount: int | None, product: str | None, problem: RequestProblem) -> None:
    before = await table_counts(world)
    result = await world.service().request_manual(
        ALICE, world.lines[ALICE], usd(amount) if amount is not None else None, product, "n")
    assert result == Invalid(problem)
    assert await table_counts(world) == before


# --- approving --------------------------------------------------------------------------

async def test_approve_holds_submits_captures_and_queues_one_receipt(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    result = await world.service().approve(ALICE, charge_id)

    assert isinstance(result, Approved)
    charge = result.charge
    assert charge.state is ChargeState.SUCCEEDED
    assert charge.attempts == 1
    assert await world.carrier.times_paid(charge.reference) == 1
    assert world.provider.sent == [charge.reference]
    assert await world.available(ALICE) == usd(1500)
    stored = await world.service().get(charge.id)
    assert stored is not None and stored.provider_tx_id is not None
    assert stored.provider_tx_id.startswith("SIM-")
    async with world.db.read() as conn:
        raw = (await conn.execute(select(charges.c.provider_tx_enc))).scalar_one()
        assert stored.provider_tx_id not in raw  # stored encrypted
        actions = [e.action for e in await AuditRepository(conn).latest()]
    assert stored.balance_after is not None and stored.validity_end_after is not None
    [receipt] = await world.notifications("receipt")
    assert receipt["dedupe_key"] == f"receipt:{charge.id}"
    params: dict[str, Any] = receipt["params"]  # type: ignore[assignment]
    assert params["reference"] == charge.reference
    assert params["wallet_minor"] == 1500
    assert params["balance_after_minor"] == stored.balance_after.minor
    assert stored.provider_tx_id not in str(params)
    assert actions[:3] == ["charge.succeeded", "charge.submitted", "charge.approved"]
    await check_invariants(world, settled=True)


async def test_a_second_approve_is_already_handled(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    assert isinstance(await service.approve(ALICE, charge_id), Approved)
    again = await service.approve(ALICE, charge_id)
    assert isinstance(again, AlreadyHandled)
    assert again.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    await check_invariants(world, settled=True)


async def test_fifty_concurrent_approves_make_one_top_up(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()

    async with asyncio.timeout(60):
        results = await asyncio.gather(*(service.approve(ALICE, charge_id) for _ in range(50)))

    assert sum(isinstance(r, Approved) for r in results) == 1
    assert sum(isinstance(r, AlreadyHandled) for r in results) == 49
    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    assert await world.carrier.times_paid(charge.reference) == 1
    assert await world.count(holds) == 1
    assert await world.available(ALICE) == usd(1500)
    await check_invariants(world, settled=True)


async def test_two_charges_cannot_spend_the_same_money(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two different charges (of two lines) approved at once, with money for one: one
    waits."""
    await world.fund(ALICE, 600)
    first = await requested(world, nonce="a")
    second = await requested(world, nonce="b", line_id=await world.add_line(ALICE, "012999001"))
    barrier = asyncio.Barrier(2)
    original = WalletRepository.available

    async def meet(self: WalletRepository, user_id: int, currency: str) -> Any:
        found = await original(self, user_id, currency)
        # Without the wallet lock both approvals read $6 here; with it the second only
        # reads after the first committed its hold, and the wait gives up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(barrier.wait(), timeout=0.3)
        return found

    monkeypatch.setattr(WalletRepository, "available", meet)
    service = world.service()
    async with asyncio.timeout(30):
        results = await asyncio.gather(service.approve(ALICE, first, submit=False),
                                       service.approve(ALICE, second, submit=False))
    assert sorted(type(r).__name__ for r in results) == ["Approved", "InsufficientFunds"]
    monkeypatch.undo()
    await check_invariants(world)


async def test_insufficient_funds_submits_nothing_and_says_what_is_missing(
        world: World) -> None:
    await world.fund(ALICE, 200)
    charge_id = await requested(world)
    before = await table_counts(world)

    result = await world.service().approve(ALICE, charge_id)

    assert isinstance(result, InsufficientFunds)
    assert result.available == usd(200)
    assert result.request.wallet == usd(200)
    assert result.request.reason is ApprovalReason.MANUAL
    assert (await world.charge(charge_id)).state is ChargeState.AWAITING_APPROVAL
    assert world.provider.sent == []
    assert await table_counts(world) == before

    await world.fund(ALICE, 300)  # the user adds money and taps Approve again
    again = await world.service().approve(ALICE, charge_id)
    assert isinstance(again, Approved) and again.charge.state is ChargeState.SUCCEEDED
    assert await world.available(ALICE) == usd(0)
    await check_invariants(world, settled=True)


async def test_a_forged_approve_changes_nothing_and_reveals_nothing(world: World) -> None:
    await world.fund(ALICE, 2000)
    await world.fund(BOB, 2000)
    charge_id = await requested(world)
    before = await table_counts(world)
    service = world.service()

    forged = await service.approve(BOB, charge_id)
    unknown = await service.approve(BOB, charge_id + 1000)
    declined = await service.decline(BOB, charge_id)

    assert forged == unknown == declined == NotYours()  # the same answer: nothing to learn
    assert await table_counts(world) == before
    assert (await world.charge(charge_id)).state is ChargeState.AWAITING_APPROVAL
    assert world.provider.sent == []
    assert not await service.owns(BOB, charge_id)
    assert await service.owns(ALICE, charge_id)


async def test_approve_after_decline_does_nothing(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    declined = await service.decline(ALICE, charge_id)
    assert isinstance(declined, Declined)
    assert declined.charge.state is ChargeState.DECLINED
    before = await table_counts(world)

    result = await service.approve(ALICE, charge_id)

    assert isinstance(result, AlreadyHandled) and result.state is ChargeState.DECLINED
    assert await table_counts(world) == before
    assert world.provider.sent == []
    assert await world.available(ALICE) == usd(2000)
    assert isinstance(await service.decline(ALICE, charge_id), AlreadyHandled)


async def test_expired_requests_say_so_once_and_cannot_be_approved(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    world.clock.advance(timedelta(minutes=59))
    assert await service.expire_due() == 0
    world.clock.advance(timedelta(minutes=1))

    assert await service.expire_due() == 1
    assert await service.expire_due() == 0
    assert (await world.charge(charge_id)).state is ChargeState.EXPIRED
    [expired] = await world.notifications("charge_expired")
    assert expired["dedupe_key"] == f"expired:{charge_id}"
    assert expired["params"]["replaces"] == f"approval:{charge_id}"  # type: ignore[index]
    before = await table_counts(world)

    result = await service.approve(ALICE, charge_id)

    assert isinstance(result, AlreadyHandled) and result.state is ChargeState.EXPIRED
    assert await table_counts(world) == before
    assert world.provider.sent == []
    await check_invariants(world, settled=True)


async def test_approving_a_request_past_its_time_expires_it(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    world.clock.advance(timedelta(hours=2))  # no sweep has run yet
    result = await world.service().approve(ALICE, charge_id)
    assert isinstance(result, AlreadyHandled) and result.state is ChargeState.EXPIRED
    assert world.provider.sent == []
    assert await world.available(ALICE) == usd(2000)


# --- what the carrier does ------------------------------------------------------------------

async def test_a_declined_top_up_releases_the_hold_and_tells_user_and_admins(
        world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(decline_rate=1.0)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)

    result = await world.service().approve(ALICE, charge_id)

    assert isinstance(result, Approved)
    assert result.charge.state is ChargeState.FAILED
    assert result.charge.failure_reason == "declined_by_operator"
    assert await world.available(ALICE) == usd(2000)
    failed = await world.notifications("charge_failed")
    assert sorted(row["chat_id"] for row in failed) == sorted([ALICE, *ADMINS])  # type: ignore[type-var]
    audiences = {row["chat_id"]: row["params"]["audience"] for row in failed}  # type: ignore[index]
    assert audiences[ALICE] == "user" and audiences[ADMINS[0]] == "admin"
    assert await world.notifications("receipt") == []
    await check_invariants(world, settled=True)


async def test_a_pending_top_up_is_looked_up_until_it_settles(world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(pending_rate=1.0, settle_seconds=60)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()

    result = await service.approve(ALICE, charge_id)

    assert isinstance(result, Approved) and result.charge.state is ChargeState.SUBMITTED
    assert result.charge.next_attempt_at == world.clock.now() + RETRY.poll_interval
    assert len(await world.notifications("charge_processing")) == 1
    await check_invariants(world)
    world.clock.advance(RETRY.poll_interval)
    assert await service.process_due() == 1  # looked up: still pending
    assert (await world.charge(charge_id)).state is ChargeState.SUBMITTED
    assert len(await world.notifications("charge_processing")) == 1  # told once
    world.clock.advance(timedelta(seconds=60))
    assert await service.process_due() == 1

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    assert len(await world.notifications("receipt")) == 1
    await check_invariants(world, settled=True)


async def test_a_pending_top_up_that_is_refunded_fails_and_releases(world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(pending_rate=1.0, pending_failure_rate=1.0,
                                         settle_seconds=10)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    await service.approve(ALICE, charge_id)
    await drive_to_completion(world, service)
    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.FAILED
    assert charge.failure_reason == "refunded_by_operator"
    assert await world.available(ALICE) == usd(2000)
    await check_invariants(world, settled=True)


async def test_a_timeout_before_the_carrier_applied_it_is_retried_after_a_look_up(
        world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(timeout_rate=1.0)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()

    result = await service.approve(ALICE, charge_id)

    assert isinstance(result, Approved)
    charge = result.charge
    assert charge.state is ChargeState.SUBMITTED
    assert (charge.attempts, charge.failure_reason) == (1, "timeout")
    assert charge.next_attempt_at == world.clock.now() + RETRY.delay(1)
    assert world.provider.looked_up == [charge.reference]  # looked up, not re-sent
    assert await service.process_due() == 0  # not due yet
    world.carrier.knobs = SimulatorKnobs()
    world.clock.advance(RETRY.delay(1))

    assert await service.process_due() == 1

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert charge.attempts == 2
    assert world.provider.sent == [charge.reference] * 2
    assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)


async def test_timeouts_until_the_last_attempt_fail_the_charge_and_say_why(
        world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(timeout_rate=1.0)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    await service.approve(ALICE, charge_id)

    await drive_to_completion(world, service)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.FAILED
    assert charge.failure_reason == "not_accepted"
    assert charge.attempts == RETRY.max_attempts
    assert len(world.provider.sent) == RETRY.max_attempts
    assert await world.available(ALICE) == usd(2000)
    failed = await world.notifications("charge_failed")
    assert len(failed) == 1 + len(ADMINS)
    await check_invariants(world, settled=True)


@pytest.mark.parametrize("replay", list(ReplayBehaviour))
async def test_a_lost_answer_is_looked_up_never_sent_again(world: World,
                                                           replay: ReplayBehaviour) -> None:
    """PAY_TWICE: a blind re-send would pay the reference twice."""
    world.carrier.knobs = SimulatorKnobs(lost_response_rate=1.0, replay=replay)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)

    result = await world.service().approve(ALICE, charge_id)

    assert isinstance(result, Approved) and result.charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    assert await world.carrier.times_paid(result.charge.reference) == 1
    await check_invariants(world, settled=True)


@pytest.mark.parametrize("replay", list(ReplayBehaviour))
async def test_look_ups_that_fail_are_retried_without_sending_again(
        world: World, replay: ReplayBehaviour) -> None:
    world.carrier.knobs = SimulatorKnobs(lost_response_rate=1.0, replay=replay)
    world.provider.lookup_errors = 3
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()

    result = await service.approve(ALICE, charge_id)
    assert isinstance(result, Approved) and result.charge.state is ChargeState.SUBMITTED
    await drive_to_completion(world, service)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 1
    assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)


async def test_a_refused_replay_is_settled_by_looking_it_up(world: World) -> None:
    """The carrier applied it but lost the answer, and its look-up lagged twice, so the
    charge went out again: Reloadly-style, the replay is refused, and the look-up settles
    it."""
    world.carrier.knobs = SimulatorKnobs(replay=ReplayBehaviour.REJECT)
    world.provider.crash_after_apply = False
    world.provider.lookup_misses = 2
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    world.carrier.knobs = replace(world.carrier.knobs, lost_response_rate=1.0)

    result = await service.approve(ALICE, charge_id)
    assert isinstance(result, Approved) and result.charge.state is ChargeState.SUBMITTED
    world.carrier.knobs = replace(world.carrier.knobs, lost_response_rate=0.0)
    await drive_to_completion(world, service)

    charge = await world.charge(charge_id)
    assert charge.state is ChargeState.SUCCEEDED
    assert len(world.provider.sent) == 2  # the second was refused as a duplicate
    assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)


async def test_concurrent_sweeps_work_each_charge_once(world: World) -> None:
    world.carrier.knobs = SimulatorKnobs(timeout_rate=1.0)
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    first = world.service()
    await first.approve(ALICE, charge_id)
    world.carrier.knobs = SimulatorKnobs()
    world.clock.advance(RETRY.delay(1))

    async with asyncio.timeout(30):
        worked = await asyncio.gather(first.process_due(), world.service().process_due(),
                                      world.service().process_due())

    assert sum(worked) == 1
    assert len(world.provider.sent) == 2  # the first try, and one re-send
    assert (await world.charge(charge_id)).state is ChargeState.SUCCEEDED
    await check_invariants(world, settled=True)


async def test_a_line_unbound_before_submission_fails_without_sending(world: World) -> None:
    await world.fund(ALICE, 2000)
    charge_id = await requested(world)
    service = world.service()
    assert isinstance(await service.approve(ALICE, charge_id, submit=False), Approved)
    async with world.db.write() as conn:
        from storage.lines import LinesRepository

        await LinesRepository(conn, world.cipher).unbind(world.lines[ALICE],
                                                          now=world.clock.now())
    charge = await service.submit(charge_id)
    assert charge is not None and charge.state is ChargeState.FAILED
    assert charge.failure_reason == "line_unavailable"
    assert world.provider.sent == []
    assert await world.available(ALICE) == usd(2000)
    await check_invariants(world, settled=True)


async def test_operators_list_charges_by_state(world: World) -> None:
    await world.fund(ALICE, 2000)
    waiting = await requested(world, nonce="w")
    done = await requested(world, nonce="d", line_id=await world.add_line(ALICE, "012999001"))
    service = world.service()
    await service.approve(ALICE, done)
    assert [c.id for c in await service.list_by_state(ChargeState.AWAITING_APPROVAL)] == [waiting]
    assert [c.id for c in await service.list_by_state(ChargeState.SUCCEEDED)] == [done]
    assert [c.id for c in await service.list_by_state(None)] == [done, waiting]
