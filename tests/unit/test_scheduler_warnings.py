"""The warnings a balance sweep queues, on every backend: low data once per episode, the
validity countdown (three days, a day, the last hour) once each, and quiet hours kept in
the user's own time zone, except for the last-hour warning."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.rules import Approval, Trigger
from bot.services.charging import APPROVAL_REQUEST
from bot.services.notifications import Delivered, NotificationDispatcher, Outgoing
from bot.services.scheduler import WARNING
from storage.users import UsersRepository
from tests.unit.charging_world import ALICE, ALICE_NUMBER, BOB_NUMBER, World
from tests.unit.scheduler_world import (
    FakeReadings,
    add_rule,
    line,
    make_due,
    queued,
    scheduler,
    warn_below,
)

QUIET_NIGHT = timedelta(hours=14)  # from 09:00 to 23:00 in Phnom Penh


@dataclass
class Chat:
    """Delivers every message at once and remembers what went out."""

    delivered: list[Outgoing] = field(default_factory=list)

    async def __call__(self, message: Outgoing) -> Delivered:
        self.delivered.append(message)
        return Delivered(1000 + len(self.delivered))

    def kinds(self) -> list[tuple[str, object]]:
        return [(m.kind, m.params.get("warning")) for m in self.delivered]


async def warnings_of(world: World, line_id: int) -> list[dict[str, object]]:
    found = []
    for row in await queued(world, WARNING):
        params = row["params"]
        assert isinstance(params, dict)
        if params["line_id"] == line_id:
            found.append(row)
    return found


def kind_of(row: dict[str, object]) -> object:
    params = row["params"]
    assert isinstance(params, dict)
    return params["warning"]


async def test_low_data_warns_once_per_episode(world: World) -> None:
    alice = world.lines[ALICE]
    fake = FakeReadings(world.clock)
    await warn_below(world, alice, None, data_mb=100)
    fake.script(ALICE_NUMBER.e164).data_mb = 50
    sweep = scheduler(world, readings=fake)

    report = await sweep.check_lines()

    assert report.warnings == 1
    [warning] = await warnings_of(world, alice)
    params = warning["params"]
    assert isinstance(params, dict)
    assert (params["warning"], params["data_mb"], params["threshold_mb"]) == ("low_data", 50, 100)
    checked = await line(world, alice)
    assert checked.episodes.data_low and checked.episodes.data_episode == 1
    assert not checked.episodes.balance_low  # no balance threshold: no balance episode

    for data_mb in (40, 30):  # still low: nothing new
        fake.script(ALICE_NUMBER.e164).data_mb = data_mb
        world.clock.advance(timedelta(minutes=45))
        await sweep.check_lines()
    assert len(await warnings_of(world, alice)) == 1

    fake.script(ALICE_NUMBER.e164).data_mb = 2000  # a data pack: the episode ends
    world.clock.advance(timedelta(minutes=45))
    await sweep.check_lines()
    assert not (await line(world, alice)).episodes.data_low
    fake.script(ALICE_NUMBER.e164).data_mb = 10
    world.clock.advance(timedelta(hours=7))
    await sweep.check_lines()

    keys = [row["dedupe_key"] for row in await warnings_of(world, alice)]
    assert keys == [f"warn:low_data:{alice}:1", f"warn:low_data:{alice}:2"]


async def test_validity_warns_three_days_then_a_day_then_in_the_last_hour_once_each(
        world: World) -> None:
    alice = world.lines[ALICE]
    end = world.clock.now() + timedelta(hours=60)
    await world.carrier.set_validity(ALICE_NUMBER.e164, ALICE_NUMBER.operator, end)
    await world.carrier.set_validity(BOB_NUMBER.e164, BOB_NUMBER.operator,
                                     world.clock.now() + timedelta(days=60))
    sweep = scheduler(world)

    await sweep.check_lines()
    [three_days] = await warnings_of(world, alice)
    assert three_days["dedupe_key"] == f"warn:validity_3d:{alice}:{end.isoformat()}"
    params = three_days["params"]
    assert isinstance(params, dict)
    assert (params["validity_end"], params["source"]) == (end.isoformat(), "provider")

    world.clock.set(end - timedelta(hours=30))  # still more than a day: nothing new
    await make_due(world, alice)
    await sweep.check_lines()
    assert [kind_of(w) for w in await warnings_of(world, alice)] == ["validity_3d"]

    for hours_left in (23, 22):  # the 24-hour warning, once
        world.clock.set(end - timedelta(hours=hours_left))
        await make_due(world, alice)
        await sweep.check_lines()
    assert [kind_of(w) for w in await warnings_of(world, alice)] == [
        "validity_3d", "validity_24h"]

    world.clock.set(end - timedelta(hours=1, minutes=10))
    await make_due(world, alice)
    await sweep.check_lines()
    # The next look comes exactly when the last hour begins, not hours later.
    assert (await line(world, alice)).next_check_at == end - timedelta(hours=1)

    world.clock.set(end - timedelta(hours=1))
    report = await sweep.check_lines()
    assert report.processed == 1
    world.clock.advance(timedelta(minutes=20))
    await make_due(world, alice)
    await sweep.check_lines()

    rows = await warnings_of(world, alice)
    assert [kind_of(w) for w in rows] == ["validity_3d", "validity_24h", "validity_1h"]
    assert len({row["dedupe_key"] for row in rows}) == 3


@pytest.mark.parametrize(("zone", "hours_later", "quiet_until"), [
    # 16:00 UTC is 23:00 in Phnom Penh: quiet until 07:00 there, 00:00 UTC the next day.
    pytest.param("Asia/Phnom_Penh", 14, datetime(2026, 11, 26, 0, 0, tzinfo=UTC),
                 id="phnom-penh-night"),
    # ... and 01:00 in Tokyo: quiet until 07:00 there, 22:00 UTC the same day.
    pytest.param("Asia/Tokyo", 14, datetime(2026, 11, 25, 22, 0, tzinfo=UTC), id="tokyo-night"),
    # 02:00 UTC is 09:00 in Phnom Penh: not quiet, sent at once.
    pytest.param("Asia/Phnom_Penh", 0, None, id="phnom-penh-morning"),
])
async def test_quiet_hours_in_the_users_zone_hold_warnings_but_not_the_last_hour(
        world: World, zone: str, hours_later: int, quiet_until: datetime | None) -> None:
    alice = world.lines[ALICE]
    async with world.db.write() as conn:
        await UsersRepository(conn).update(ALICE, now=world.clock.now(),
                                           quiet_start_minute=22 * 60,
                                           quiet_end_minute=7 * 60, timezone=zone)
    world.clock.advance(timedelta(hours=hours_later))
    now = world.clock.now()
    fake = FakeReadings(world.clock)
    fake.script(ALICE_NUMBER.e164).balance_minor = 50
    fake.script(ALICE_NUMBER.e164).validity_end = now + timedelta(minutes=30)
    await warn_below(world, alice, 100)

    await scheduler(world, readings=fake).check_lines()

    sent_at = {kind_of(row): row["next_attempt_at"] for row in await warnings_of(world, alice)}
    assert sent_at == {"low_balance": quiet_until or now, "validity_1h": now}


async def quiet_night_with_a_low_line(world: World) -> FakeReadings:
    """Alice's quiet hours are 22:00-07:00 in Phnom Penh and it is 23:00 there; her line is
    below its warning threshold."""
    async with world.db.write() as conn:
        await UsersRepository(conn).update(ALICE, now=world.clock.now(),
                                           quiet_start_minute=22 * 60,
                                           quiet_end_minute=7 * 60, timezone="Asia/Phnom_Penh")
    world.clock.advance(QUIET_NIGHT)
    await warn_below(world, world.lines[ALICE], 100)
    fake = FakeReadings(world.clock)
    fake.script(ALICE_NUMBER.e164).balance_minor = 50
    return fake


async def test_the_last_hour_warning_is_delivered_during_quiet_hours_behind_a_held_warning(
        world: World) -> None:
    fake = await quiet_night_with_a_low_line(world)
    fake.script(ALICE_NUMBER.e164).validity_end = world.clock.now() + timedelta(minutes=30)
    await scheduler(world, readings=fake).check_lines()
    chat = Chat()

    await NotificationDispatcher(world.db, world.clock, chat).run()

    assert chat.kinds() == [(WARNING, "validity_1h")]  # actual: [] until 07:00


async def test_an_approval_request_queued_in_quiet_hours_is_delivered_before_it_expires(
        world: World) -> None:
    fake = await quiet_night_with_a_low_line(world)
    await world.fund(ALICE, 5000)
    await add_rule(world, world.lines[ALICE], ALICE, trigger=Trigger.BALANCE_BELOW,
                   threshold=100, approval=Approval.ASK)
    await scheduler(world, readings=fake).check_lines()
    [request] = await queued(world, APPROVAL_REQUEST)
    assert request["next_attempt_at"] == world.clock.now()
    chat = Chat()

    await NotificationDispatcher(world.db, world.clock, chat).run()

    assert [m.kind for m in chat.delivered] == [APPROVAL_REQUEST]  # actual: []
