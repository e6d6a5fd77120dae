"""Calendar rules on every backend, driven with the manual clock: one charge per period
(key rule + local date), short months, outages (the latest run charged, the others
reported), restarts and leases, paused rules, reminders with "skip", and approval requests
nobody answered."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.charges import ChargeState
from bot.domain.rules import Approval, CalendarKind, RuleStatus, Trigger, first_run_at
from bot.services.charging import APPROVAL_REQUEST, CHARGE_EXPIRED
from bot.services.scheduler import RUN_REMINDER, RUN_SKIPPED, RUNS_MISSED
from storage.rules import RuleRecord, RulesRepository
from storage.users import UsersRepository
from tests.unit.charging_world import (
    ALICE,
    RETRY,
    World,
    check_invariants,
    crash_at,
)
from tests.unit.scheduler_world import add_rule, charges_of, queued, rule, scheduler

# The clock starts at 2026-11-25 02:00 UTC, 09:00 in Phnom Penh; runs are at 09:00 local.
NOV_30 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
MONTH_ENDS = [NOV_30, datetime(2026, 12, 31, 2, 0, tzinfo=UTC),
              datetime(2027, 1, 31, 2, 0, tzinfo=UTC), datetime(2027, 2, 28, 2, 0, tzinfo=UTC),
              datetime(2027, 3, 31, 2, 0, tzinfo=UTC), datetime(2027, 4, 30, 2, 0, tzinfo=UTC),
              datetime(2027, 5, 31, 2, 0, tzinfo=UTC)]


async def monthly_on_the_31st(world: World, *, approval: Approval = Approval.AUTO,
                              ) -> RuleRecord:
    return await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.CALENDAR,
                          calendar=CalendarKind.MONTHLY, calendar_value=31, approval=approval)


def params_of(row: dict[str, object]) -> dict[str, object]:
    params = row["params"]
    assert isinstance(params, dict)
    return params


async def test_a_monthly_rule_on_the_31st_charges_once_a_month_on_the_last_day(
        world: World) -> None:
    await world.fund(ALICE, 10_000)
    monthly = await monthly_on_the_31st(world)
    sweep = scheduler(world)
    assert monthly.next_run_at == NOV_30

    world.clock.set(NOV_30 - timedelta(minutes=1))
    early = await sweep.run_calendar()
    assert (early.processed, early.charges) == (0, 0)

    for run_at, following in itertools.pairwise(MONTH_ENDS):
        world.clock.set(run_at + timedelta(minutes=1))
        report = await sweep.run_calendar()
        again = await sweep.run_calendar()
        assert (report.processed, report.charges) == (1, 1), run_at
        assert (again.processed, again.charges) == (0, 0), run_at
        assert (await rule(world, monthly.id)).next_run_at == following

    local_dates = ["2026-11-30", "2026-12-31", "2027-01-31", "2027-02-28", "2027-03-31",
                   "2027-04-30"]
    charges = await charges_of(world, monthly.id)
    assert [c.idempotency_key for c in charges] == [
        f"rule:{monthly.id}:{day}" for day in local_dates]
    assert all(c.state is ChargeState.SUCCEEDED and c.cause == "scheduled" for c in charges)
    assert await queued(world, RUNS_MISSED) == []
    await check_invariants(world, settled=True)


async def test_the_period_key_is_the_run_date_in_the_owners_zone_not_in_utc(
        world: World) -> None:
    auckland = ZoneInfo("Pacific/Auckland")  # UTC+13 in summer: 09:00 there is 20:00 UTC
    async with world.db.write() as conn:
        await UsersRepository(conn).update(ALICE, now=world.clock.now(),
                                           timezone="Pacific/Auckland")
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    first = first_run_at(monthly.spec, world.clock.now(), auckland)
    assert first == datetime(2026, 11, 29, 20, 0, tzinfo=UTC)  # Nov 30, 09:00 in Auckland
    async with world.db.write() as conn:
        await RulesRepository(conn).update(monthly.id, now=world.clock.now(), next_run_at=first)
    world.clock.set(first + timedelta(minutes=1))

    await scheduler(world).run_calendar()

    [charge] = await charges_of(world, monthly.id)
    assert charge.idempotency_key == f"rule:{monthly.id}:2026-11-30"
    assert (await rule(world, monthly.id)).next_run_at == datetime(
        2026, 12, 30, 20, 0, tzinfo=UTC)  # Dec 31, 09:00 in Auckland


async def test_a_three_day_outage_of_a_daily_rule_charges_once_and_reports_two_missed_runs(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    daily = await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.CALENDAR,
                           calendar=CalendarKind.EVERY_N, calendar_value=1,
                           calendar_anchor=date(2026, 11, 25))
    assert daily.next_run_at == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    world.clock.set(datetime(2026, 11, 28, 2, 30, tzinfo=UTC))  # runs of the 26th-28th due

    report = await scheduler(world).run_calendar()

    assert (report.processed, report.charges) == (1, 1)
    [charge] = await charges_of(world, daily.id)
    assert charge.idempotency_key == f"rule:{daily.id}:2026-11-28"
    assert charge.state is ChargeState.SUCCEEDED
    [missed] = await queued(world, RUNS_MISSED)
    assert missed["user_id"] == ALICE
    assert missed["dedupe_key"] == f"missed:{daily.id}:2026-11-28"
    params = params_of(missed)
    assert (params["missed"], params["first_missed"], params["run_at"]) == (
        2, datetime(2026, 11, 26, 2, 0, tzinfo=UTC).isoformat(),
        datetime(2026, 11, 28, 2, 0, tzinfo=UTC).isoformat())
    assert (await rule(world, daily.id)).next_run_at == datetime(2026, 11, 29, 2, 0, tzinfo=UTC)

    await scheduler(world).run_calendar()  # a second sweep finds nothing due
    assert len(await charges_of(world, daily.id)) == 1
    assert len(await queued(world, RUNS_MISSED)) == 1
    await check_invariants(world, settled=True)


async def test_a_monthly_rule_down_for_three_months_charges_once(world: World) -> None:
    await world.fund(ALICE, 10_000)
    monthly = await monthly_on_the_31st(world)
    world.clock.set(datetime(2027, 3, 1, 2, 0, tzinfo=UTC))  # Nov 30 .. Feb 28 all due

    report = await scheduler(world).run_calendar()

    assert report.charges == 1
    [charge] = await charges_of(world, monthly.id)
    assert charge.idempotency_key == f"rule:{monthly.id}:2027-02-28"
    [missed] = await queued(world, RUNS_MISSED)
    assert params_of(missed)["missed"] == 3
    assert params_of(missed)["first_missed"] == NOV_30.isoformat()
    assert (await rule(world, monthly.id)).next_run_at == MONTH_ENDS[4]  # March 31
    await check_invariants(world, settled=True)


async def test_a_period_is_never_charged_twice_by_repeated_sweeps_or_a_restart(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    world.clock.set(NOV_30 + timedelta(minutes=5))

    reports = [await scheduler(world, worker=name).run_calendar()
               for name in ("first", "first", "restarted")]

    assert [r.charges for r in reports] == [1, 0, 0]
    [charge] = await charges_of(world, monthly.id)
    assert await world.carrier.times_paid(charge.reference) == 1
    await check_invariants(world, settled=True)


async def test_a_run_claimed_by_a_worker_that_died_is_run_once_its_lease_runs_out(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    lease = timedelta(minutes=2)
    world.clock.set(NOV_30 + timedelta(minutes=5))
    now = world.clock.now()
    async with world.db.write() as conn:  # claimed, then the worker died
        [claimed] = await RulesRepository(conn).claim_due_runs(now, now + lease, 10)
    assert claimed.id == monthly.id
    sweep = scheduler(world, lease=lease)

    during = await sweep.run_calendar()
    world.clock.advance(lease)
    after = await sweep.run_calendar()

    assert (during.processed, during.charges) == (0, 0)
    assert (after.processed, after.charges) == (1, 1)
    [charge] = await charges_of(world, monthly.id)
    assert charge.idempotency_key == f"rule:{monthly.id}:2026-11-30"
    await check_invariants(world, settled=True)


async def test_a_crash_after_the_run_is_written_leaves_one_charge_that_is_submitted_later(
        world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    world.clock.set(NOV_30 + timedelta(minutes=5))
    crashing = scheduler(world, charging=world.service(checkpoint=crash_at("approved")))

    report = await crashing.run_calendar()

    assert report.failures == {"error": 1}
    [charge] = await charges_of(world, monthly.id)
    assert charge.state is ChargeState.APPROVED  # written with the run, never sent
    assert (await rule(world, monthly.id)).next_run_at == MONTH_ENDS[1]

    restarted = await scheduler(world, worker="restarted").run_calendar()
    world.clock.advance(RETRY.lease)
    await world.service().process_due()

    assert restarted.charges == 0
    [settled] = await charges_of(world, monthly.id)
    assert settled.state is ChargeState.SUCCEEDED
    assert await world.carrier.times_paid(settled.reference) == 1
    await check_invariants(world, settled=True)


async def test_a_paused_rule_is_not_due(world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    async with world.db.write() as conn:
        await RulesRepository(conn).set_status(monthly.id, RuleStatus.PAUSED, world.clock.now())
    world.clock.set(NOV_30 + timedelta(days=1))

    report = await scheduler(world).run_calendar()

    assert (report.processed, report.charges) == (0, 0)
    assert await world.all_charges() == []
    paused = await rule(world, monthly.id)
    assert (paused.status, paused.next_run_at) == (RuleStatus.PAUSED, None)


async def test_a_rule_paused_after_it_was_claimed_is_not_charged(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    world.clock.set(NOV_30 + timedelta(minutes=5))
    original = UsersRepository.get
    paused: list[int] = []

    async def get_then_pause(self: UsersRepository, user_id: int) -> object:
        found = await original(self, user_id)
        if not paused:  # the user taps "pause" while the sweep holds the claim
            paused.append(user_id)
            async with world.db.write() as conn:
                await RulesRepository(conn).set_status(monthly.id, RuleStatus.PAUSED,
                                                       world.clock.now())
        return found

    monkeypatch.setattr(UsersRepository, "get", get_then_pause)

    report = await scheduler(world).run_calendar()

    assert paused == [ALICE]
    assert report.charges == 0
    assert await world.all_charges() == []
    assert await queued(world, APPROVAL_REQUEST) == []
    assert (await rule(world, monthly.id)).status is RuleStatus.PAUSED


async def test_a_reminder_is_queued_once_a_day_before_each_run(world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    sweep = scheduler(world)

    too_early = await sweep.send_reminders()
    world.clock.set(NOV_30 - timedelta(hours=23))
    first = await sweep.send_reminders()
    second = await sweep.send_reminders()
    after_restart = await scheduler(world, worker="restarted").send_reminders()

    assert [r.processed for r in (too_early, first, second, after_restart)] == [0, 1, 0, 0]
    [reminder] = await queued(world, RUN_REMINDER)
    assert reminder["dedupe_key"] == f"reminder:{monthly.id}:{NOV_30.isoformat()}"
    params = params_of(reminder)
    assert (params["rule_id"], params["run_at"], params["amount_minor"]) == (
        monthly.id, NOV_30.isoformat(), 500)

    world.clock.set(NOV_30 + timedelta(minutes=1))
    await sweep.run_calendar()
    world.clock.set(MONTH_ENDS[1] - timedelta(hours=2))
    assert (await sweep.send_reminders()).processed == 1  # the next run's reminder
    assert [params_of(r)["run_at"] for r in await queued(world, RUN_REMINDER)] == [
        NOV_30.isoformat(), MONTH_ENDS[1].isoformat()]


async def test_a_skipped_run_is_not_charged_and_the_rule_moves_on(world: World) -> None:
    await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world)
    world.clock.set(NOV_30 - timedelta(hours=20))
    async with world.db.write() as conn:
        rules = RulesRepository(conn)
        assert not await rules.skip_run(monthly.id, MONTH_ENDS[1], world.clock.now())
        assert await rules.skip_run(monthly.id, NOV_30, world.clock.now())
    sweep = scheduler(world)

    world.clock.set(NOV_30 + timedelta(minutes=1))
    report = await sweep.run_calendar()

    assert report.charges == 0
    assert await world.all_charges() == []
    [skipped] = await queued(world, RUN_SKIPPED)
    assert skipped["dedupe_key"] == f"skipped:{monthly.id}:2026-11-30"
    assert params_of(skipped)["run_at"] == NOV_30.isoformat()
    moved = await rule(world, monthly.id)
    assert (moved.next_run_at, moved.skip_run_at) == (MONTH_ENDS[1], None)

    world.clock.set(MONTH_ENDS[1] + timedelta(minutes=1))
    await sweep.run_calendar()  # the skip was for one run only
    [charge] = await charges_of(world, monthly.id)
    assert charge.idempotency_key == f"rule:{monthly.id}:2026-12-31"
    assert len(await queued(world, RUN_SKIPPED)) == 1
    await check_invariants(world, settled=True)


@pytest.mark.parametrize(("approval", "funded_at_first", "reason", "next_state"), [
    pytest.param(Approval.ASK, True, "ask", ChargeState.AWAITING_APPROVAL, id="ask-rule"),
    pytest.param(Approval.AUTO, False, "insufficient_funds", ChargeState.SUCCEEDED,
                 id="auto-rule-short-wallet"),
])
async def test_an_unanswered_request_expires_and_the_rule_moves_on_to_its_next_period(
        world: World, approval: Approval, funded_at_first: bool, reason: str,
        next_state: ChargeState) -> None:
    if funded_at_first:
        await world.fund(ALICE, 5000)
    monthly = await monthly_on_the_31st(world, approval=approval)
    sweep = scheduler(world)
    world.clock.set(NOV_30 + timedelta(minutes=1))
    await sweep.run_calendar()
    [request] = await queued(world, APPROVAL_REQUEST)
    assert params_of(request)["reason"] == reason
    assert (await rule(world, monthly.id)).next_run_at == MONTH_ENDS[1]

    world.clock.advance(timedelta(hours=1, minutes=1))  # past the approval timeout
    expired, worked = await world.service().sweep()

    assert (expired, worked) == (1, 0)
    [first] = await charges_of(world, monthly.id)
    assert first.state is ChargeState.EXPIRED
    [told] = await queued(world, CHARGE_EXPIRED)
    assert params_of(told)["charge_id"] == first.id

    if not funded_at_first:
        await world.fund(ALICE, 5000)
    world.clock.set(MONTH_ENDS[1] + timedelta(minutes=1))
    report = await sweep.run_calendar()

    assert report.charges == 1
    first, second = await charges_of(world, monthly.id)
    assert first.state is ChargeState.EXPIRED
    assert second.idempotency_key == f"rule:{monthly.id}:2026-12-31"
    assert second.state is next_state
    await check_invariants(world)
