"""Bakong KHQR payment detection: 1,000 open KHQRs polled by the bot's own poller through the
real Bakong adapter against the local fake, beside a poller that asks once per QR, and a
short run under a rate limit.

Run from the project root:  python -m bench.khqr  [--check] [--qrs 1000] [--latency-ms 50]
                            [--seed 1] [--baseline-minutes 5] [--frozen-clock] [--sequential]
                            [--only bulk,per-qr,rate-limited]

**Runs**, each a child process (``--child``) with a fresh SQLite database and the fake
(``tests.fakes.bakong.FakeBakong``, real HTTP on 127.0.0.1, ``latency_seconds`` real) in a
process of its own (``--fake``), so that the fake takes neither the bot's GIL nor its core:
  bulk          ``KhqrService`` as the bot runs it: ``BakongGateway``, up to 50 MD5s per
                ``check_transaction_by_md5_list`` call.
  per-qr        the baseline: the same service and scenario with ``OneCallPerQr`` as its
                ``KhqrChecks``: ``paid_among`` asks ``transaction(md5)`` for every MD5
                (``check_transaction_by_md5``: one HTTP call per QR per check, the calls of a
                chunk in flight together), what a poller without the bulk endpoint does. It
                does so for the first ``--baseline-minutes`` (5; 0: the whole run), the
                busiest part, when every QR is open; then the bulk calls take over so that the
                run still ends with every payment credited (about 44,000 single calls for the
                whole run took ~3 minutes of one core here).
  rate-limited  ``bulk`` on 300 QRs (6 calls a round) with the fake's ``rate_limit`` at 4
                requests per 20 s: 429s with Retry-After, the poller's pause, and every
                payment still credited once.
per-qr runs beside the other two (one core each) unless ``--sequential``.

**The scenario** (one ``--seed``, the same in every run): ``--qrs`` KHQRs issued at t0 by
``KhqrService.issue`` (3 per user, the limit; amounts drawn from ``quotes()``), expiry 15
minutes, grace 30, ``KHQR_POLL_SECONDS`` 5. Each QR is paid (``FakeBakong.pay(payload,
at=...)``, visible from ``at``) at a uniformly random moment of its life with probability
0.85, in the 5 minutes after its expiry with 0.03 (late, still to be credited), never
otherwise. ``KhqrService.poll()`` runs every 5 simulated seconds, as the JobQueue's repeating
job does, until no QR is polled any more (the last stop at expiry + grace).

**Simulated time** (``RoundClock``, a ``bot.clock.ManualClock``), shared with the fake's
process: between rounds it stands still and the driver sets the next round's start (t0 +
k x 5 s, the JobQueue's fixed-rate interval; when a round overruns its slot the next starts
late, and is counted); during a round it runs at the real rate, so the round's HTTP calls
(50 ms each, real) and database writes take the time they take, as on ``SystemClock``.
``--frozen-clock`` stops it during rounds too: each round happens at its scheduled instant
(the idealised poller, for comparison). Delays are simulated seconds; wall ms are real.

**Printed.** Calls: rounds (that called Bakong, that started late), bulk and single calls
per round (max; mean over the rounds that called) from the fake's request log, calls and
MD5s answered in all, MD5s per call, wall time of the rounds that called (p50/p99, real),
the busiest round; for the whole run and, beside per-qr, for the same first minutes of the
bulk run. Delays, by the QR's age when paid (under 3 minutes: checked every
``KHQR_POLL_SECONDS`` by design; 3-15 minutes: every 2x; after expiry: every 12x) and in
all: from the payment (the moment it became visible at Bakong) to its credit
(``khqr_invoices.paid_at``, the ``wallet_payments`` row's time), p50/p99/max, and to the
start of the round that found it (p99/max: what the design's intervals bound; the rest is
the round's own work); the design's interval; the observed interval between two answered
checks of one QR in that band. Credits: payments made, QRs paid (and those paid before
expiry but found after: told "expired", then a receipt saying it was paid after expiry),
``wallet_payments`` rows, receipts, ledger credits, the most per payment; the last check
after expiry; each child's real time, CPU and peak RSS. The rate-limited run's 429s
(answered by the fake, seen by the poller), paused rounds (no call: a 429's pause was on) and the
longest any QR went without an answer.

**Targets** (``--check`` exits 1 when one is missed): in every run each payment credited
exactly once (payments made = QRs paid = ``wallet_payments`` = receipts = ledger credits,
one per payment, of the QR's amount), none still polled at the end, no check later than
expiry + grace + a round; rate-limited: 429s seen as answered, rounds paused with no call;
bulk: at most ceil(QRs / 50) + 1 bulk calls in a round and no single call; the bulk run's
checks over the per-qr minutes at least 40 x its calls (one call per QR would make one call
a check; the raw per-qr / bulk call counts are printed too, but a busy machine lets the
per-qr rounds fall behind their schedule, so they measure the machine as much as the
design); the bulk run's detection within the design's promise: in each age band every
payment found by a round that began at most that band's interval after it, and over the
payments made during a QR's life p99 of that at most 2 x KHQR_POLL_SECONDS.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import importlib
import itertools
import json
import logging
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.children import Result, child_main, close_child, parse_or_serve, run_child
from bot.clock import ManualClock
from bot.gateways.bakong import BULK_LIMIT, BakongGateway, BakongTransaction, KhqrChecks

RUNS = ("bulk", "per-qr", "rate-limited")
BULK_PATH = "/v1/check_transaction_by_md5_list"
SINGLE_PATH = "/v1/check_transaction_by_md5"
START = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # t0: every QR is issued then
ACCOUNT = "topupbot@aclb"
TOKEN = "bench-developer-token"  # noqa: S105 - the fake's, nobody else's
FIRST_USER = 800_000_000
PAID_SHARE = 0.85  # of the QRs, paid at a random moment of their life
LATE_SHARE = 0.03  # paid within LATE_WINDOW after their expiry
LATE_WINDOW = timedelta(minutes=5)
YOUNG = timedelta(minutes=3)  # KhqrService._interval: every poll_seconds below this age
TARGET_RATIO = 40.0  # checks per bulk call (one call per QR: 1), at least
BASELINE_MINUTES = 5.0
RATE_LIMITED_QRS = 300  # 6 bulk calls a round ...
RATE_LIMIT = (4, 20.0)  # ... against 4 requests per 20 s
TOLERANCE_S = 0.01  # of the delay targets (round starts are exact multiples of 5 s)
EXPECTED_WARNING = "bot.services.khqr"  # its 429 warnings, expected in the rate-limited run


@dataclass(frozen=True)
class Job:
    """What one child process does."""

    run: str  # one of RUNS
    qrs: int
    latency_ms: float
    seed: int
    poll_seconds: int
    frozen_clock: bool = False
    rate_limit: tuple[int, float] | None = None
    per_qr_minutes: float = 0.0  # per-qr: one call per QR this long, then bulk (0: always)
    timeout_s: float = 900.0


# -- simulated time -------------------------------------------------------------------------


class RoundClock(ManualClock):
    """Simulated time: still between rounds (the driver sets the next round's start), at
    the real rate during a round (``start_round``/``end_round``) unless ``frozen``. The
    running part is counted on ``time.monotonic()``, one clock for every process of the
    machine, so the fake's process reads the same now from (base, since)."""

    def __init__(self, start: datetime, *, frozen: bool) -> None:
        super().__init__(start)
        self._frozen = frozen
        self.since: float | None = None  # monotonic() when the running round began

    def now(self) -> datetime:
        base = super().now()
        since = self.since
        if since is None:
            return base
        return base + timedelta(seconds=time.monotonic() - since)

    def base(self) -> datetime:
        return super().now()

    def start_round(self) -> None:
        if not self._frozen:
            self.since = time.monotonic()

    def end_round(self) -> None:
        if self.since is not None:
            moment = self.now()
            self.since = None
            self.set(moment)


class _SharedClock:
    """The fake process's side of ``RoundClock``: (base, since) as the driver last said."""

    def __init__(self, start: datetime) -> None:
        self._state: tuple[datetime, float | None] = (start, None)

    def move(self, base: datetime, since: float | None) -> None:
        self._state = (base, since)  # one assignment: the server's thread sees either

    def now(self) -> datetime:
        base, since = self._state
        return base if since is None else base + timedelta(seconds=time.monotonic() - since)


# -- the baseline's checks ------------------------------------------------------------------


class OneCallPerQr:
    """``KhqrChecks`` without the bulk endpoint: ``paid_among`` asks ``transaction(md5)``
    for each MD5 (one HTTP call per QR, the chunk's calls in flight together) while
    ``per_qr()`` says so; the gateway's bulk call after that."""

    def __init__(self, gateway: BakongGateway, per_qr: Callable[[], bool]) -> None:
        self._gateway = gateway
        self._per_qr = per_qr

    async def paid_among(self, md5s: Sequence[str]) -> dict[str, BakongTransaction | None]:
        if not self._per_qr():
            return await self._gateway.paid_among(md5s)
        found = await asyncio.gather(*(self._gateway.transaction(md5) for md5 in md5s))
        return {md5: transaction for md5, transaction in zip(md5s, found, strict=True)
                if transaction is not None}

    async def transaction(self, md5: str) -> BakongTransaction | None:
        return await self._gateway.transaction(md5)

    async def aclose(self) -> None:
        await self._gateway.aclose()


# -- small helpers --------------------------------------------------------------------------


class _Warnings(logging.Handler):
    """Counts WARNING and above per logger; keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] += 1
        if len(self.first) < 3:
            self.first.append(f"{record.name}: {record.getMessage()}"[:200])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def _plan(qrs: int, seed: int, expiry: timedelta) -> list[float | None]:
    """When each QR is paid, seconds after it was issued (None: never), from the seed."""
    rng = random.Random(seed)
    landing: list[float | None] = []
    for _ in range(qrs):
        draw = rng.random()
        if draw < PAID_SHARE:
            landing.append(rng.uniform(0.0, expiry.total_seconds()))
        elif draw < PAID_SHARE + LATE_SHARE:
            landing.append(expiry.total_seconds()
                           + rng.uniform(0.0, LATE_WINDOW.total_seconds()))
        else:
            landing.append(None)
    return landing


def _bands(poll_seconds: int, expiry_s: float) -> list[tuple[str, float, float, float]]:
    """(name, from age, to age, the design's check interval), seconds: KhqrService's
    ``_interval`` (every poll_seconds while young, 2x until expiry, 12x after)."""
    young = YOUNG.total_seconds()
    return [(f"< {young / 60:g} min", 0.0, young, float(poll_seconds)),
            (f"{young / 60:g}-{expiry_s / 60:g} min", young, expiry_s, 2.0 * poll_seconds),
            ("after expiry", expiry_s, math.inf, 12.0 * poll_seconds)]


# -- the fake's process ---------------------------------------------------------------------


def _fake_main(spec: str) -> None:
    """The fake's own process (``--fake``): say READY with its address, then answer one JSON
    command a line on stdin (pay, setup, clock, log, totals) with ``OK <json>``."""
    # By name: the fakes are test code, outside the packages mypy checks.
    fake_type: Any = importlib.import_module("tests.fakes.bakong").FakeBakong
    args = json.loads(spec)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    clock = _SharedClock(datetime.fromisoformat(args["start"]))
    fake = fake_type(clock=clock.now, token=args["token"])
    answered: list[tuple[str, str, int]] = []  # (path, body, status) of each routed request
    routes = fake.routes

    def noting(route: Any) -> Any:
        def noted(request: Any, params: dict[str, str]) -> Any:
            result = route(request, params)
            answered.append((request.path, request.body.decode(), result.status))
            return result
        return noted

    # The server reads its routes when it starts: each answer's status is noted on the way.
    fake.routes = lambda: [(method, path, noting(route)) for method, path, route in routes()]
    with fake:
        print("READY " + json.dumps({"api_url": fake.api_url, "token": fake.token}),
              flush=True)
        sent = 0
        for line in sys.stdin:
            command = json.loads(line)
            answer: dict[str, Any] = {}
            if command["op"] == "pay":
                for payload, at in command["payments"]:
                    fake.pay(payload, at=datetime.fromisoformat(at))
            elif command["op"] == "setup":
                fake.latency_seconds = command["latency_ms"] / 1000
                limit = command["rate_limit"]
                fake.rate_limit = (int(limit[0]), float(limit[1])) if limit else None
                fake.clear_log()
                answered.clear()
                sent = 0
            elif command["op"] == "clock":
                clock.move(datetime.fromisoformat(command["base"]), command["since"])
            elif command["op"] == "log":  # what was answered since the last "log"
                with fake.lock:
                    new = answered[sent:]
                    sent = len(answered)
                answer = {"requests": new}
            elif command["op"] == "totals":
                answer = {"bulk": fake.calls(BULK_PATH), "single": fake.calls(SINGLE_PATH),
                          "all": fake.calls(), "answered": len(answered),
                          "statuses": Counter(status for _, _, status in answered),
                          "cpu": _cpu_seconds()}
            print("OK " + json.dumps(answer), flush=True)


class _FakeProcess:
    """The child's side of the fake in its own process (see ``_fake_main``)."""

    def __init__(self) -> None:
        spec = {"start": START.isoformat(), "token": TOKEN}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.khqr", "--fake", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = json.loads(self._expect("READY"))

    def _expect(self, word: str) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith(word + " "):
            raise RuntimeError(f"the fake process answered {line[:200]!r}, not {word}")
        return line[len(word) + 1:]

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._expect("OK"))
        return answer

    def close(self) -> None:
        close_child(self._process)


# -- the child: one run ---------------------------------------------------------------------


async def run_job(job: Job) -> Result:
    """Issue, pay at the fake, poll round after round, then read back what was credited."""
    fake = _FakeProcess()
    try:
        return await _run(job, fake)
    finally:
        fake.close()


async def _run(job: Job, fake: _FakeProcess) -> Result:
    from sqlalchemy import func, select

    from bot.domain.khqr import payload_md5
    from bot.services.khqr import KhqrService
    from bot.settings import BakongSettings
    from storage import migrate
    from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
    from storage.db import Database
    from storage.tables import khqr_invoices, ledger_entries, notifications, wallet_payments

    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    service_log = logging.getLogger("bot.services.khqr")
    service_log.propagate = False  # counted here, not printed at every 429
    service_log.addHandler(warnings)

    rng = random.Random(job.seed + 1)
    clock = RoundClock(START, frozen=job.frozen_clock)
    per_qr_until = (START + timedelta(minutes=job.per_qr_minutes)
                    if job.per_qr_minutes > 0 else None)

    def per_qr() -> bool:
        return job.run == "per-qr" and (per_qr_until is None or clock.base() < per_qr_until)

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await migrate.upgrade(db)
        cipher = FieldCipher(KeyMaterial(encryption_keys=(generate_fernet_key(),),
                                         blind_index_key=os.urandom(32)))
        settings = BakongSettings(
            _env_file=None, BAKONG_ACCOUNT_ID=ACCOUNT, BAKONG_TOKEN=fake.info["token"],
            BAKONG_MERCHANT_NAME="TopUp Bot", BAKONG_API_URL=fake.info["api_url"],
            KHQR_POLL_SECONDS=job.poll_seconds)
        gateway = BakongGateway(settings.api_root, fake.info["token"])
        checks: KhqrChecks = OneCallPerQr(gateway, per_qr) if job.run == "per-qr" else gateway
        service = KhqrService(db, clock, settings, cipher, checks, wallet_currency="USD")
        expiry = service.expiry
        grace = timedelta(minutes=settings.grace_minutes)
        every = timedelta(seconds=settings.poll_seconds)

        # -- the QRs, all issued at t0, and when each is paid ---------------------------------
        quotes = service.quotes()
        issue_started = time.perf_counter()
        issued = [(await service.issue(FIRST_USER + n // 3, rng.choice(quotes).credit)).khqr_id
                  for n in range(job.qrs)]
        issue_s = time.perf_counter() - issue_started
        async with db.read() as conn:
            rows = (await conn.execute(select(khqr_invoices.c.id, khqr_invoices.c.payload,
                                              khqr_invoices.c.md5))).all()
        payload_of = {int(row.id): str(row.payload) for row in rows}
        id_of_md5 = {str(row.md5): int(row.id) for row in rows}
        assert all(id_of_md5[payload_md5(payload_of[i])] == i for i in issued)
        landed_at: dict[int, datetime] = {}
        for khqr_id, offset in zip(issued, _plan(job.qrs, job.seed, expiry), strict=True):
            if offset is not None:
                landed_at[khqr_id] = START + timedelta(seconds=offset)
        fake.ask("pay", payments=[(payload_of[i], at.isoformat())
                                  for i, at in landed_at.items()])
        fake.ask("setup", latency_ms=job.latency_ms, rate_limit=job.rate_limit)

        # -- the rounds, every poll_seconds as the JobQueue runs them --------------------------
        answered_at: dict[int, list[float]] = defaultdict(list)  # round starts, s after t0
        rounds: list[dict[str, Any]] = []
        horizon = START + expiry + grace + 12 * every
        cpu_before, run_started = _cpu_seconds(), time.perf_counter()
        for number in itertools.count(1):
            scheduled = START + number * every
            late = max(0.0, (clock.now() - scheduled).total_seconds())  # the last overran
            clock.set(max(scheduled, clock.now()))
            begun = clock.now()
            async with db.read() as conn:
                due = int((await conn.execute(select(func.count()).where(
                    khqr_invoices.c.next_check_at.is_not(None),
                    khqr_invoices.c.next_check_at <= begun))).scalar_one())
                polled = int((await conn.execute(select(func.count()).where(
                    khqr_invoices.c.next_check_at.is_not(None)))).scalar_one())
            if polled == 0 or begun > horizon:
                break
            mode = "per-qr" if per_qr() else "bulk"
            clock.start_round()
            fake.ask("clock", base=clock.base().isoformat(), since=clock.since)
            started = time.perf_counter()
            report = await service.poll()
            wall_ms = (time.perf_counter() - started) * 1000
            clock.end_round()
            at = (begun - START).total_seconds()
            bulk = single = refused = answered = 0
            for path, body, status in fake.ask("log")["requests"]:
                asked = json.loads(body)
                if path == BULK_PATH:
                    bulk += 1
                else:
                    single += 1
                    asked = [asked["md5"]]
                if status != 200:
                    refused += 1
                    continue
                answered += len(asked)
                for md5 in asked:
                    answered_at[id_of_md5[md5]].append(at)
            rounds.append({
                "at": at, "mode": mode, "late": late, "due": due, "paid": report.paid,
                "bulk": bulk, "single": single, "answered": answered, "refused": refused,
                "rate_limited": report.failures.get("rate_limited", 0),
                "failures": sum(report.failures.values()), "wall_ms": wall_ms,
                "paused": report.paused})
        run_s, run_cpu = time.perf_counter() - run_started, _cpu_seconds() - cpu_before
        await checks.aclose()
        totals = fake.ask("totals")

        # -- what was credited -----------------------------------------------------------------
        async with db.read() as conn:
            invoices = (await conn.execute(select(
                khqr_invoices.c.id, khqr_invoices.c.state, khqr_invoices.c.paid_at,
                khqr_invoices.c.payment_id, khqr_invoices.c.expires_at,
                khqr_invoices.c.last_checked_at, khqr_invoices.c.next_check_at,
                khqr_invoices.c.credit_minor))).all()
            payments = (await conn.execute(select(
                wallet_payments.c.id, wallet_payments.c.source, wallet_payments.c.amount_minor,
                wallet_payments.c.created_at))).all()
            credits = Counter(int(payment_id) for (payment_id,) in (await conn.execute(
                select(ledger_entries.c.payment_id).where(
                    ledger_entries.c.payment_id.is_not(None)))).all())
            notices = (await conn.execute(select(notifications.c.kind, notifications.c.params)
                                          .where(notifications.c.kind.in_(
                                              ("khqr_receipt", "khqr_closed"))))).all()
        await db.dispose()

    in_time = {i for i, landed in landed_at.items() if landed < START + expiry}
    receipts = Counter(int(n.params["khqr_id"]) for n in notices if n.kind == "khqr_receipt")
    told_late = sum(1 for n in notices if n.kind == "khqr_receipt"  # said it had expired
                    and (n.params.get("late") or n.params.get("paid_after"))
                    and int(n.params["khqr_id"]) in in_time)
    told_expired = sum(1 for n in notices if n.kind == "khqr_closed"
                       and n.params.get("state") == "expired"
                       and int(n.params["khqr_id"]) in in_time)
    credited_at = {int(row.id): row.paid_at for row in invoices if row.state == "paid"}
    payment_ids = [int(row.payment_id) for row in invoices if row.payment_id is not None]
    payment_of = {int(p.id): p for p in payments}
    wrong_amounts = sum(
        int(row.payment_id) not in payment_of
        or int(payment_of[int(row.payment_id)].amount_minor) != int(row.credit_minor)
        or payment_of[int(row.payment_id)].created_at != row.paid_at
        for row in invoices if row.payment_id is not None)
    starts = [r["at"] for r in rounds]

    def delay(i: int, landed: datetime) -> tuple[float, float | None, float | None]:
        """(age when paid, payment to credit, payment to the start of the round that found
        it), simulated s."""
        age = (landed - START).total_seconds()
        if i not in credited_at:
            return age, None, None
        credited = (credited_at[i] - START).total_seconds()
        found = starts[max(0, bisect.bisect_right(starts, credited) - 1)]
        return age, credited - age, found - age

    delays = [delay(i, landed) for i, landed in landed_at.items()]
    # (age when the gap began, the gap), from the issue on; in simulated seconds
    gaps = [(first, second - first) for times in answered_at.values()
            for first, second in itertools.pairwise([0.0, *times])]
    waits = sorted(((max(b - a for a, b in itertools.pairwise([0.0, *times])), issued.index(i))
                    for i, times in answered_at.items()), reverse=True)
    return {
        "run": job.run, "qrs": job.qrs, "rate_limit": job.rate_limit,
        "frozen_clock": job.frozen_clock, "per_qr_minutes": job.per_qr_minutes,
        "rounds": rounds, "bulk_total": totals["bulk"], "single_total": totals["single"],
        "requests_total": totals["all"], "answered_total": totals["answered"],
        "statuses": totals["statuses"], "fake_cpu_s": totals["cpu"],
        "delays": delays, "gaps": gaps, "longest_waits": waits[:5],
        "issue_s": issue_s, "run_s": run_s, "run_cpu_s": run_cpu, "rss_mb": _rss_mb(),
        "paid_made": len(landed_at),
        "paid_late": sum(at >= START + expiry for at in landed_at.values()),
        "paid_qrs": len(credited_at),
        "found_after_expiry": sum(1 for i, landed in landed_at.items()
                                  if landed < START + expiry and i in credited_at
                                  and credited_at[i] >= START + expiry),
        "paid_not_made": len(set(credited_at) - set(landed_at)),
        "receipts": sum(receipts.values()), "receipts_max": max(receipts.values(), default=0),
        "told_late_in_time": told_late, "told_expired_in_time": told_expired,
        "payments": len(payments), "khqr_payments": sum(p.source == "khqr" for p in payments),
        "payment_ids": len(payment_ids), "distinct_payment_ids": len(set(payment_ids)),
        "wrong_amounts": wrong_amounts, "ledger_credits": sum(credits.values()),
        "ledger_credits_max": max(credits.values(), default=0),
        "still_polled": sum(row.next_check_at is not None for row in invoices),
        "last_check_after_expiry_s": max(
            ((row.last_checked_at - row.expires_at).total_seconds()
             for row in invoices if row.last_checked_at is not None), default=0.0),
        "warnings": dict(warnings.counts), "first_warnings": warnings.first,
        "expiry_s": expiry.total_seconds(), "grace_s": grace.total_seconds(),
        "poll_seconds": settings.poll_seconds,
    }


def _child(spec: str) -> None:
    def job_of(**fields: Any) -> Job:
        limit = fields.get("rate_limit")
        fields["rate_limit"] = (int(limit[0]), float(limit[1])) if limit else None
        return Job(**fields)

    child_main(spec, job_of, run_job)


# -- the parent: figures and targets --------------------------------------------------------


def _failed(why: str) -> Result:
    return {"error": why}


def _longest_round_s(result: Result) -> float:
    """The longest round, simulated s (0 with --frozen-clock: a round takes no time)."""
    if result["frozen_clock"]:
        return 0.0
    return max((r["wall_ms"] for r in result["rounds"]), default=0.0) / 1000


def _window(result: Result) -> float:
    """Simulated s after t0 until which the per-qr run asked once per QR (inf: throughout)."""
    minutes = result["per_qr_minutes"]
    return minutes * 60 if minutes > 0 else math.inf


def _calls_row(label: str, rounds: list[dict[str, Any]]) -> tuple[str, tuple[int, int]]:
    """The table's row, and (calls, MD5s in requests answered)."""
    calling = [r for r in rounds if r["bulk"] or r["single"]]
    walls = [r["wall_ms"] for r in calling]
    bulk = [r["bulk"] for r in calling]
    single = [r["single"] for r in calling]
    calls = sum(bulk) + sum(single)
    answered = sum(r["answered"] for r in rounds)
    busiest = max(calling, key=lambda r: r["bulk"] + r["single"], default=None)
    busy = (f"{busiest['bulk'] + busiest['single']:>5} {busiest['wall_ms']:>6.0f}"
            if busiest else f"{'-':>5} {'-':>6}")
    return (f"{label:<20} {len(rounds):>6} {len(calling):>6} "
            f"{sum(r['late'] > 0 for r in rounds):>4} {max(bulk, default=0):>5} "
            f"{_mean(bulk):>6.1f} {max(single, default=0):>6} {_mean(single):>7.1f} "
            f"{calls:>7,} {answered:>7,} {answered / max(1, calls):>6.1f} "
            f"{_percentile(walls, 50):>6.0f} {_percentile(walls, 99):>6.0f} {busy}"), \
        (calls, answered)


def _delay_rows(label: str, result: Result, before_s: float = math.inf
                ) -> tuple[list[str], list[tuple[str, float, float, float]]]:
    """Rows of the delay table for the payments made before ``before_s`` (after t0), and
    per band (name, design interval, longest wait for the finding round, share of the
    checks later than the interval)."""
    bands = _bands(result["poll_seconds"], result["expiry_s"])
    rows: list[str] = []
    found: list[tuple[str, float, float, float]] = []
    kept = [band for band in bands if band[1] < before_s]
    for name, low, high, interval in [("all", 0.0, math.inf, math.nan)] * (len(kept) > 1) + kept:
        high = min(high, before_s)
        if high < math.inf and high != bands[0][2] and high != bands[1][2]:
            name = f"{low / 60:g}-{high / 60:g} min"
        made = [(d, f) for age, d, f in result["delays"] if low <= age < high]
        delays = [d for d, _ in made if d is not None]
        waits = [f for _, f in made if f is not None]
        gaps = [gap for age, gap in result["gaps"] if low <= age < high]
        if name != "all":
            late = sum(gap > interval + 0.5 for gap in gaps) / len(gaps) if gaps else 0.0
            found.append((name, interval, max(waits, default=math.nan), late))
        rows.append(
            f"  {label:<20} {name:<13} {len(made):>5} {len(delays):>5} "
            f"{_percentile(delays, 50):>6.1f} {_percentile(delays, 99):>6.1f} "
            f"{max(delays, default=math.nan):>6.1f} {_percentile(waits, 99):>6.1f} "
            f"{max(waits, default=math.nan):>6.1f}  "
            f"{'' if math.isnan(interval) else f'{interval:g}':>6} "
            f"{_percentile(gaps, 50):>5.0f} {max(gaps, default=math.nan):>5.0f} "
            f"{_late_share(gaps, interval):>5}")
    return rows, found


def _late_share(gaps: Sequence[float], interval: float) -> str:
    """The share of the gaps longer than the design's interval (a check a round late)."""
    if math.isnan(interval) or not gaps:
        return ""
    return f"{sum(gap > interval + 0.5 for gap in gaps) / len(gaps):.0%}"


def _in_life_delays(result: Result) -> list[float]:
    return [d for age, d, _ in result["delays"] if d is not None and age < result["expiry_s"]]


def _credit_problems(result: Result) -> list[str]:
    """Each payment credited exactly once; polling stopped where the design says."""
    problems: list[str] = []
    made = result["paid_made"]
    for name, value in (("QRs paid", result["paid_qrs"]),
                        ("wallet_payments", result["payments"]),
                        ("KHQR wallet_payments", result["khqr_payments"]),
                        ("ledger credits", result["ledger_credits"]),
                        ("distinct payment ids", result["distinct_payment_ids"])):
        if value != made:
            problems.append(f"{name} {value} for {made} payments made")
    if result["ledger_credits_max"] > 1 or result["payment_ids"] != \
            result["distinct_payment_ids"]:
        problems.append("a payment credited twice")
    if result["wrong_amounts"]:
        problems.append(f"{result['wrong_amounts']} payments not as the QR's credit says")
    if result["receipts"] != made or result["receipts_max"] > 1:
        problems.append(f"{result['receipts']} receipts for {made} payments (at most "
                        f"{result['receipts_max']} per QR)")
    if result["paid_not_made"]:
        problems.append(f"{result['paid_not_made']} QRs paid that nobody paid")
    if result["still_polled"]:
        problems.append(f"{result['still_polled']} QRs still polled at the end")
    limit = result["grace_s"] + result["poll_seconds"] + _longest_round_s(result)
    if result["last_check_after_expiry_s"] > limit:
        problems.append(f"a QR checked {result['last_check_after_expiry_s']:.0f} s after its "
                        f"expiry (grace {result['grace_s']:.0f} s)")
    if result["answered_total"] != result["requests_total"]:
        problems.append(f"the fake got {result['requests_total']} requests and answered "
                        f"{result['answered_total']}")
    if set(result["statuses"]) - {"200", "429"} or (
            "429" in result["statuses"] and result["run"] != "rate-limited"):
        problems.append(f"the fake answered {result['statuses']}")
    warnings = {k: v for k, v in result["warnings"].items()
                if not (result["run"] == "rate-limited" and k == EXPECTED_WARNING)}
    if warnings:
        problems.append(f"warnings logged: {warnings} ({result['first_warnings']})")
    return problems


def _report(results: dict[str, Result]) -> bool:
    """Prints the tables and the targets; whether every target was met."""
    ok = True

    def target(met: bool, text: str) -> None:
        nonlocal ok
        ok = ok and met
        print(f"  {'met' if met else 'MISSED'}: {text}")

    bulk, base = results.get("bulk"), results.get("per-qr")
    window = _window(base) if base is not None else math.inf
    print(f"{'calls':<20} {'rounds':>6} {'called':>6} {'late':>4} {'bulk/round':>12} "
          f"{'single/round':>14} {'calls':>7} {'MD5s':>7} {'MD5s/':>6} {'wall ms':>13} "
          f"{'busiest':>12}")
    print(f"{'':<20} {'':>6} {'':>6} {'':>4} {'max':>5} {'mean':>6} {'max':>6} {'mean':>7} "
          f"{'':>7} {'answd':>7} {'call':>6} {'p50':>6} {'p99':>6} {'calls':>5} {'ms':>6}")
    calls_in: dict[str, tuple[int, int]] = {}  # run -> (calls, MD5s answered)
    for run, result in results.items():
        rounds = result["rounds"]
        if run == "per-qr" and window < math.inf:
            label = f"per-qr (first {window / 60:g} min)"
            rounds = [r for r in rounds if r["mode"] == "per-qr"]
        else:
            label = run
        row, calls_in[run] = _calls_row(label, rounds)
        print(row)
        if run == "bulk" and base is not None and window < math.inf:
            row, calls_in["bulk-window"] = _calls_row(
                f"bulk (first {window / 60:g} min)",
                [r for r in rounds if r["at"] < window])
            print(row)
    if base is not None and window < math.inf:
        after = [r for r in base["rounds"] if r["mode"] != "per-qr"]
        print(f"  (per-qr then went on with bulk calls: {sum(r['bulk'] for r in after):,} more "
              f"in {len(after)} rounds, so that every payment is credited)")
    print("  (rounds: poll() runs; called: those that called Bakong; late: started after "
          "their slot because the\n   one before overran; mean: over the rounds that "
          "called; MD5s answd: MD5s in requests answered\n   200; wall ms: real, the rounds "
          "that called; busiest: the round with the most calls)")
    print()
    print(f"  {'sim s':<20} {'paid at age':<13} {'made':>5} {'cred.':>5} "
          f"{'payment to credit':>20} {'to round':>13}  {'design':>6} {'gap':>5} {'gap':>5} "
          f"{'gap >':>5}")
    print(f"  {'':<20} {'':<13} {'':>5} {'':>5} {'p50':>6} {'p99':>6} {'max':>6} "
          f"{'p99':>6} {'max':>6}  {'every':>6} {'p50':>5} {'max':>5} {'every':>5}")
    bands_of: dict[str, list[tuple[str, float, float, float]]] = {}
    for run, result in results.items():
        label = run if run != "per-qr" or window == math.inf else \
            f"per-qr (first {window / 60:g} min)"
        rows, bands_of[run] = _delay_rows(label, result, window if run == "per-qr"
                                          else math.inf)
        print("\n".join(rows))
        if run == "bulk" and base is not None and window < math.inf:
            rows, _ = _delay_rows(f"bulk (first {window / 60:g} min)", result, window)
            print("\n".join(rows))
    print("  (made/cred.: payments made in that band and credited; to round: from the "
          "payment to the start of\n   the round that found it; design every: "
          "KhqrService._interval at that age; gap: the observed\n   time between two "
          "answered checks of one QR (from its issue), by the age it began; gap > every:\n"
          "   the share of those gaps longer than the design's interval)")
    for run in ("bulk", "per-qr"):
        slower = [f"{name} {late:.0%} of the checks later than every {interval:g} s"
                  for name, interval, _longest, late in bands_of.get(run, []) if late > 0.01]
        if slower:
            print(f"NOTE ({run}): QRs were checked less often than the design says: "
                  f"{'; '.join(slower)}. A QR's next_check_at fell just after the start of "
                  f"the round it was meant for (by the time the round had taken to reach it, "
                  f"or by the jitter of the rounds' starts), so that round found it not yet "
                  f"due and it waited a round more (with --frozen-clock a round takes no "
                  f"time, starts exactly on its slot, and the design's intervals hold).")
    print()
    for run, result in results.items():
        problems = _credit_problems(result)
        print(f"{run}: {result['paid_made']} payments made ({result['paid_late']} after "
              f"expiry), {result['paid_qrs']} QRs paid ({result['found_after_expiry']} paid "
              f"before expiry, found after: {result['told_expired_in_time']} told \"expired\" "
              f"and {result['told_late_in_time']} receipts saying it had expired), "
              f"{result['payments']} wallet_payments, {result['receipts']} receipts, "
              f"{result['ledger_credits']} ledger credits, at most "
              f"{result['ledger_credits_max']} per payment; last check "
              f"{result['last_check_after_expiry_s'] / 60:.2f} min after expiry (grace "
              f"{result['grace_s'] / 60:g}), {result['still_polled']} still polled; "
              f"{result['qrs']:,} issued in {result['issue_s']:.1f} s, rounds "
              f"{result['run_s']:.0f} s real, CPU {result['run_cpu_s']:.0f} s (fake "
              f"{result['fake_cpu_s']:.0f} s), peak RSS {result['rss_mb']:.0f} MB"
              + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""))
    limited = results.get("rate-limited")
    if limited is not None:
        rounds = limited["rounds"]
        seen = sum(r["rate_limited"] for r in rounds)
        paused = sum(r["paused"] for r in rounds)
        first = next((r["at"] for r in rounds if r["rate_limited"]), None)
        answered_429 = int(limited["statuses"].get("429", 0))
        waits = ", ".join(f"{wait:.0f} s (QR #{n + 1})" for wait, n in limited["longest_waits"])
        print(f"rate-limited: the fake allows {limited['rate_limit'][0]} requests per "
              f"{limited['rate_limit'][1]:g} s; a round of {limited['qrs']} due QRs needs "
              f"{math.ceil(limited['qrs'] / BULK_LIMIT)} calls. 429s answered {answered_429}, "
              f"seen by the poller {seen} (the first at {first if first is not None else '-'} "
              f"s); rounds paused (no call: a 429's pause was on): {paused}; the longest "
              f"any QR went "
              f"without an answer: {waits} (issued in that order)")
    print()
    print("Targets:")
    target(all(not _credit_problems(r) for r in results.values()),
           "every payment credited exactly once, and polling stopped at expiry + grace, in "
           "every run")
    if limited is not None:
        rounds = limited["rounds"]
        seen = sum(r["rate_limited"] for r in rounds)
        target(seen > 0 and seen == int(limited["statuses"].get("429", 0))
               and any(r["paused"] for r in rounds)
               and not any(r["paused"] and (r["bulk"] or r["single"]) for r in rounds),
               "rate-limited: 429s answered and seen by the poller alike, and rounds paused "
               "(no call while a pause was on)")
    if bulk is not None:
        most = max((r["bulk"] for r in bulk["rounds"]), default=0)
        allowed = math.ceil(bulk["qrs"] / BULK_LIMIT) + 1
        target(most <= allowed and bulk["single_total"] == 0,
               f"bulk: at most {allowed} bulk calls in a round (most: {most}) and no single "
               f"call (made: {bulk['single_total']})")
        if base is not None:
            # Per check, not per minute: on a busy machine the per-QR rounds overrun and make
            # fewer checks than their schedule asks, which flatters a ratio of call counts.
            ours, checked = calls_in.get("bulk-window", calls_in["bulk"])
            theirs, _ = calls_in["per-qr"]
            span = f"the first {window / 60:g} min" if window < math.inf else "the whole run"
            print(f"  one call per QR ÷ bulk over {span}, in calls: {theirs:,} / {ours:,} = "
                  f"{theirs / max(1, ours):.1f}x (the per-QR rounds made the checks they could)")
            ratio = checked / max(1, ours)
            target(ratio >= TARGET_RATIO,
                   f"one call per QR ÷ bulk for the same checks over {span}: {checked:,} MD5s "
                   f"checked in {ours:,} bulk calls = {ratio:.1f}x >= {TARGET_RATIO:g}x")
        for name, interval, longest, _gap in bands_of["bulk"]:
            if not math.isnan(longest):
                target(longest <= interval + TOLERANCE_S,
                       f"bulk: paid at age {name}: found by a round that began at most "
                       f"{interval:g} s later (the design's interval; the longest: "
                       f"{longest:.1f} s)")
        in_life = [f for age, _, f in bulk["delays"] if f is not None
                   and age < bulk["expiry_s"]]
        p99, limit = _percentile(in_life, 99), 2 * bulk["poll_seconds"]
        target(p99 <= limit + TOLERANCE_S,
               f"bulk: paid during the QR's life: p99 from the payment to the round that "
               f"found it {p99:.1f} s <= 2 x KHQR_POLL_SECONDS = {limit:g} s (then the "
               f"round writes the credit: p99 {_percentile(_in_life_delays(bulk), 99):.1f} s "
               f"from payment to credit)")
    return ok


def _job(run: str, args: argparse.Namespace) -> Job:
    limited = run == "rate-limited"
    return Job(run=run, qrs=min(args.qrs, RATE_LIMITED_QRS) if limited else args.qrs,
               latency_ms=args.latency_ms, seed=args.seed, poll_seconds=args.poll_seconds,
               frozen_clock=args.frozen_clock, rate_limit=RATE_LIMIT if limited else None,
               per_qr_minutes=args.baseline_minutes if run == "per-qr" else 0.0)


def _load_note() -> str:
    one, five, fifteen = os.getloadavg()
    busy = " - the machine is busy: wall times will be high" if one > 0.5 else ""
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}{busy}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.khqr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qrs", type=int, default=1000,
                        help="open KHQRs in the bulk and per-qr runs (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="the fake's latency per answer, real ms (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="the payments' seed (default 1)")
    parser.add_argument("--poll-seconds", type=int, default=5,
                        help="KHQR_POLL_SECONDS (default 5, the setting's default)")
    parser.add_argument("--baseline-minutes", type=float, default=BASELINE_MINUTES,
                        help=f"per-qr asks once per QR this many simulated minutes, then bulk "
                             f"(default {BASELINE_MINUTES:g}; 0: the whole run, ~3 more "
                             f"minutes)")
    parser.add_argument("--frozen-clock", action="store_true",
                        help="simulated time stands still during a round (the idealised "
                             "poller); default: it runs at the real rate, as SystemClock")
    parser.add_argument("--sequential", action="store_true",
                        help="one run at a time (no other run beside per-qr: cleaner wall "
                             "times, longer)")
    parser.add_argument("--only", default=",".join(RUNS),
                        help=f"runs, comma-separated (default {','.join(RUNS)})")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or a run went wrong")
    args = parse_or_serve(parser, argv, child=_child, fake=_fake_main)
    if args is None:  # it ran as a child or as a fake's process
        return 0
    runs = [run.strip() for run in args.only.split(",") if run.strip()]
    if (args.qrs < 1 or args.latency_ms < 0 or not 1 <= args.poll_seconds <= 600
            or args.baseline_minutes < 0 or not runs or set(runs) - set(RUNS)):
        parser.error(f"--qrs at least 1, --latency-ms and --baseline-minutes not negative, "
                     f"--poll-seconds 1-600, --only among {','.join(RUNS)}")

    import httpx
    import tornado

    print(f"bench.khqr {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {os.cpu_count()} cores "
          f"({platform.machine()}, {_cpu_model()}), Python {platform.python_version()}, "
          f"httpx {httpx.__version__}, tornado {tornado.version}, SQLite; {_load_note()}")
    clock_note = ("stands still during a round (--frozen-clock)" if args.frozen_clock
                  else "runs at the real rate during a round")
    print(f"{args.qrs:,} KHQRs issued at t0 ({math.ceil(args.qrs / 3):,} users x 3), expiry "
          f"15 min, grace 30 min, KHQR_POLL_SECONDS={args.poll_seconds}; seed {args.seed}: "
          f"each paid at a random moment of its life ({PAID_SHARE:.0%}), in the 5 min after "
          f"expiry ({LATE_SHARE:.0%}) or never; the fake's latency {args.latency_ms:g} ms "
          f"(real), in a process of its own; poll() every {args.poll_seconds} simulated s "
          f"until no QR is polled; simulated time {clock_note}")
    print()
    jobs = {run: _job(run, args) for run in runs}
    slots = ([[run] for run in runs] if args.sequential
             else [slot for slot in ([run for run in runs if run != "per-qr"],
                                     [run for run in runs if run == "per-qr"]) if slot])
    results: dict[str, Result] = {}
    wall = time.perf_counter()

    def run_slot(slot: list[str]) -> None:
        for run in slot:
            started = time.perf_counter()
            results[run] = run_child("bench.khqr", jobs[run], jobs[run].timeout_s, _failed)
            print(f"  {run} ({jobs[run].qrs:,} QRs): {time.perf_counter() - started:.0f} s"
                  + (f" FAILED: {results[run]['error']}" if "error" in results[run] else ""),
                  flush=True)

    print(f"running {' | '.join(' then '.join(slot) for slot in slots)} ...", flush=True)
    with ThreadPoolExecutor(max_workers=1 if args.sequential else len(slots)) as pool:
        list(pool.map(run_slot, slots))
    if any("error" in result for result in results.values()):
        return 1 if args.check else 0
    print()
    ok = _report({run: results[run] for run in runs})
    print()
    print(f"after: {_load_note()}; whole run {time.perf_counter() - wall:.0f} s real")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
