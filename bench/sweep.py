"""The balance sweep (``SchedulerService.check_lines``) at scale, and one JobQueue job per line.

Run from the project root:  python -m bench.sweep  [--check] [--only TEXT] [--max-lines N]

Every measurement is a child process on a database seeded beforehand by another child, so
seeding never counts in a figure (nor in a peak RSS). Seeding writes what the bot would
have: a user per line, the number encrypted and blind-indexed by the bot's cipher, a valid
Cambodian mobile (8 prefixes, 7-digit subscriber numbers, Cellcard/Smart/Metfone/Seatel);
``due`` lines (evenly spread over the ids) with ``next_check_at`` up to an hour ago, the
rest 1 hour to 6 days ahead. The system is warm: every line's ``sim_lines`` row exists (the
simulated carrier's own first-sight state, as of 6 hours ago), so a read is the simulator's
read-only path, and every due line has one earlier reading.

Scenarios:
  sweep     100,000 lines, 10,000 due, the simulated carrier at 0 ms and at 50 ms: one sweep
            (check_lines until every due line is processed; the tick budget raised so one
            tick does it all): due lines/s, CPU per line, peak RSS.
  tick      10,000 / 100,000 / 1,000,000 lines with the same 1,000 due, carrier at 0 ms: an
            idle tick (nothing due), one claim of a batch (rolled back), and a tick over the
            1,000 due lines (median of 3, after a first tick that is not counted). These must
            stay flat: the cost follows what is due, not what exists.
  jobqueue  the usual pattern, one PTB ``run_repeating`` job per line (as in PTB's timerbot
            example), at 10,000 and 100,000 lines: start-up (load and decrypt every line,
            schedule its job, start the job queue), peak RSS, and one tick where the same
            1,000 lines' jobs fire at once, each reading its line through the carrier and
            writing the reading in its own transaction.
  postgres  (TEST_POSTGRES_URL set, or --postgres) 100,000 lines, 10,000 due, 50 ms: one
            worker process, then two worker processes on a copy of the same database.

Each run checks that every due line got exactly one new reading (and no other line any),
that no lease or failure is left behind, and that nothing was logged at ERROR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy.engine import make_url

# -- targets (from the issue) -------------------------------------------------------------

TARGET_RATE_0MS = 2_000.0  # due lines/s, SQLite, carrier at 0 ms
TARGET_RATE_50MS = 1_000.0  # due lines/s, SQLite, carrier at 50 ms
TARGET_RSS_MB = 300.0  # peak RSS of a sweep
TARGET_PG_SCALING = 1.6  # PostgreSQL at 50 ms: two workers' lines/s over one worker's
FLAT_MAX = 1.5  # ours: a tick at the most lines costs at most this times one at the fewest
CARRIER_LATENCY_MS = 50

SWEEP_LINES, SWEEP_DUE = 100_000, 10_000
TICK_SIZES = (10_000, 100_000, 1_000_000)
BASELINE_SIZES = (10_000, 100_000)
TICK_DUE = 1_000
TICK_REPEATS = 3
IDLE_REPEATS = 5
CLAIM_REPEATS = 5

SEED_CHUNK = 20_000
FIRST_USER = 100_000_000
EARLIER = timedelta(hours=6)  # the previous check (sim_lines first seen, earlier reading)
HEALTHY_INTERVAL = timedelta(hours=6)  # the baseline jobs' interval (the bot's healthy check)
# Prefixes after which every 7-digit subscriber number is a valid mobile (phonenumbers'
# metadata as bot.domain.phone uses it; a sample is parsed at every seed).
PREFIXES = (("12", "cellcard"), ("96", "smart"), ("97", "metfone"), ("88", "metfone"),
            ("31", "metfone"), ("71", "metfone"), ("76", "cellcard"), ("18", "seatel"))


@dataclass(frozen=True)
class Job:
    """What one child process does."""

    mode: str  # seed, sweep, tick, jobqueue, verify
    data_dir: str
    lines: int
    due: int
    database_url: str = ""  # empty: SQLite in data_dir
    latency_ms: int = 0
    worker: str = "bench"
    wait_for_go: bool = False  # print READY, then wait for a line on stdin (workers)
    since: float = 0.0  # verify: readings recorded from this unix time on
    reader: str = "simulated"  # or "memory": a diagnostic reader that never touches the DB
    timeout_s: float = 600.0


# -- the world ------------------------------------------------------------------------------


def _number(index: int) -> tuple[str, str]:
    """The index-th line's number (E.164) and operator."""
    prefix, operator = PREFIXES[index % len(PREFIXES)]
    return f"+855{prefix}{1_000_000 + index // len(PREFIXES):07d}", operator


def _due_ids(lines: int, due: int) -> list[int]:
    """Line ids 1..lines; these are due, evenly spread."""
    step = lines // due
    return [step * k for k in range(1, due + 1)]


def _sim_state(e164: str, as_of: datetime) -> dict[str, Any]:
    """What SimulatedCarrier._ensure_line creates the first time it sees a number."""
    seed = int.from_bytes(hashlib.sha256(e164.encode()).digest()[:8], "big")
    return {"balance_minor": 50 + seed % 250, "currency": "USD", "data_mb": (seed >> 8) % 2048,
            "validity_end": as_of + timedelta(days=3 + (seed >> 16) % 28),
            "daily_spend_minor": 5 + (seed >> 24) % 16, "daily_data_mb": 50 + (seed >> 32) % 400}


# -- child: common ----------------------------------------------------------------------------


def _prepare_environment(job: Job) -> None:
    from tests.flow.recording import BOT_TOKEN

    for name in list(os.environ):
        if name.startswith(("SIM_", "PAYMENTS_", "WEBHOOK_", "SWEEP_")) or name in (
                "DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "TELEGRAM_API_BASE_URL",
                "ADMIN_CHAT_IDS"):
            del os.environ[name]
    os.environ.update(TELEGRAM_BOT_TOKEN=BOT_TOKEN, DATA_DIR=job.data_dir, LOG_LEVEL="WARNING")
    if job.database_url:
        os.environ["DATABASE_URL"] = job.database_url


class _LogCounter(logging.Handler):
    """Counts records at WARNING and above; keeps the first ERROR."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors = 0
        self.warnings: Counter[str] = Counter()
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            self.warnings[record.name] += 1
            return
        self.errors += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                self.first += f" ({record.exc_info[1]!r})"

    def problems(self) -> list[str]:
        return [f"{self.errors} errors logged, first: {self.first}"] if self.errors else []


def _log_counter() -> _LogCounter:
    counter = _LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger().setLevel(logging.WARNING)
    return counter


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, from /proc/stat ((0, 0) without)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def _postgres_processes() -> dict[int, tuple[int, list[str], str]]:
    """This machine's PostgreSQL processes: pid -> (parent pid, /proc stat fields after the
    name, process title)."""
    found: dict[int, tuple[int, list[str], str]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text()
            if text[text.index("(") + 1:text.rindex(")")] != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        fields = text[text.rindex(")") + 2:].split()
        found[int(entry.name)] = (int(fields[1]), fields, title)
    return found


def _postgres_cpu(database: str, port: int) -> tuple[float, list[str]]:
    """CPU seconds so far of the PostgreSQL server listening on ``port`` (every process,
    and through the postmaster the backends that exited), and the other databases its
    clients are using."""
    processes = _postgres_processes()
    masters = [pid for pid, (ppid, _f, _t) in processes.items() if ppid not in processes]
    ours = [pid for pid in masters if re.search(rf"(-p\s*|port=){port}\b", processes[pid][2])]
    if not ours and len(masters) == 1:
        ours = masters
    ticks = 0
    others: set[str] = set()
    for pid, (ppid, fields, title) in processes.items():
        if pid in ours:  # the postmaster, and what its exited children used
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        elif ppid in ours:
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
            words = title.split()  # a backend: "postgres: <user> <database> <client> ..."
            if len(words) >= 4 and "(" in words[3] and words[2] != database:
                others.add(words[2])
    return ticks / os.sysconf("SC_CLK_TCK"), sorted(others)


def _meters(url: str | None) -> tuple[list[float], list[str]]:
    """Machine busy and all jiffies, PostgreSQL CPU seconds; other databases in use."""
    busy, total = _machine_jiffies()
    if not url:
        return [busy, total, 0.0], []
    parsed = make_url(url)
    server, others = _postgres_cpu(parsed.database or "", parsed.port or 5432)
    return [busy, total, server], others


async def _components(job: Job) -> Any:
    """bot.wiring.build_components, and the schema as the bot's start-up leaves it."""
    from bot.app import prepare_database
    from bot.settings import load_settings
    from bot.wiring import build_components

    components = build_components(load_settings(env_file=None), worker=job.worker)
    await prepare_database(components)  # migrate.upgrade (a no-op at head), then dispose
    return components


async def _start_ours(job: Job) -> tuple[Any, Any, float]:
    """The bot's worker start-up (``topup-bot worker`` up to, not including, app.start():
    starting would run the pollers). Returns the components, the app and the seconds."""
    from bot.app import build_worker, freeze_start_up_objects
    from tests.flow.recording import RecordingRequest

    began = time.perf_counter()
    components = await _components(job)
    app = build_worker(components, RecordingRequest())
    await app.initialize()
    await components.charging.reconcile_on_start()
    freeze_start_up_objects()
    return components, app, time.perf_counter() - began


def _set_latency(components: Any, latency_ms: int) -> None:
    components.simulator.knobs = dataclasses.replace(components.simulator.knobs,
                                                   latency_ms=latency_ms)


async def _verify(components: Any, job: Job, since: float, *,
                  due_ids: list[int] | None = None) -> list[str]:
    """Every due line got exactly one reading recorded since ``since``, no other line any;
    no lease or failed read left; nothing still due."""
    from sqlalchemy import func, select

    from storage.tables import line_readings, lines

    due = set(due_ids if due_ids is not None else _due_ids(job.lines, job.due))
    since_at = datetime.fromtimestamp(since, UTC)
    now = components.clock.now()
    async with components.db.read() as conn:
        counts = dict((await conn.execute(
            select(line_readings.c.line_id, func.count())
            .where(line_readings.c.recorded_at >= since_at)
            .group_by(line_readings.c.line_id))).tuples().all())
        leased = (await conn.execute(select(func.count()).select_from(lines).where(
            lines.c.check_claimed_until.is_not(None)))).scalar_one()
        failing = (await conn.execute(select(func.count()).select_from(lines).where(
            lines.c.check_failures > 0))).scalar_one()
        still_due = (await conn.execute(select(func.count()).select_from(lines).where(
            lines.c.next_check_at <= now, lines.c.unbound_at.is_(None)))).scalar_one()
    problems: list[str] = []
    missing = len(due - counts.keys())
    twice = sum(1 for line_id in due if counts.get(line_id, 0) > 1)
    extra = len(counts.keys() - due)
    if missing:
        problems.append(f"{missing} of {len(due)} due lines got no new reading")
    if twice:
        problems.append(f"{twice} due lines got more than one new reading")
    if extra:
        problems.append(f"{extra} lines that were not due got a reading")
    if leased:
        problems.append(f"{leased} lines still leased")
    if failing:
        problems.append(f"{failing} lines with a failed read")
    if still_due:
        problems.append(f"{still_due} lines still due")
    return problems


# -- child: seed ----------------------------------------------------------------------------


async def _seed(job: Job) -> dict[str, Any]:
    from sqlalchemy import insert, text

    from bot.domain.phone import parse_cambodian_mobile
    from storage.tables import line_readings, lines, sim_lines, users

    counter = _log_counter()
    began = time.perf_counter()
    for index in sorted({0, job.lines - 1, *range(0, job.lines, 9_973)}):
        e164, operator = _number(index)
        parsed = parse_cambodian_mobile(e164)  # raises on an invalid number
        if parsed.e164 != e164 or parsed.operator.value != operator:
            raise AssertionError(f"{e164}: parsed as {parsed}, expected {operator}")
    components = await _components(job)
    cipher, db = components.cipher, components.db
    now = components.clock.now()
    earlier = now - EARLIER
    due = set(_due_ids(job.lines, job.due))
    build = write = 0.0
    for start in range(0, job.lines, SEED_CHUNK):
        t0 = time.perf_counter()
        user_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        sim_rows: list[dict[str, Any]] = []
        reading_rows: list[dict[str, Any]] = []
        for index in range(start, min(job.lines, start + SEED_CHUNK)):
            line_id, owner = index + 1, FIRST_USER + index
            e164, operator = _number(index)
            phone_enc, phone_index = cipher.encrypt(e164), cipher.blind_index(e164)
            if line_id in due:
                next_check = now - timedelta(seconds=1 + index % 3_600)
            else:
                next_check = now + timedelta(hours=1, seconds=(index * 7_919) % (6 * 86_400))
            user_rows.append({"id": owner, "language": "en", "created_at": earlier,
                              "updated_at": earlier})
            line_rows.append({
                "id": line_id, "owner_id": owner, "operator": operator,
                "phone_enc": phone_enc, "phone_index": phone_index,
                "verified_at": earlier - timedelta(days=30), "next_check_at": next_check,
                "created_at": earlier - timedelta(days=30), "updated_at": earlier})
            state = _sim_state(e164, earlier)
            sim_rows.append({"phone_index": phone_index, "phone_enc": phone_enc,
                             "operator": operator, "last_topup_at": None,
                             "data_expires_at": None, "as_of": earlier, "created_at": earlier,
                             **state})
            if line_id in due:
                reading_rows.append({
                    "line_id": line_id, "source": "provider", "read_at": earlier,
                    "balance_minor": state["balance_minor"], "currency": state["currency"],
                    "data_mb": state["data_mb"], "validity_end": state["validity_end"],
                    "recorded_at": earlier})
        t1 = time.perf_counter()
        async with db.write() as conn:
            await conn.execute(insert(users), user_rows)
            await conn.execute(insert(lines), line_rows)
            await conn.execute(insert(sim_lines), sim_rows)
            if reading_rows:
                await conn.execute(insert(line_readings), reading_rows)
        build += t1 - t0
        write += time.perf_counter() - t1
    if not db.is_sqlite:
        async with db.write() as conn:  # what autovacuum would have done by now
            await conn.execute(text("ANALYZE"))
    size_mb = await _database_mb(components)
    await db.dispose()
    return {"seconds": time.perf_counter() - began, "build_s": build, "write_s": write,
            "db_mb": size_mb, "problems": counter.problems()}


async def _database_mb(components: Any) -> float:
    from sqlalchemy import text

    if components.db.is_sqlite:
        path = Path(components.settings.storage.data_dir) / "topup.db"
        return sum(p.stat().st_size for p in path.parent.glob("topup.db*")) / 1e6
    async with components.db.read() as conn:
        size = (await conn.execute(text("SELECT pg_database_size(current_database())"))
                ).scalar_one()
    return float(size) / 1e6


# -- child: one sweep over every due line -----------------------------------------------------


async def _sweep(job: Job) -> dict[str, Any]:
    counter = _log_counter()
    components, app, start_up = await _start_ours(job)
    _set_latency(components, job.latency_ms)
    if job.reader == "memory":
        _use_memory_reader(components, job.latency_ms)
    scheduler = components.scheduler
    scheduler.settings = dataclasses.replace(scheduler.settings, budget=timedelta(hours=1),
                                             worker=job.worker)
    database_url = None if components.db.is_sqlite else components.settings.storage.url
    # An idle tick first (long ago: nothing is due then): connections, the claim statement.
    await scheduler.check_lines(now=components.clock.now() - timedelta(days=30))
    if job.wait_for_go:
        print("READY", flush=True)
        sys.stdin.readline()
    meters_before, others_before = _meters(database_url)
    since, cpu0, t0 = time.time(), _cpu_seconds(), time.perf_counter()
    processed = ticks = warnings = 0
    failures: Counter[str] = Counter()
    while True:
        report = await scheduler.check_lines()
        ticks += 1
        processed += report.processed
        warnings += report.warnings
        failures.update(report.failures)
        if report.processed == 0 or (not job.wait_for_go and processed >= job.due):
            break
    seconds = time.perf_counter() - t0
    ended = time.time()
    cpu = _cpu_seconds() - cpu0
    meters_after, others_after = _meters(database_url)
    problems = [] if job.wait_for_go else await _verify(components, job, since)
    if failures:
        problems.append(f"failed reads: {dict(failures)}")
    await app.shutdown()
    return {"processed": processed, "seconds": seconds, "since": since, "ended": ended,
            "ticks": ticks, "warnings": warnings, "cpu_s": cpu, "start_up_s": start_up,
            "meters": [*meters_before, *meters_after], "rss_mb": _rss_mb(),
            "other_databases": sorted({*others_before, *others_after}),
            "problems": problems + counter.problems()}


def _use_memory_reader(components: Any, latency_ms: int) -> None:
    """Diagnostic: the carrier's balance read answered from memory after the latency (what
    the simulator's read-only path returns, without its database query)."""
    from bot.domain.money import Money
    from bot.domain.operators import Operator
    from bot.domain.readings import LineReading, ReadingSource

    clock = components.clock

    async def read(phone_e164: str, operator: Operator) -> LineReading:
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        now = clock.now()
        state = _sim_state(phone_e164, now - EARLIER)
        return LineReading(source=ReadingSource.PROVIDER, read_at=now,
                           balance=Money(state["balance_minor"], state["currency"]),
                           data_mb=state["data_mb"], validity_end=state["validity_end"])

    components.simulator.read = read


async def _verify_only(job: Job) -> dict[str, Any]:
    counter = _log_counter()
    components = await _components(job)
    problems = await _verify(components, job, job.since)
    await components.db.dispose()
    return {"problems": problems + counter.problems()}


# -- child: the cost of one tick as the lines grow ------------------------------------------


class _Rollback(Exception):
    pass


async def _arm(components: Any, ids: list[int]) -> None:
    """Makes these lines due now (and unleased), as if their next check had come."""
    from sqlalchemy import update

    from storage.tables import lines

    at = components.clock.now() - timedelta(minutes=1)
    async with components.db.write() as conn:
        for start in range(0, len(ids), 500):
            await conn.execute(update(lines).where(lines.c.id.in_(ids[start:start + 500]))
                               .values(next_check_at=at, check_claimed_until=None))


async def _tick(job: Job) -> dict[str, Any]:
    from storage.lines import LinesRepository

    counter = _log_counter()
    components, app, start_up = await _start_ours(job)
    _set_latency(components, 0)
    scheduler = components.scheduler
    settings = scheduler.settings
    due = _due_ids(job.lines, job.due)
    problems: list[str] = []

    async def tick() -> tuple[float, float, int]:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        report = await scheduler.check_lines()
        return time.perf_counter() - t0, _cpu_seconds() - cpu0, report.processed

    first_s, _cpu, first_n = await tick()  # the seeded due lines; one-off costs
    idle = [(await tick())[0] for _ in range(IDLE_REPEATS)]
    await _arm(components, due)
    claims: list[float] = []
    for _ in range(CLAIM_REPEATS):
        try:
            async with components.db.write() as conn:
                now = components.clock.now()
                t0 = time.perf_counter()
                claimed = await LinesRepository(conn, components.cipher).claim_due_checks(
                    now, now + settings.lease, settings.batch)
                claims.append(time.perf_counter() - t0)
                raise _Rollback
        except _Rollback:
            pass
        if len(claimed) != min(settings.batch, len(due)):
            problems.append(f"a claim got {len(claimed)} lines")
    ticks: list[tuple[float, float, int]] = []
    since = 0.0
    for _ in range(TICK_REPEATS):
        await _arm(components, due)
        since = time.time()
        ticks.append(await tick())
    problems += await _verify(components, job, since, due_ids=due)
    for _seconds, _cpu, processed in [(first_s, 0.0, first_n), *ticks]:
        if processed != len(due):
            problems.append(f"a tick processed {processed} lines, {len(due)} were due")
    await app.shutdown()
    return {"start_up_s": start_up, "first_tick_s": first_s,
            "idle_s": statistics.median(idle), "claim_s": statistics.median(claims),
            "tick_s": statistics.median(t for t, _c, _n in ticks),
            "tick_cpu_s": statistics.median(c for _t, c, _n in ticks),
            "rss_mb": _rss_mb(), "problems": problems + counter.problems()}


# -- child: the baseline, one JobQueue job per line -------------------------------------------


async def _jobqueue(job: Job) -> dict[str, Any]:
    from sqlalchemy import select
    from telegram.ext import ApplicationBuilder, ContextTypes

    from bot.domain.operators import Operator
    from storage.readings import ReadingsRepository
    from storage.tables import lines
    from tests.flow.recording import BOT_TOKEN, RecordingRequest

    counter = _log_counter()
    importlib.import_module("bot.app")  # imported before the clock starts, as for ours
    began = time.perf_counter()
    components = await _components(job)
    request = RecordingRequest()
    app = (ApplicationBuilder().token(BOT_TOKEN).request(request)
           .get_updates_request(request).updater(None).build())
    await app.initialize()
    assert app.job_queue is not None
    carrier, db, clock = components.simulator, components.db, components.clock
    due = set(_due_ids(job.lines, job.due))
    done = asyncio.Event()
    finished: list[float] = []

    async def check_line(context: ContextTypes.DEFAULT_TYPE) -> None:
        """Per line: read it through the carrier, store the reading in its own transaction."""
        assert context.job is not None
        line_id, e164, operator = cast("tuple[int, str, Operator]", context.job.data)
        reading = await carrier.read(e164, operator)
        async with db.write() as conn:
            await ReadingsRepository(conn).add(line_id, reading, recorded_at=clock.now())
        finished.append(time.perf_counter())
        if len(finished) >= len(due):
            done.set()

    # Start-up: every line loaded (numbers decrypted), one repeating job each, queue started.
    t_load = time.perf_counter()
    async with db.read() as conn:
        rows = (await conn.execute(select(
            lines.c.id, lines.c.owner_id, lines.c.operator, lines.c.phone_enc,
            lines.c.next_check_at).where(lines.c.unbound_at.is_(None)))).tuples().all()
    loaded = [(line_id, owner, Operator(operator), components.cipher.decrypt(phone_enc), at)
              for line_id, owner, operator, phone_enc, at in rows]
    del rows
    t_schedule = time.perf_counter()
    later = clock.now() + timedelta(days=1)  # the due lines' jobs are moved to "now" below
    due_jobs = []
    for line_id, owner, operator, e164, at in loaded:
        scheduled = app.job_queue.run_repeating(
            check_line, interval=HEALTHY_INTERVAL, first=later if line_id in due else at,
            data=(line_id, e164, operator), name=f"line {line_id}", chat_id=owner,
            user_id=owner, job_kwargs={"misfire_grace_time": None})
        if line_id in due:
            due_jobs.append(scheduled)
    del loaded
    t_start = time.perf_counter()
    await app.start()  # job_queue.start(): the pending jobs enter APScheduler's job store
    started = time.perf_counter()
    startup = {"start_up_s": started - began, "load_s": t_schedule - t_load,
               "schedule_s": t_start - t_schedule, "queue_start_s": started - t_start}

    # One tick: the due lines' jobs all due at once (moved while the scheduler is paused).
    scheduler: Any = app.job_queue.scheduler
    bookkeeping: list[float] = []
    process_jobs = scheduler._process_jobs

    def timed_process_jobs() -> Any:
        t0 = time.perf_counter()
        try:
            return process_jobs()
        finally:
            bookkeeping.append(time.perf_counter() - t0)

    scheduler._process_jobs = timed_process_jobs
    scheduler.pause()
    fire_at = datetime.now(UTC)
    for scheduled in due_jobs:
        scheduled.job.modify(next_run_time=fire_at)
    await asyncio.sleep(0)  # the wake-ups the changes queued run (and return: paused)
    bookkeeping.clear()
    since, cpu0, t0 = time.time(), _cpu_seconds(), time.perf_counter()
    scheduler.resume()
    problems: list[str] = []
    try:
        await asyncio.wait_for(done.wait(), timeout=job.timeout_s / 2)
    except TimeoutError:
        problems.append(f"timed out: {len(finished)} of {len(due)} jobs done")
    tick = (max(finished) if finished else time.perf_counter()) - t0
    cpu = _cpu_seconds() - cpu0
    await app.stop()
    await app.shutdown()
    problems += await _verify_readings_only(components, due, since)
    await db.dispose()
    return {**startup, "tick_s": tick, "tick_cpu_s": cpu, "aps_s": sum(bookkeeping),
            "rss_mb": _rss_mb(), "problems": problems + counter.problems()}


async def _verify_readings_only(components: Any, due: set[int], since: float) -> list[str]:
    from sqlalchemy import func, select

    from storage.tables import line_readings

    async with components.db.read() as conn:
        counts = dict((await conn.execute(
            select(line_readings.c.line_id, func.count())
            .where(line_readings.c.recorded_at >= datetime.fromtimestamp(since, UTC))
            .group_by(line_readings.c.line_id))).tuples().all())
    problems = []
    if set(counts) != due or any(count != 1 for count in counts.values()):
        problems.append(f"readings: {sum(1 for i in due if counts.get(i) == 1)} of {len(due)} "
                        f"due lines with exactly one, {len(counts.keys() - due)} other lines")
    return problems


def _child(job_json: str) -> None:
    job = Job(**json.loads(job_json))
    _prepare_environment(job)
    runner = {"seed": _seed, "sweep": _sweep, "tick": _tick, "jobqueue": _jobqueue,
              "verify": _verify_only}[job.mode]
    result = asyncio.run(runner(job))
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------


@dataclass
class Outcome:
    result: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def _command(job: Job) -> list[str]:
    return [sys.executable, "-m", "bench.sweep", "--child", json.dumps(dataclasses.asdict(job))]


def _parse(stdout: str, stderr: str, returncode: int | None) -> Outcome:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT "):])
            return Outcome(result, list(result.get("problems", [])))
    tail = (stderr or stdout).strip().splitlines()[-6:]
    return Outcome({}, [f"child exited {returncode}: " + " | ".join(tail)])


def _run(job: Job) -> Outcome:
    try:
        completed = subprocess.run(_command(job), capture_output=True, text=True,
                                   timeout=job.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Outcome({}, [f"child timed out after {job.timeout_s:.0f} s"])
    return _parse(completed.stdout, completed.stderr, completed.returncode)


def _run_together(jobs: list[Job]) -> list[Outcome]:
    """Worker children started together: each prepares, says READY, and waits for "go"."""
    with contextlib.ExitStack() as stack:
        return _run_started(jobs, stack)


def _run_started(jobs: list[Job], stack: contextlib.ExitStack) -> list[Outcome]:
    procs: list[tuple[subprocess.Popen[str], Any]] = []
    for job in jobs:
        errors = stack.enter_context(tempfile.TemporaryFile(mode="w+"))  # noqa: SIM115
        procs.append((subprocess.Popen(_command(job), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=errors, text=True),
                      errors))
    ready = True
    for proc, _errors in procs:
        assert proc.stdout is not None
        ready &= proc.stdout.readline().strip() == "READY"
    for proc, _errors in procs:
        assert proc.stdin is not None
        if ready:
            proc.stdin.write("go\n")
            proc.stdin.flush()  # communicate() below closes it
        else:
            proc.kill()
    outcomes: list[Outcome] = []
    for (proc, errors), job in zip(procs, jobs, strict=True):
        try:
            stdout, _ = proc.communicate(timeout=job.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
        errors.seek(0)
        outcomes.append(_parse(stdout, errors.read(), proc.returncode))
    return outcomes


class Phases:
    """Prints each phase as it starts and how long it took."""

    def __init__(self) -> None:
        self.began = time.perf_counter()

    def run(self, label: str, action: Any) -> Any:
        print(f"  {label} ...", end="", flush=True)
        t0 = time.perf_counter()
        outcome = action()
        print(f" {time.perf_counter() - t0:.1f} s", flush=True)
        return outcome


def _seed_label(lines: int, due: int, backend: str) -> str:
    return f"seed {lines:,} lines ({due:,} due) on {backend}"


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# -- PostgreSQL -------------------------------------------------------------------------------


def _admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


async def _pg_admin(url: str, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    admin = await asyncpg.connect(_admin_dsn(url))
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


def _start_postgres() -> tuple[str, str, str] | None:
    """A throwaway server as tests/run.sh starts one: (url, PG_DIR, PG_BIN), or None."""
    script = ('source tests/postgres.sh && start_postgres >&2 && '
              'printf "%s\\n%s\\n%s\\n" "$TEST_POSTGRES_URL" "$PG_DIR" "$PG_BIN"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False,
                          timeout=300)
    out = done.stdout.split()
    if done.returncode != 0 or len(out) != 3:
        print(f"  could not start PostgreSQL: {done.stderr.strip()[-300:]}")
        return None
    return out[0], out[1], out[2]


def _stop_postgres(pg_dir: str, pg_bin: str) -> None:
    subprocess.run(["bash", "-c", "source tests/postgres.sh && stop_postgres"],
                   env={**os.environ, "PG_DIR": pg_dir, "PG_BIN": pg_bin},
                   capture_output=True, check=False, timeout=120)


def _pg_label(workers: int, reader: str) -> str:
    label = f"postgres, {CARRIER_LATENCY_MS} ms, {workers} worker{'s' * (workers > 1)}"
    return label + (", in-memory reads" if reader == "memory" else "")


PG_RUNS = ((1, "simulated"), (2, "simulated"), (1, "memory"), (2, "memory"))


def _postgres_runs(url: str, root: Path, lines: int, due: int, wanted: set[str],
                   phases: Phases) -> tuple[dict[str, Outcome], dict[str, Any]]:
    """Seeds one database and copies it (CREATE DATABASE ... TEMPLATE), one per run; each
    run's workers start together on their own copy."""
    runs = [(workers, reader) for workers, reader in PG_RUNS
            if _pg_label(workers, reader) in wanted]
    names = [f"topup_bench_{uuid.uuid4().hex[:10]}" for _ in runs]
    data_dir = root / "pg"
    outcomes: dict[str, Outcome] = {}
    seed_info: dict[str, Any] = {}
    created: list[str] = []
    try:
        asyncio.run(_pg_admin(url, f'CREATE DATABASE "{names[0]}"'))
        created.append(names[0])
        first = _with_database(url, names[0])
        seed = phases.run(_seed_label(lines, due, "PostgreSQL"), lambda: _run(Job(
            "seed", str(data_dir), lines, due, database_url=first, timeout_s=900)))
        seed_info = seed.result
        if seed.problems:
            outcomes[_pg_label(*runs[0])] = seed
            return outcomes, seed_info
        for name in names[1:]:
            asyncio.run(_pg_admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{names[0]}"'))
            created.append(name)
        for (workers, reader), name in zip(runs, names, strict=True):
            db_url = _with_database(url, name)
            label = _pg_label(workers, reader)
            jobs = [Job("sweep", str(data_dir), lines, due, database_url=db_url,
                        latency_ms=CARRIER_LATENCY_MS, worker=f"bench-{n + 1}",
                        wait_for_go=True, reader=reader, timeout_s=600)
                    for n in range(workers)]
            together = phases.run(f"running {label}", lambda jobs=jobs: _run_together(jobs))
            outcomes[label] = _combine(together)
            if outcomes[label].result:
                since = outcomes[label].result["since"]
                check = phases.run(f"verifying {label}", lambda db_url=db_url, since=since: _run(
                    Job("verify", str(data_dir), lines, due, database_url=db_url,
                        since=since)))
                outcomes[label].problems += check.problems
    finally:
        for name in created:
            asyncio.run(_pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return outcomes, seed_info


def _combine(runs: list[Outcome]) -> Outcome:
    """Worker processes as one run: from the first start to the last end."""
    problems = [p for run in runs for p in run.problems]
    results = [run.result for run in runs if run.result]
    if len(results) != len(runs):
        return Outcome({}, problems)
    first = min(results, key=lambda r: r["since"])
    last = max(results, key=lambda r: r["ended"])
    return Outcome({"processed": sum(r["processed"] for r in results),
                    "seconds": last["ended"] - first["since"], "since": first["since"],
                    "cpu_s": sum(r["cpu_s"] for r in results),
                    "meters": [*first["meters"][:3], *last["meters"][3:]],
                    "rss_mb": max(r["rss_mb"] for r in results),
                    "start_up_s": max(r["start_up_s"] for r in results),
                    "per_worker": [r["processed"] for r in results],
                    "other_databases": sorted({d for r in results
                                               for d in r["other_databases"]})}, problems)


def _machine_busy(result: dict[str, Any]) -> float | None:
    """The share of all the machine's cores that was busy during the run."""
    busy0, total0, _db0, busy1, total1, _db1 = result.get("meters") or [0] * 6
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else None


# -- report ---------------------------------------------------------------------------------


def _load_note() -> str:
    one, _five, _fifteen = os.getloadavg()
    busy = " - the machine is busy: figures will be low and noisy" if one > 0.5 else ""
    return f"load average {one:.2f}{busy}"


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base or value != value or base != base:
        return "-"
    return f"{value / base:.3g}x"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _short(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n % 1000 == 0 else str(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or a run is wrong")
    parser.add_argument("--only", help="run only the scenarios whose name contains this "
                        "(and what they are compared with)")
    parser.add_argument("--max-lines", type=int, default=TICK_SIZES[-1],
                        help="largest tick scenario (default 1,000,000; its seeding takes "
                        "about 1.5 minutes)")
    parser.add_argument("--lines", type=int, default=SWEEP_LINES,
                        help=f"lines in the sweep scenarios (default {SWEEP_LINES:,})")
    parser.add_argument("--due", type=int, default=SWEEP_DUE,
                        help=f"due lines in the sweep scenarios (default {SWEEP_DUE:,})")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL (as tests/run.sh does) when "
                        "TEST_POSTGRES_URL is not set")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0

    import telegram

    lines, due = args.lines, args.due
    sweep_names = [f"sqlite, {lat} ms carrier" for lat in (0, CARRIER_LATENCY_MS)]
    sizes = [n for n in TICK_SIZES if n <= args.max_lines]
    tick_names = {n: f"tick {n:,} lines" for n in sizes}
    base_names = {n: f"jobqueue {n:,} lines" for n in BASELINE_SIZES if n in sizes}
    pg_names = [_pg_label(workers, reader) for workers, reader in PG_RUNS]
    every = [*sweep_names, *tick_names.values(), *base_names.values(), *pg_names]
    wanted = {name for name in every if not args.only or args.only in name}
    wanted |= {tick_names[n] for n, name in base_names.items() if name in wanted}
    for workers, reader in PG_RUNS:  # two workers are compared with one
        if workers == 2 and _pg_label(workers, reader) in wanted:
            wanted.add(_pg_label(1, reader))

    pg_url = os.environ.get("TEST_POSTGRES_URL", "")
    postgres = ("TEST_POSTGRES_URL" if pg_url else "a throwaway server (--postgres)"
                if args.postgres else "not set, skipped")
    print(f"bench.sweep: {os.cpu_count()} cores ({platform.machine()}), Python "
          f"{platform.python_version()}, python-telegram-bot {telegram.__version__}, SQLite "
          f"{sqlite3.sqlite_version}; PostgreSQL: {postgres}")
    print("world: a user per line; valid Cambodian mobiles over 8 prefixes (Cellcard, Smart, "
          "Metfone, Seatel), encrypted and blind-indexed by the bot's cipher; due lines spread "
          "over the ids, next check up to 1 h ago, the rest 1 h to 6 days ahead")
    print("warm: every line's sim_lines row PRE-CREATED (the simulator's first-sight state, "
          "6 h old: a read is its read-only path) and one earlier reading per due line; "
          "SweepSettings as configured (batch 500, concurrency 128), the tick budget raised "
          "to 1 h so one tick sweeps everything due")
    print(f"before: {_load_note()}")
    print()

    phases = Phases()
    sweeps: dict[str, Outcome] = {}
    ticks: dict[int, Outcome] = {}
    bases: dict[int, Outcome] = {}
    seeds: dict[str, dict[str, Any]] = {}
    pg: dict[str, Outcome] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        if wanted & set(sweep_names):
            seed_dir = root / "sweep-seed"
            seed = phases.run(_seed_label(lines, due, "SQLite"), lambda: _run(
                Job("seed", str(seed_dir), lines, due)))
            seeds[f"{_short(lines)} lines, {_short(due)} due (SQLite)"] = seed.result
            for latency, name in zip((0, CARRIER_LATENCY_MS), sweep_names, strict=True):
                if name not in wanted:
                    continue
                if seed.problems:
                    sweeps[name] = seed
                    continue
                data_dir = _copy(seed_dir, root / f"sweep-{latency}")
                sweeps[name] = phases.run(f"running {name}", lambda d=data_dir, lat=latency: _run(
                    Job("sweep", str(d), lines, due, latency_ms=lat)))
                shutil.rmtree(data_dir)
            shutil.rmtree(seed_dir)
        for n in sizes:
            if tick_names[n] not in wanted and base_names.get(n) not in wanted:
                continue
            data_dir = root / f"tick-{n}"
            seed = phases.run(_seed_label(n, TICK_DUE, "SQLite"), lambda d=data_dir, n=n: _run(
                Job("seed", str(d), n, TICK_DUE, timeout_s=900)))
            seeds[f"{_short(n)} lines, {_short(TICK_DUE)} due (SQLite)"] = seed.result
            if seed.problems:
                ticks[n] = seed
                shutil.rmtree(data_dir, ignore_errors=True)
                continue
            if tick_names[n] in wanted:
                ticks[n] = phases.run(f"running {tick_names[n]}", lambda d=data_dir, n=n: _run(
                    Job("tick", str(d), n, TICK_DUE)))
            if base_names.get(n) in wanted:
                bases[n] = phases.run(f"running {base_names[n]}", lambda d=data_dir, n=n: _run(
                    Job("jobqueue", str(d), n, TICK_DUE)))
            shutil.rmtree(data_dir)
        if wanted & set(pg_names):
            server: tuple[str, str, str] | None = None
            if not pg_url and args.postgres:
                server = phases.run("starting a throwaway PostgreSQL", _start_postgres)
                pg_url = server[0] if server else ""
            if pg_url:
                try:
                    pg, seed_info = _postgres_runs(pg_url, root, lines, due, wanted,
                                                   phases)
                    seeds[f"{_short(lines)} lines, {_short(due)} due (PostgreSQL)"] = seed_info
                finally:
                    if server:
                        _stop_postgres(server[1], server[2])
            else:
                notes.append("  postgres: skipped (set TEST_POSTGRES_URL, e.g. `source "
                             "/tmp/pgenv`, or pass --postgres)")

    failed = _report(sweeps, ticks, bases, pg, seeds, lines, due, notes)
    print(f"after: {_load_note()}; total {time.perf_counter() - phases.began:.0f} s")
    return 1 if (args.check and failed) else 0


def _report(sweeps: dict[str, Outcome], ticks: dict[int, Outcome], bases: dict[int, Outcome],
            pg: dict[str, Outcome], seeds: dict[str, dict[str, Any]], lines: int, due: int,
            notes: list[str]) -> bool:
    failed = False
    if seeds:
        print()
        print("seeding (not measured): " + "; ".join(
            f"{name} {info.get('seconds', float('nan')):.1f} s "
            f"({info.get('db_mb', float('nan')):.0f} MB)" for name, info in seeds.items()))

    targets = {"sqlite, 0 ms carrier": TARGET_RATE_0MS,
               f"sqlite, {CARRIER_LATENCY_MS} ms carrier": TARGET_RATE_50MS}
    if sweeps or pg:
        print()
        print(f"One sweep over every due line ({lines:,} lines, {due:,} due)")
        header = (f"{'scenario':<46} {'seconds':>7} {'lines/s':>8} {'CPU ms/line':>11} "
                  f"{'DB CPU ms/line':>14} {'machine busy':>12} {'RSS MB':>6} "
                  f"{'start-up ms':>11}  result")
        print(header)
        print("-" * len(header))
        for name, outcome in [*sweeps.items(), *pg.items()]:
            r = outcome.result
            misses = list(outcome.problems)
            rate = r["processed"] / r["seconds"] if r.get("seconds") else 0.0
            target = targets.get(name)
            if r and target and rate < target:
                misses.append(f"{rate:.0f} lines/s, target >= {target:.0f}")
            if r and name in targets and r["rss_mb"] >= TARGET_RSS_MB:
                misses.append(f"peak RSS {r['rss_mb']:.0f} MB, target < {TARGET_RSS_MB:.0f}")
            if r and r.get("processed") != due:
                misses.append(f"processed {r.get('processed')} of {due}")
            verdict = "FAIL" if misses else ("PASS" if target else "ok")
            failed |= verdict == "FAIL"
            if not r:
                print(f"{name:<46} {'-':>7}  {verdict}")
            else:
                processed = max(1, r["processed"])
                meters = r["meters"]
                db_cpu = (f"{1000 * (meters[5] - meters[2]) / processed:.3f}"
                          if name.startswith("postgres") and meters[5] > 0 else "-")
                busy = _machine_busy(r)
                print(f"{name:<46} {r['seconds']:>7.2f} {rate:>8.0f} "
                      f"{1000 * r['cpu_s'] / processed:>11.3f} {db_cpu:>14} "
                      f"{'-' if busy is None else f'{busy:.0%}':>12} {r['rss_mb']:>6.0f} "
                      f"{_ms(r.get('start_up_s')):>11}  {verdict}")
            notes.extend(f"  {name}: {miss}" for miss in misses)
            if r.get("other_databases"):
                notes.append(f"  {name}: other clients used the PostgreSQL server meanwhile "
                             f"(databases {', '.join(r['other_databases'])}): its CPU and "
                             "this run's figures include their load")
        for reader in ("simulated", "memory"):
            one, two = pg.get(_pg_label(1, reader)), pg.get(_pg_label(2, reader))
            if not (one and two and one.result and two.result):
                continue
            r1 = one.result["processed"] / one.result["seconds"]
            r2 = two.result["processed"] / two.result["seconds"]
            if reader == "simulated":
                ok = r2 >= TARGET_PG_SCALING * r1 and not one.problems and not two.problems
                failed |= not ok
                busy = _machine_busy(two.result)
                if not ok and busy is not None and busy >= 0.85:
                    notes.append(f"  postgres: the machine's cores were {busy:.0%} busy with "
                                 "two workers: CPU-bound (workers, server and the simulator's "
                                 "reads share them); the in-memory rows show the sweep alone")
                verdict = f"(target >= {TARGET_PG_SCALING}x) {'PASS' if ok else 'FAIL'}"
            else:
                verdict = "(diagnostic: the carrier's reads answered from memory)"
            print(f"postgres{', in-memory reads' if reader == 'memory' else ''}: 2 workers / "
                  f"1 worker = {r2 / r1:.2f}x {verdict}; lines per worker "
                  f"{two.result['per_worker']}")
        print(f"targets (SQLite): >= {TARGET_RATE_0MS:.0f} lines/s at 0 ms, >= "
              f"{TARGET_RATE_50MS:.0f} at {CARRIER_LATENCY_MS} ms, peak RSS < "
              f"{TARGET_RSS_MB:.0f} MB. CPU: the worker processes' own (all threads); DB CPU: "
              "the PostgreSQL server's processes; machine busy: of all cores, from /proc/stat. "
              "start-up: migrate check + worker app + initialize; RSS: the whole worker "
              "process (the largest one)")

    if ticks:
        print()
        print(f"The cost of one tick as the lines grow ({TICK_DUE:,} due at every size, "
              "carrier at 0 ms; medians)")
        header = (f"{'lines':>10} {'start-up ms':>11} {'idle tick ms':>12} "
                  f"{'claim 500 ms':>12} {'tick ms':>9} {'tick CPU ms':>11} "
                  f"{'first tick ms':>13} {'RSS MB':>6}")
        print(header)
        print("-" * len(header))
        for n, outcome in ticks.items():
            r = outcome.result
            if not r:
                print(f"{n:>10,} {'-':>11}  FAIL")
            else:
                print(f"{n:>10,} {_ms(r['start_up_s']):>11} {_ms(r['idle_s']):>12} "
                      f"{_ms(r['claim_s']):>12} {_ms(r['tick_s']):>9} "
                      f"{_ms(r['tick_cpu_s']):>11} {_ms(r['first_tick_s']):>13} "
                      f"{r['rss_mb']:>6.0f}")
            failed |= bool(outcome.problems)
            notes.extend(f"  tick {n:,} lines: {p}" for p in outcome.problems)
        measured = [n for n, o in ticks.items() if o.result]
        if len(measured) >= 2:
            low, high = ticks[measured[0]].result, ticks[measured[-1]].result
            growth = {key: high[key] / low[key] for key in ("tick_s", "claim_s", "idle_s",
                                                              "rss_mb")}
            ok = growth["tick_s"] <= FLAT_MAX
            failed |= not ok
            print(f"growth {_short(measured[0])} -> {_short(measured[-1])} lines: tick "
                  f"{growth['tick_s']:.2f}x, claim {growth['claim_s']:.2f}x, idle tick "
                  f"{growth['idle_s']:.2f}x, RSS {growth['rss_mb']:.2f}x (target: tick <= "
                  f"{FLAT_MAX}x) {'PASS' if ok else 'FAIL'}")
        print("idle tick: check_lines with nothing due; claim: one batch claimed (select, "
              "lease, decrypt) and rolled back; tick: check_lines over the due lines "
              f"(median of {TICK_REPEATS}); first tick: the first one, with one-off costs")

    if bases:
        print()
        print(f"Baseline: one JobQueue run_repeating job per line (timerbot's pattern), the "
              f"same {TICK_DUE:,} lines' jobs due at once, carrier at 0 ms")
        header = (f"{'lines':>10} {'start-up ms':>11} {'load ms':>9} {'schedule ms':>11} "
                  f"{'tick ms':>9} {'APScheduler ms':>14} {'tick CPU ms':>11} {'RSS MB':>6}"
                  f"   ours÷jobqueue: {'start-up':>8} {'tick':>7} {'RSS':>7}")
        print(header)
        print("-" * len(header))
        for n, outcome in bases.items():
            r = outcome.result
            ours = ticks[n].result if n in ticks else {}
            if not r:
                print(f"{n:>10,} {'-':>11}  FAIL")
            else:
                schedule = r["schedule_s"] + r["queue_start_s"]
                print(f"{n:>10,} {_ms(r['start_up_s']):>11} {_ms(r['load_s']):>9} "
                      f"{_ms(schedule):>11} {_ms(r['tick_s']):>9} {_ms(r['aps_s']):>14} "
                      f"{_ms(r['tick_cpu_s']):>11} {r['rss_mb']:>6.0f}   {'':>15}"
                      f"{_ratio(ours.get('start_up_s'), r['start_up_s']):>8} "
                      f"{_ratio(ours.get('tick_s'), r['tick_s']):>7} "
                      f"{_ratio(ours.get('rss_mb'), r['rss_mb']):>7}")
            failed |= bool(outcome.problems)
            notes.extend(f"  jobqueue {n:,} lines: {p}" for p in outcome.problems)
        print("start-up: migrate check + app + initialize, then load every line (decrypting "
              "its number), run_repeating per line, job queue started. load and schedule are "
              "parts of it. tick: from the scheduler resuming to the last job done; "
              "APScheduler: its own bookkeeping in that time. Its jobs do less than a sweep "
              "(no warnings, no next check) and have no concurrency bound")

    if notes:
        print()
        print("notes:")
        print("\n".join(notes))
    return failed


if __name__ == "__main__":
    sys.exit(main())
