"""The scheduler's work: balance sweeps, warnings, rule runs and reminders.

JobQueue jobs only poll (bot.jobs); what is due lives in the database. Every tick claims
a batch of due rows under a lease (PostgreSQL: FOR UPDATE SKIP LOCKED), so several workers
on one database never do the same row twice, and a worker that dies lets its lease run out.

* ``check_lines``: reads each due line from the backend that can read it (bounded
  concurrency, a timeout), or takes its latest stored reading (user reports, estimates);
  stores the reading, sends the warnings it calls for (once per episode, after quiet
  hours unless urgent), fires threshold and keep-alive rules, and sets the next check.
  A batch's results, warnings and rule charges are one transaction.
* ``run_calendar``: runs each calendar rule whose run is due: the latest due run is charged
  once (key = rule + period); runs missed while nobody ran are reported, not charged.
  A run that meets another open charge of its line waits (its lease runs out and it is
  claimed again), as threshold and keep-alive rules wait for the line's next check.
* ``send_reminders``: 24 hours before a calendar run, a reminder with a "skip" button.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.invariants import InvariantError, present
from bot.domain.money import Money
from bot.domain.operators import RECYCLE_AFTER
from bot.domain.products import Product
from bot.domain.quiet_hours import QuietHours
from bot.domain.readings import (
    LineReading,
    ReadingSource,
    estimate_from_last_topup,
    shown_to_owner,
)
from bot.domain.rules import Approval, Trigger, schedule_of
from bot.domain.schedule import period_key
from bot.domain.watch import (
    TELL_FAILURES_AFTER,
    CalendarDue,
    Thresholds,
    Warning,
    WarningKind,
    calendar_due,
    keep_alive_due,
    keep_alive_wake,
    next_check_at,
    quiet_hours_end,
    send_at,
    threshold_rule,
    trigger_reading,
    warnings_for,
)
from bot.gateways.esim_readings import EsimLineReadings
from bot.gateways.readings import LineNotReadable, LineReadings
from bot.gateways.topup import GatewayError
from bot.services.charging import (
    ChargingService,
    RuleCharge,
    RuleSkipped,
    SkipReason,
    rule_charge_key,
)
from bot.services.notices import Notice, NoticePart, money_keys, queue, stored
from bot.services.users import zone_and_quiet_hours
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import CheckResult, LineRecord, LinesRepository
from storage.notifications import NotificationsRepository
from storage.readings import ReadingsRepository
from storage.rules import RuleRecord, RulesRepository
from storage.scheduler_runs import SchedulerRun, SchedulerRunsRepository
from storage.users import UserRecord, UsersRepository

log = logging.getLogger(__name__)

WARNING = "line_warning"  # notification kinds (rendered in handlers/alerts.py)
LINE_UNREADABLE = "line_unreadable"
RUNS_MISSED = "runs_missed"
RUN_SKIPPED = "run_skipped"
RUN_REMINDER = "run_reminder"

CHECK_LINES, RUN_CALENDAR, SEND_REMINDERS = "line_checks", "calendar_runs", "reminders"
REMIND_AHEAD = timedelta(hours=24)


# --- the notifications ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlanShown(NoticePart):
    """A plan as a notification shows it (name, price): renderers need no catalog."""

    name: str = field(metadata=stored("plan_name"))
    price: Money = field(metadata=money_keys("plan_price_minor", "plan_currency"))

    @classmethod
    def of(cls, plan: Product | None) -> PlanShown | None:
        return cls(name=plan.name, price=plan.price) if plan is not None else None


@dataclass(frozen=True, kw_only=True)
class ReadingShown(NoticePart):
    """A line's reading in a notification (a LineReading, stored flat)."""

    source: ReadingSource
    read_at: datetime
    balance: Money | None = field(metadata=money_keys("balance_minor", "balance_currency"))
    data_mb: int | None
    validity_end: datetime | None
    # Who read it, when that is worth saying ("read from Airalo"): an eSIM's provider.
    read_by: str | None = field(default=None, metadata=stored(omit_none=True))

    @classmethod
    def of(cls, reading: LineReading | None,
           read_by: str | None = None) -> ReadingShown | None:
        if reading is None:
            return None
        return cls(source=reading.source, read_at=reading.read_at, balance=reading.balance,
                   data_mb=reading.data_mb, validity_end=reading.validity_end,
                   read_by=read_by if reading.source is ReadingSource.PROVIDER else None)

    def as_reading(self) -> LineReading:
        return LineReading(source=self.source, read_at=self.read_at, balance=self.balance,
                           data_mb=self.data_mb, validity_end=self.validity_end)


@dataclass(frozen=True, kw_only=True)
class LineShown(NoticePart):
    """A line as its warnings show it: its label, its latest reading and its plan (for the
    "Buy now" button)."""

    id: int = field(metadata=stored("line_id"))
    label: str = field(metadata=stored("line"))
    plan_id: str | None
    reading: ReadingShown | None
    plan: PlanShown | None
    # True for an eSIM (no airtime to offer); absent (None) for a SIM, as rows always were.
    esim: bool | None = field(default=None, metadata=stored(omit_none=True))

    @classmethod
    def of(cls, line: LineRecord, reading: LineReading | None, plan: Product | None, *,
           read_by: str | None = None) -> LineShown:
        return cls(id=line.id, label=line.label, plan_id=line.plan_product_id,
                   reading=ReadingShown.of(reading, read_by), plan=PlanShown.of(plan),
                   esim=True if line.is_esim else None)


@dataclass(frozen=True, kw_only=True)
class LineWarning(Notice):
    KIND: ClassVar[str] = WARNING
    line: LineShown
    warning: WarningKind
    threshold_minor: int | None  # the line's low-balance threshold, in US cents
    threshold_mb: int | None
    recycle_at: datetime | None  # when the carrier takes the number back (RECYCLING)


@dataclass(frozen=True, kw_only=True)
class LineUnreadable(Notice):
    KIND: ClassVar[str] = LINE_UNREADABLE
    line: LineShown
    error: str | None  # why the last read failed (for operators; not shown)


@dataclass(frozen=True, kw_only=True)
class RunReminder(Notice):
    KIND: ClassVar[str] = RUN_REMINDER
    rule_id: int
    line: str
    run_at: datetime
    # An airtime rule's amount. ``currency`` is the rule's, stored for plan rules too, so the
    # two are not one Money field.
    amount_minor: int | None
    currency: str
    product_id: str | None
    plan: PlanShown | None
    approval: Approval

    @property
    def amount(self) -> Money | None:
        return Money(self.amount_minor, self.currency) if self.amount_minor is not None \
            else None


@dataclass(frozen=True, kw_only=True)
class RunsMissed(Notice):
    KIND: ClassVar[str] = RUNS_MISSED
    rule_id: int
    line: str
    run_at: datetime  # the latest, which was run
    missed: int
    first_missed: datetime | None


@dataclass(frozen=True, kw_only=True)
class RunSkipped(Notice):
    KIND: ClassVar[str] = RUN_SKIPPED
    rule_id: int
    line: str
    run_at: datetime


@dataclass(frozen=True)
class SweepSettings:
    batch: int = 500  # rows claimed per transaction
    lease: timedelta = timedelta(minutes=2)  # a claim left by a dead worker runs out then
    concurrency: int = 128  # backend reads in flight at once (50 ms each: ~1,200 lines/s)
    read_timeout: timedelta = timedelta(seconds=10)
    budget: timedelta = timedelta(seconds=20)  # a tick stops claiming after this long
    worker: str = "bot"  # names this process in `topup-bot status`


@dataclass
class SweepReport:
    processed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    charges: int = 0  # rule charges created
    warnings: int = 0  # warnings queued
    deferred: int = 0  # rule runs put off: the line had another open charge


@dataclass(frozen=True)
class SchedulerStatus:
    now: datetime
    due: dict[str, tuple[int, datetime | None]]  # what -> (how many due, the oldest due)
    runs: list[SchedulerRun]
    failing_lines: dict[str, int]  # lines whose last read failed, by kind
    failed_charges: dict[str, int]  # in the last 24 hours, by reason
    failed_notifications: int  # in the last 24 hours


class _RuleChanged(Exception):
    """A claimed rule was paused, edited or deleted before its run was written."""


class _LineBusy(Exception):
    """A calendar run met another open charge of its line: nothing is written, and the run
    is claimed again when its lease runs out."""


def _line_busy(outcome: RuleCharge | RuleSkipped | None) -> bool:
    return isinstance(outcome, RuleSkipped) and outcome.reason is SkipReason.LINE_BUSY


@dataclass(frozen=True)
class _Checked:
    line: LineRecord
    fresh: LineReading | None  # read from the backend now
    error: str | None  # why the read failed


class SchedulerService:
    def __init__(self, db: Database, cipher: FieldCipher, readings: LineReadings,
                 charging: ChargingService, clock: Clock, *, default_zone: ZoneInfo,
                 settings: SweepSettings | None = None, rng: random.Random | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 esims: EsimLineReadings | None = None) -> None:
        self._db = db
        self._esims = esims  # reads eSIM lines from the eSIM provider
        self._cipher = cipher
        self._readings = readings
        self._charging = charging
        self._clock = clock
        self._zone = default_zone
        self.settings = settings or SweepSettings()
        self._rng = rng or random.Random()  # jitter only, not security
        self._monotonic = monotonic

    # --- the balance sweep -------------------------------------------------------------------

    async def check_lines(self, now: datetime | None = None) -> SweepReport:
        """Checks due lines, a batch at a time, until none is due or the budget is spent."""
        await self._charging.warm_catalog()  # rule charges look plans up in transactions
        started, began = self._clock.now(), self._monotonic()
        report = SweepReport()
        while self._monotonic() - began < self.settings.budget.total_seconds():
            at = now or self._clock.now()
            async with self._db.write() as conn:
                batch = await LinesRepository(conn, self._cipher).claim_due_checks(
                    at, at + self.settings.lease, self.settings.batch)
            if not batch:
                break
            await self._check_batch(batch, at, report)
            if len(batch) < self.settings.batch:
                break
        await self._record(CHECK_LINES, started, began, report)
        return report

    async def _check_batch(self, batch: list[LineRecord], now: datetime,
                           report: SweepReport) -> None:
        ids = [line.id for line in batch]
        async with self._db.read() as conn:
            stored = await ReadingsRepository(conn).latest_for_lines(ids)
            rules = await RulesRepository(conn).watching_lines(ids)
            owners = await UsersRepository(conn).get_many([line.owner_id for line in batch])
            topped_up = await ChargesRepository(conn, self._cipher).last_success_for_lines(ids)
        checked = await self._read_all(batch)
        rules_of: dict[int, list[RuleRecord]] = {}
        for rule in rules:
            rules_of.setdefault(rule.line_id, []).append(rule)
        outcomes: list[RuleCharge | RuleSkipped] = []
        async with self._db.write() as conn:
            fresh: list[tuple[int, LineReading]] = []
            results: list[CheckResult] = []
            for item in checked:
                line = item.line
                previous = shown_to_owner(stored.get(line.id), line.verified_at)
                # A failed read decides nothing (no warning, no charge) on old figures: the
                # line backs off and is read again.
                current = item.fresh or (previous if item.error is None else None)
                last_topup = topped_up.get(line.id)
                if (current is None and item.error is None and last_topup is not None
                        and not line.is_esim):  # an eSIM is read, never estimated
                    # Nothing read or reported: the validity the last top-up bought.
                    current = estimate_from_last_topup(line.operator, *last_topup)
                if item.fresh is not None:
                    fresh.append((line.id, item.fresh))
                if item.error is not None:
                    report.failures[item.error] += 1
                owner = owners.get(line.owner_id)
                result = await self._evaluate(conn, line, owner, current,
                                              previous if item.fresh else None, item.error,
                                              rules_of.get(line.id, []),
                                              last_topup[0] if last_topup else None, now,
                                              report, outcomes)
                results.append(result)
            await ReadingsRepository(conn).add_many(fresh, recorded_at=now)
            await LinesRepository(conn, self._cipher).record_checks(results)
        report.processed += len(batch)
        for outcome in outcomes:
            try:
                await self._charging.after_rule_charge(outcome)
            except Exception:  # its lease runs out and the charges poller submits it
                log.exception("Submitting a rule charge failed; it is retried later")
                report.failures["submit"] += 1

    async def _read_all(self, batch: list[LineRecord]) -> list[_Checked]:
        gate = asyncio.Semaphore(self.settings.concurrency)
        timeout = self.settings.read_timeout.total_seconds()

        async def read(line: LineRecord) -> _Checked:
            operator = line.operator
            if line.is_esim:
                if self._esims is None or line.iccid is None:
                    return _Checked(line, None, None)  # not bought yet, or nobody to ask
                return await read_esim(line, self._esims, line.iccid)
            if line.number is None or not self._readings.can_read(operator):
                return _Checked(line, None, None)  # tracked from reports and estimates
            async with gate:
                try:
                    reading = await asyncio.wait_for(
                        self._readings.read(line.number.e164, operator), timeout)
                except TimeoutError:
                    return _Checked(line, None, "timeout")
                except LineNotReadable:
                    return _Checked(line, None, None)
                except GatewayError as error:
                    return _Checked(line, None, type(error).__name__)
                except Exception:  # one broken read must not sink the batch
                    log.exception("Reading line %s failed", line.id)
                    return _Checked(line, None, "error")
            return _Checked(line, reading, None)

        async def read_esim(line: LineRecord, esims: EsimLineReadings,
                            iccid: str) -> _Checked:
            # No read timeout here: the provider spaces these reads under its rate limit
            # (Airalo: 5 a second for the account), so a read may first wait for its turn;
            # its HTTP call has its own timeout.
            try:
                return _Checked(line, await esims.read(iccid), None)
            except GatewayError as error:
                return _Checked(line, None, type(error).__name__)
            except Exception:
                log.exception("Reading eSIM line %s failed", line.id)
                return _Checked(line, None, "error")

        return list(await asyncio.gather(*(read(line) for line in batch)))

    async def _evaluate(self, conn: AsyncConnection, line: LineRecord,
                        owner: UserRecord | None, current: LineReading | None,
                        previous: LineReading | None, error: str | None,
                        rules: list[RuleRecord], last_topup: datetime | None, now: datetime,
                        report: SweepReport,
                        outcomes: list[RuleCharge | RuleSkipped]) -> CheckResult:
        thresholds = Thresholds(line.warn_balance_minor, line.warn_data_mb)
        # A carrier recycles a SIM's number left without top-ups; an eSIM just expires.
        recycle_at = (last_topup + RECYCLE_AFTER[line.operator]
                      if last_topup is not None and not line.is_esim else None)
        warnings, episodes = warnings_for(current, thresholds, line.episodes, now,
                                          recycle_at=recycle_at)
        zone, quiet = self._preferences(owner)
        read_by = self._esims.name if line.is_esim and self._esims else None
        shown = LineShown.of(line, current, self._charging.known_plan(line.plan_product_id),
                             read_by=read_by)
        for warning in warnings:
            report.warnings += await self._notify(
                conn, line.owner_id, warning.dedupe_key(line.id),
                self._warning(warning, line, shown, recycle_at), now,
                send_at(warning, now, quiet, zone))
        failures = line.check_failures + 1 if error is not None else 0
        told = line.check_failure_told and failures > 0
        if failures >= TELL_FAILURES_AFTER and not told:
            told = True
            await self._notify(conn, line.owner_id, f"unreadable:{line.id}:{now.isoformat()}",
                               LineUnreadable(line=shown, error=error), now,
                               quiet_hours_end(now, quiet, zone) if quiet else now)
        wake: list[datetime | None] = []
        for rule in rules:
            outcome = await self._fire_rule(conn, rule, current, now, read_by=read_by)
            if outcome is not None:
                outcomes.append(outcome)
                report.charges += isinstance(outcome, RuleCharge) and outcome.created
                report.deferred += _line_busy(outcome)
            if rule.trigger is Trigger.KEEP_ALIVE and current is not None:
                wake.append(keep_alive_wake(current.validity_end, rule.days_before))
        return CheckResult(
            line_id=line.id, owner_id=line.owner_id,
            next_check_at=next_check_at(now, current, previous, thresholds, failures=failures,
                                        jitter=self._rng.random(), wake_at=tuple(wake)),
            failures=failures, error=error, failure_told=told, episodes=episodes)

    async def _fire_rule(self, conn: AsyncConnection, rule: RuleRecord,
                         reading: LineReading | None, now: datetime, *,
                         read_by: str | None = None) -> RuleCharge | RuleSkipped | None:
        """A threshold or keep-alive rule on the line's current reading; the charge goes in
        this transaction, its key naming the episode (or the validity end kept alive), and
        keeps the reading it fired on (``read_by``: the provider that read it, an eSIM's).

        While the line has another open charge the rule charges nothing and uses nothing
        up: a threshold rule stays out of its episode and a keep-alive rule stays due, so
        the line's next check fires it again if that charge left the line low."""
        if reading is None:
            return None
        trigger = trigger_reading(rule.trigger, reading, read_by)
        if rule.trigger is Trigger.KEEP_ALIVE:
            if (rule.days_before is None or reading.validity_end is None
                    or not keep_alive_due(reading.validity_end, rule.days_before, now)):
                return None
            key = rule_charge_key(rule.id, episode=f"validity:{reading.validity_end.date()}")
            return await self._charging.create_for_rule_in(conn, rule.id, key, now,
                                                           trigger=trigger)
        if rule.trigger is Trigger.BALANCE_BELOW:
            value = reading.balance.minor if reading.balance is not None else None
            threshold = rule.threshold.minor if rule.threshold is not None else None
        else:
            value, threshold = reading.data_mb, rule.threshold_mb
        decision = threshold_rule(value, threshold, in_episode=rule.in_episode,
                                  episode=rule.episode)
        outcome: RuleCharge | RuleSkipped | None = None
        if decision.fire:
            key = rule_charge_key(rule.id, episode=decision.episode)
            outcome = await self._charging.create_for_rule_in(conn, rule.id, key, now,
                                                              trigger=trigger)
            if _line_busy(outcome):
                return outcome  # the episode is not started: the next check fires again
        if (decision.in_episode, decision.episode) != (rule.in_episode, rule.episode):
            await RulesRepository(conn).set_episode(rule.id, episode=decision.episode,
                                                    in_episode=decision.in_episode, now=now)
        return outcome

    # --- calendar rules -----------------------------------------------------------------

    async def run_calendar(self, now: datetime | None = None) -> SweepReport:
        """Runs the calendar rules whose run is due (each in its own transaction)."""
        await self._charging.warm_catalog()
        started, began = self._clock.now(), self._monotonic()
        report = SweepReport()
        while self._monotonic() - began < self.settings.budget.total_seconds():
            at = now or self._clock.now()
            async with self._db.write() as conn:
                batch = await RulesRepository(conn).claim_due_runs(
                    at, at + self.settings.lease, self.settings.batch)
            if not batch:
                break
            for rule in batch:
                try:
                    await self._run_rule(rule, at, report)
                except Exception:
                    log.exception("Calendar rule %s failed; its lease lets it be retried",
                                  rule.id)
                    report.failures["error"] += 1
            if len(batch) < self.settings.batch:
                break
        await self._record(RUN_CALENDAR, started, began, report)
        return report

    async def _run_rule(self, rule: RuleRecord, now: datetime, report: SweepReport) -> None:
        # Claimed as due: a calendar rule with a next run.
        schedule, next_run_at = schedule_of(rule.spec), rule.next_run_at
        if schedule is None or next_run_at is None:
            raise InvariantError(f"due rule {rule.id} has a calendar and a next run")
        async with self._db.read() as conn:
            owner = await UsersRepository(conn).get(rule.owner_id)
        zone, _quiet = self._preferences(owner)
        due = calendar_due(schedule, next_run_at, now, zone)
        period = period_key(schedule, due.run_at, zone)
        outcome: RuleCharge | RuleSkipped | None = None
        try:
            outcome = await self._run_due(rule, due, period, now)
        except _RuleChanged:  # paused, edited or deleted while claimed: nothing happened
            return
        except _LineBusy:  # the lease runs out and the run is claimed again
            log.info("Calendar rule %s waits: its line has an open charge", rule.id)
            report.deferred += 1
            return
        report.processed += 1
        if outcome is not None:
            report.charges += isinstance(outcome, RuleCharge) and outcome.created
            await self._charging.after_rule_charge(outcome)

    async def _run_due(self, rule: RuleRecord, due: CalendarDue, period: str,
                       now: datetime) -> RuleCharge | RuleSkipped | None:
        next_run_at = present(rule.next_run_at, f"due rule {rule.id} has a next run")
        outcome: RuleCharge | RuleSkipped | None = None
        async with self._db.write() as conn:
            label = await self._label(conn, rule.line_id)
            if due.missed:
                await self._notify(conn, rule.owner_id, f"missed:{rule.id}:{period}",
                                   RunsMissed(rule_id=rule.id, line=label, run_at=due.run_at,
                                              missed=due.missed,
                                              first_missed=due.first_missed), now, now)
            if rule.skip_run_at is not None and rule.skip_run_at == due.run_at:
                await self._notify(conn, rule.owner_id, f"skipped:{rule.id}:{period}",
                                   RunSkipped(rule_id=rule.id, line=label, run_at=due.run_at),
                                   now, now)
            else:
                outcome = await self._charging.create_for_rule_in(
                    conn, rule.id, rule_charge_key(rule.id, period_key=period), now)
                if _line_busy(outcome):
                    raise _LineBusy  # rolls the messages back; the run stays due
            if not await RulesRepository(conn).finish_run(
                    rule.id, due_at=next_run_at, next_run_at=due.next_run_at, now=now):
                raise _RuleChanged  # rolls the charge and the messages back
        return outcome

    async def send_reminders(self, now: datetime | None = None) -> SweepReport:
        """Queues a reminder with a "skip this time" button a day before each calendar run."""
        started, began = self._clock.now(), self._monotonic()
        now = now or self._clock.now()
        report = SweepReport()
        async with self._db.read() as conn:
            due = await RulesRepository(conn).due_reminders(now, now + REMIND_AHEAD,
                                                            self.settings.batch)
        for rule in due:
            next_run_at = present(rule.next_run_at, f"rule {rule.id} to remind has a next run")
            async with self._db.write() as conn:
                if not await RulesRepository(conn).mark_reminded(rule.id, next_run_at):
                    continue  # another sweeper reminded, or the run moved
                line = await LinesRepository(conn, self._cipher).get(rule.line_id)
                reminder = RunReminder(
                    rule_id=rule.id, line=line.label if line else "?", run_at=next_run_at,
                    amount_minor=rule.amount.minor if rule.amount else None,
                    currency=rule.currency, product_id=rule.product_id,
                    plan=PlanShown.of(self._charging.known_plan(rule.product_id)),
                    approval=rule.approval)
                await self._notify(conn, rule.owner_id,
                                   f"reminder:{rule.id}:{next_run_at.isoformat()}", reminder,
                                   now, now)
            report.processed += 1
        await self._record(SEND_REMINDERS, started, began, report)
        return report

    async def check_soon(self, e164: str) -> bool:
        """The line with this number is checked at the next sweep (a provider said its
        usage changed); False when no bound line has it."""
        async with self._db.write() as conn:
            return await LinesRepository(conn, self._cipher).check_soon(e164, self._clock.now())

    # --- for operators -------------------------------------------------------------------

    async def status(self, now: datetime | None = None) -> SchedulerStatus:
        """What is due and how late, what each sweeper did last, and what is failing."""
        now = now or self._clock.now()
        day_ago = now - timedelta(days=1)
        async with self._db.read() as conn:
            charges = ChargesRepository(conn, self._cipher)
            notifications = NotificationsRepository(conn)
            lines = LinesRepository(conn, self._cipher)
            return SchedulerStatus(
                now=now,
                due={"line checks": await lines.due_checks(now),
                     "calendar runs": await RulesRepository(conn).due_runs(now),
                     "charges": await charges.due_summary(now),
                     "notifications": await notifications.due_summary(now)},
                runs=await SchedulerRunsRepository(conn).all(),
                failing_lines=await lines.failing_checks(),
                failed_charges=await charges.failures_since(day_ago),
                failed_notifications=await notifications.failed_since(day_ago))

    # --- helpers -----------------------------------------------------------------------

    def _preferences(self, owner: UserRecord | None) -> tuple[ZoneInfo, QuietHours | None]:
        return zone_and_quiet_hours(owner, self._zone)

    async def _label(self, conn: AsyncConnection, line_id: int) -> str:
        line = await LinesRepository(conn, self._cipher).get(line_id)
        return line.label if line is not None else "?"

    @staticmethod
    def _warning(warning: Warning, line: LineRecord, shown: LineShown,
                 recycle_at: datetime | None) -> LineWarning:
        return LineWarning(line=shown, warning=warning.kind,
                           threshold_minor=line.warn_balance_minor,
                           threshold_mb=line.warn_data_mb, recycle_at=recycle_at)

    @staticmethod
    async def _notify(conn: AsyncConnection, user_id: int, key: str, notice: Notice,
                      now: datetime, at: datetime) -> bool:
        return await queue(NotificationsRepository(conn), notice, user_id=user_id,
                           chat_id=user_id, dedupe_key=key, now=now, send_at=at)

    async def _record(self, job: str, started: datetime, began: float,
                      report: SweepReport) -> None:
        run = SchedulerRun(job=job, worker=self.settings.worker, started_at=started,
                           duration_ms=round((self._monotonic() - began) * 1000),
                           processed=report.processed, failures=dict(report.failures))
        async with self._db.write() as conn:
            await SchedulerRunsRepository(conn).record(run)

