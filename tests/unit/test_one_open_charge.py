"""A line has at most one open charge (awaiting approval, approved or submitted), on every
backend: "Top up now" while a rule's request waits or a top-up is in flight asks nothing
and points at the open charge; a rule that meets an open charge writes nothing and waits
(threshold rules for the line's next check, keep-alive likewise, calendar runs for their
lease), without failing the sweep's batch; concurrent creations make one charge - on
PostgreSQL the partial unique index settles the race the checks cannot see."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from bot.domain.charges import ChargeState
from bot.domain.rules import Approval, CalendarKind, Trigger
from bot.services.charging import (
    APPROVAL_REQUEST,
    AlreadyOpen,
    ApprovalReason,
    Approved,
    ChargeView,
    Declined,
    Requested,
    RuleCharge,
    RuleSkipped,
    SkipReason,
)
from bot.services.scheduler import WARNING
from storage.charges import ChargeRecord, ChargesRepository
from storage.db import Database
from storage.rules import RuleRecord
from storage.tables import audit_log, charges, holds, notifications
from tests.conftest import BACKENDS
from tests.unit.charging_world import (
    ALICE,
    ALICE_NUMBER,
    BOB,
    BOB_NUMBER,
    World,
    check_invariants,
    usd,
)
from tests.unit.scheduler_world import (
    FakeReadings,
    add_rule,
    make_due,
    queued,
    rule,
    scheduler,
    warn_below,
)


async def written(world: World) -> dict[str, int]:
    return {table.name: await world.count(table)
            for table in (charges, holds, notifications, audit_log)}


async def waiting_rule_request(world: World, *, approval: Approval = Approval.ASK,
                               cap: int = 2000) -> tuple[RuleRecord, ChargeRecord]:
    """Alice's low-balance rule fired, and its charge waits for her approval."""
    low = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                         threshold=100, approval=approval, cap=cap)
    outcome = await world.service().create_for_rule(low, episode=1)
    assert isinstance(outcome, RuleCharge) and outcome.approval is not None
    assert outcome.charge.state is ChargeState.AWAITING_APPROVAL
    return low, outcome.charge


async def top_up_now(world: World, nonce: str, cents: int = 200,
                     user_id: int = ALICE) -> Requested | AlreadyOpen:
    """ "⚡ Top up" on a warning or a line card (its message id is in the nonce)."""
    result = await world.service().request_manual(user_id, world.lines[user_id], usd(cents),
                                                  None, nonce)
    assert isinstance(result, Requested | AlreadyOpen), result
    return result


# --- the user's second trigger ----------------------------------------------------------

async def test_top_up_now_while_the_rules_request_waits_points_at_that_request(
        world: World) -> None:
    await world.fund(ALICE, 2000)
    _low, waiting = await waiting_rule_request(world)
    before = await written(world)

    result = await top_up_now(world, "31:warning:a200")

    assert isinstance(result, AlreadyOpen) and result.awaits_approval
    assert result.charge == waiting
    assert result.line == ALICE_NUMBER.masked
    assert result.message_id is None  # the request was not sent yet
    request = result.request
    assert request is not None
    assert (request.charge.charge_id, request.reason) == (waiting.id, ApprovalReason.ASK)
    assert (request.charge.amount, request.wallet) == (usd(500), usd(2000))
    assert await written(world) == before  # no second charge, no second request, no audit
    # The same button again, and another card, say the same.
    again = await top_up_now(world, "31:warning:a200")
    other = await top_up_now(world, "40:card:a500", cents=500)
    assert isinstance(again, AlreadyOpen) and isinstance(other, AlreadyOpen)
    assert again.charge.id == other.charge.id == waiting.id
    assert await written(world) == before
    # Bob's line is another line.
    assert isinstance(await top_up_now(world, "7:a200", user_id=BOB), Requested)

    # Once the open one is answered, the line can be topped up again.
    assert isinstance(await world.service().approve(ALICE, waiting.id), Approved)
    after = await top_up_now(world, "31:warning:a200")
    assert isinstance(after, Requested) and after.created
    await check_invariants(world)


async def test_the_request_shown_again_keeps_why_it_asked_and_the_cap(world: World) -> None:
    await world.fund(ALICE, 2000)
    _low, over = await waiting_rule_request(world, approval=Approval.AUTO, cap=300)

    result = await top_up_now(world, "1:a200")

    assert isinstance(result, AlreadyOpen) and result.request is not None
    assert result.charge.id == over.id
    assert (result.request.reason, result.request.cap, result.request.spent) == (
        ApprovalReason.OVER_CAP, usd(300), usd(0))


async def test_the_sent_request_is_named_so_the_answer_can_reply_to_it(world: World) -> None:
    _low, waiting = await waiting_rule_request(world)
    [row] = await world.notifications(APPROVAL_REQUEST)
    async with world.db.write() as conn:
        await conn.execute(notifications.update().where(notifications.c.id == row["id"])
                           .values(status="sent", message_id=4321))

    result = await top_up_now(world, "1:a200")

    assert isinstance(result, AlreadyOpen)
    assert (result.charge.id, result.message_id) == (waiting.id, 4321)


async def test_top_up_now_while_a_top_up_is_in_flight_says_it_is_on_its_way(
        world: World) -> None:
    await world.fund(ALICE, 2000)
    low = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                         threshold=100)
    outcome = await world.service().create_for_rule(low, episode=1, submit=False)
    assert isinstance(outcome, RuleCharge) and outcome.charge.state is ChargeState.APPROVED
    before = await written(world)

    result = await top_up_now(world, "1:a200")

    assert isinstance(result, AlreadyOpen) and not result.awaits_approval
    assert result.charge.id == outcome.charge.id and result.request is None
    assert await written(world) == before
    submitted = await world.service().submit(outcome.charge.id)
    assert submitted is not None and submitted.state is ChargeState.SUCCEEDED
    assert isinstance(await top_up_now(world, "1:a200"), Requested)
    await check_invariants(world)


async def test_a_rule_that_meets_the_users_open_request_writes_nothing(world: World) -> None:
    await world.fund(ALICE, 2000)
    manual = await top_up_now(world, "1:a200")
    assert isinstance(manual, Requested) and manual.created
    low = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                         threshold=100)
    before = await written(world)

    outcome = await world.service().create_for_rule(low, episode=1)

    assert outcome == RuleSkipped(SkipReason.LINE_BUSY, open_charge=manual.charge)
    assert await written(world) == before  # nothing held, asked or audited
    assert world.provider.sent == []


async def test_a_request_past_its_time_does_not_hold_the_line(world: World) -> None:
    """The request's hour ran out a moment ago and the sweep has not expired it yet: the
    next trigger expires it (the user is told, as by the sweep) and goes ahead."""
    await world.fund(ALICE, 2000)
    old = await top_up_now(world, "1:a200")
    assert isinstance(old, Requested)
    world.clock.advance(timedelta(hours=1))

    new = await top_up_now(world, "2:a500", cents=500)

    assert isinstance(new, Requested) and new.created
    assert (await world.charge(old.charge.id)).state is ChargeState.EXPIRED
    [expired] = await world.notifications("charge_expired")
    assert expired["dedupe_key"] == f"expired:{old.charge.id}"
    low = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                         threshold=100)
    world.clock.advance(timedelta(hours=1))
    fired = await world.service().create_for_rule(low, episode=1)  # the rule does the same
    assert isinstance(fired, RuleCharge) and fired.created
    assert (await world.charge(new.charge.id)).state is ChargeState.EXPIRED
    await check_invariants(world)


# --- concurrent creations ---------------------------------------------------------------

async def test_concurrent_creations_on_one_line_make_one_charge(
        world: World, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two taps on two cards and the rule, at once. Each first looks for an open charge;
    the barrier holds them there until all three have looked (PostgreSQL: none sees the
    others' uncommitted rows, and the partial unique index decides), or gives up (SQLite:
    one writer at a time, each sees the one before)."""
    await world.fund(ALICE, 2000)
    low = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                         threshold=100, approval=Approval.ASK)
    barrier = asyncio.Barrier(3)
    met: list[bool] = []
    original = ChargesRepository.open_for_line

    async def meet(self: ChargesRepository, line_id: int) -> ChargeRecord | None:
        found = await original(self, line_id)
        if len(met) < 3:
            try:
                await asyncio.wait_for(barrier.wait(), timeout=1.0)
                met.append(True)
            except TimeoutError:
                met.append(False)
        return found

    monkeypatch.setattr(ChargesRepository, "open_for_line", meet)
    service = world.service()
    async with asyncio.timeout(60):
        results: list[Any] = list(await asyncio.gather(
            service.request_manual(ALICE, world.lines[ALICE], usd(200), None, "10:a200"),
            service.request_manual(ALICE, world.lines[ALICE], usd(500), None, "11:a500"),
            service.create_for_rule(low, episode=1)))
    monkeypatch.undo()

    assert all(met) if db.dialect == "postgresql" else not any(met)
    [charge] = await world.all_charges()
    made = [r for r in results if isinstance(r, Requested | RuleCharge)]
    assert len(made) == 1 and made[0].charge == ChargeView.of(charge) and made[0].created
    others = [r for r in results if r not in made]
    assert [r.charge.id if isinstance(r, AlreadyOpen) else r.open_charge.id
            for r in others] == [charge.id, charge.id]
    assert all(isinstance(r, AlreadyOpen) or r.reason is SkipReason.LINE_BUSY
               for r in others)
    assert len(await world.notifications(APPROVAL_REQUEST)) == 1
    await check_invariants(world)


# --- the sweep --------------------------------------------------------------------------

async def low_lines_with_rules(world: World, fake: FakeReadings) -> tuple[RuleRecord,
                                                                         RuleRecord]:
    """Alice's and Bob's lines read at $0.40, each with an automatic $1.00 rule and a
    $1.00 warning, funded."""
    rules = []
    for user_id, number in ((ALICE, ALICE_NUMBER), (BOB, BOB_NUMBER)):
        await world.fund(user_id, 5000)
        await warn_below(world, world.lines[user_id], 100)
        fake.script(number.e164).balance_minor = 40
        rules.append(await add_rule(world, world.lines[user_id], user_id,
                                    trigger=Trigger.BALANCE_BELOW, threshold=100))
    return rules[0], rules[1]


async def test_a_sweep_that_meets_an_open_charge_finishes_its_batch(
        world: World, fake: FakeReadings) -> None:
    alice_rule, bob_rule = await low_lines_with_rules(world, fake)
    manual = await top_up_now(world, "1:a200")  # Alice tapped "Top up" earlier
    assert isinstance(manual, Requested)
    sweep = scheduler(world, readings=fake)

    report = await sweep.check_lines()

    assert report.processed == 2 and not report.failures
    assert (report.charges, report.deferred, report.warnings) == (1, 1, 2)
    [bob_charge] = [c for c in await world.all_charges() if c.user_id == BOB]
    assert bob_charge.state is ChargeState.SUCCEEDED  # the rest of the batch went ahead
    assert [c.id for c in await world.all_charges() if c.user_id == ALICE] == [
        manual.charge.id]
    assert len(await queued(world, WARNING)) == 2  # both lines' warnings were committed
    waiting = await rule(world, alice_rule.id)
    assert (waiting.in_episode, waiting.episode) == (False, 0)  # not used up
    assert (await rule(world, bob_rule.id)).in_episode

    # Nothing changes while the request waits ...
    await make_due(world)
    again = await sweep.check_lines()
    assert (again.charges, again.deferred) == (0, 1)
    # ... and once Alice declines it, the next check fires her rule.
    assert isinstance(await world.service().decline(ALICE, manual.charge.id), Declined)
    world.clock.advance(timedelta(minutes=30))
    await make_due(world)
    fired = await sweep.check_lines()
    assert (fired.charges, fired.deferred) == (1, 0)
    [rule_charge] = [c for c in await world.all_charges() if c.rule_id == alice_rule.id]
    assert rule_charge.idempotency_key == f"rule:{alice_rule.id}:episode:1"
    assert rule_charge.state is ChargeState.SUCCEEDED
    await check_invariants(world, settled=True)


async def test_a_keep_alive_rule_waits_while_the_line_has_an_open_charge(
        world: World, fake: FakeReadings) -> None:
    await world.fund(ALICE, 5000)
    fake.script(ALICE_NUMBER.e164).validity_end = world.clock.now() + timedelta(days=2)
    keep = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.KEEP_ALIVE,
                          days_before=3)
    manual = await top_up_now(world, "1:a200")
    assert isinstance(manual, Requested)
    sweep = scheduler(world, readings=fake)

    report = await sweep.check_lines()

    assert (report.charges, report.deferred) == (0, 1)
    assert [c.id for c in await world.all_charges()] == [manual.charge.id]
    world.clock.advance(timedelta(hours=2))
    await world.service().expire_due()  # nobody answered the request
    await make_due(world)
    fired = await sweep.check_lines()
    assert fired.charges == 1
    [kept] = [c for c in await world.all_charges() if c.rule_id == keep.id]
    assert kept.cause == "keep_alive" and kept.state is ChargeState.SUCCEEDED


async def test_a_calendar_run_that_meets_an_open_charge_waits_for_its_lease(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.CALENDAR,
                             calendar=CalendarKind.MONTHLY, calendar_value=26)
    assert monthly.next_run_at is not None
    world.clock.set(monthly.next_run_at + timedelta(minutes=1))
    manual = await top_up_now(world, "1:a200")  # just before the run
    assert isinstance(manual, Requested)
    sweep = scheduler(world)

    report = await sweep.run_calendar()

    assert (report.processed, report.charges, report.deferred) == (0, 0, 1)
    assert not report.failures
    assert (await rule(world, monthly.id)).next_run_at == monthly.next_run_at  # still due
    assert [c.id for c in await world.all_charges()] == [manual.charge.id]
    assert (await sweep.run_calendar()).deferred == 0  # leased: not tried again at once

    assert isinstance(await world.service().decline(ALICE, manual.charge.id), Declined)
    world.clock.advance(sweep.settings.lease)
    ran = await sweep.run_calendar()
    assert (ran.processed, ran.charges, ran.deferred) == (1, 1, 0)
    [run] = [c for c in await world.all_charges() if c.rule_id == monthly.id]
    assert run.idempotency_key == f"rule:{monthly.id}:2026-11-26"  # the period it was for
    assert run.state is ChargeState.SUCCEEDED
    assert (await rule(world, monthly.id)).next_run_at != monthly.next_run_at
    await check_invariants(world, settled=True)


@pytest.mark.parametrize("db", [BACKENDS[1]], indirect=True)  # PostgreSQL only
async def test_a_tap_racing_the_sweep_leaves_the_batch_committed(
        world: World, fake: FakeReadings, db: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: the sweep's batch looks, finds the line free, and before it inserts the
    user's tap commits a request. The sweep's insert meets the index, inserts nothing and
    aborts nothing: the batch (readings, warnings, Bob's charge) commits."""
    alice_rule, _bob_rule = await low_lines_with_rules(world, fake)
    original = ChargesRepository.open_for_line
    tapping: list[bool] = []
    tapped: list[Requested | AlreadyOpen] = []

    async def tap_meanwhile(self: ChargesRepository, line_id: int) -> ChargeRecord | None:
        found = await original(self, line_id)
        if line_id == world.lines[ALICE] and not tapping:  # the sweep's look, not the tap's
            tapping.append(True)
            tapped.append(await top_up_now(world, "1:a200"))  # its own transaction
        return found

    monkeypatch.setattr(ChargesRepository, "open_for_line", tap_meanwhile)
    report = await scheduler(world, readings=fake).check_lines()
    monkeypatch.undo()

    [manual] = tapped
    assert isinstance(manual, Requested) and manual.created
    assert report.processed == 2 and not report.failures
    assert (report.charges, report.deferred) == (1, 1)
    alice = [c for c in await world.all_charges() if c.user_id == ALICE]
    assert [c.id for c in alice] == [manual.charge.id]
    assert len(await queued(world, WARNING)) == 2
    assert not (await rule(world, alice_rule.id)).in_episode
    await check_invariants(world, settled=True)
