"""`topup-bot status`: the scheduler as an operator needs to see it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.services.scheduler import SchedulerStatus

if TYPE_CHECKING:
    from bot.wiring import Components


def _lag(now: datetime, oldest: datetime | None) -> str:
    if oldest is None:
        return "-"
    seconds = max(0, round((now - oldest).total_seconds()))
    return str(timedelta(seconds=seconds))


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())) or "none"


def format_status(status: SchedulerStatus) -> str:
    now = status.now
    lines = [f"Scheduler status at {now:%Y-%m-%d %H:%M:%S} UTC", "",
             f"{'DUE':<16}{'COUNT':>8}  LAG (oldest due)"]
    for what, (count, oldest) in status.due.items():
        lines.append(f"{what:<16}{count:>8}  {_lag(now, oldest)}")
    lines += ["", "LAST RUNS"]
    if not status.runs:
        lines.append("  none yet (no sweeper has run against this database)")
    for run in status.runs:
        lines.append(f"  {run.job:<15} {run.worker:<24} {run.started_at:%Y-%m-%d %H:%M:%S}  "
                     f"{run.duration_ms:>7} ms  {run.processed:>7} done  "
                     f"failures: {_kinds(run.failures)}")
    lines += ["", "FAILURES",
              f"  lines whose last read failed: {_kinds(status.failing_lines)}",
              f"  charges failed in 24 h: {_kinds(status.failed_charges)}",
              f"  notifications failed in 24 h: {status.failed_notifications}"]
    return "\n".join(lines)


async def scheduler_status(components: Components) -> str:
    return format_status(await components.scheduler.status())
