"""`topup-bot status`: due counts and lag, the last run of each sweeper, failures by kind."""

from __future__ import annotations

from datetime import timedelta

from bot.cli_status import format_status
from bot.domain.operators import Operator
from bot.domain.readings import LineReading
from bot.gateways.topup import GatewayTimeout
from tests.unit.charging_world import World
from tests.unit.scheduler_world import make_due, scheduler


class Unreachable:
    """A backend whose every read times out."""

    def can_read(self, operator: Operator) -> bool:
        return True

    async def read(self, phone_e164: str, operator: Operator) -> LineReading:
        raise GatewayTimeout("no answer")


async def test_status_shows_what_is_due_how_late_and_what_failed(world: World) -> None:
    sweep = scheduler(world, worker="w7", readings=Unreachable())
    world.clock.advance(timedelta(minutes=90))  # both lines were due on creation

    before = await sweep.status()
    assert before.due["line checks"] == (2, world.clock.now() - timedelta(minutes=90))
    assert before.runs == [] and before.failing_lines == {}

    report = await sweep.check_lines()
    assert report.processed == 2 and report.failures == {"GatewayTimeout": 2}
    after = await sweep.status()

    assert after.due["line checks"] == (0, None)
    [run] = [r for r in after.runs if r.job == "line_checks"]
    assert (run.worker, run.processed, run.failures) == ("w7", 2, {"GatewayTimeout": 2})
    assert after.failing_lines == {"GatewayTimeout": 2}
    text = format_status(after)
    assert "line checks" in text and "w7" in text
    assert "lines whose last read failed: GatewayTimeout 2" in text

    await make_due(world)
    world.clock.advance(timedelta(hours=1, minutes=2))
    lagging = format_status(await sweep.status())
    assert "line checks            2  1:02:00" in lagging
