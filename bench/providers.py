"""Charges pushed through each top-up adapter against its local fake, beside the simulated
carrier measured in the same run.

Run from the project root:  python -m bench.providers  [--check] [--charges N]
                            [--latency-ms 50,300] [--only reloadly|dingconnect|simulated]
                            [--fake-thread]

Each (backend, latency) is a child process: a fresh SQLite database, a user per line (each a
different Cambodian mobile over 8 prefixes of the four operators), each user's wallet funded
with exactly one charge's $5.00, and the real ``ChargingService`` on ``SystemClock``. Every
line gets ``request_manual(user, line, $5.00)`` then ``approve(user, charge)`` (which submits
it to the provider), 50 charges in flight at a time (``asyncio.Semaphore``).

Backends:
  simulated    ``SimulatedCarrier`` (the baseline), ``knobs.latency_ms`` per call, on a
               database file of its own (it stands in for a remote carrier, so it does not
               queue behind the bot's SQLite writer).
  reloadly     ``ReloadlyGateway`` over httpx against ``tests.fakes.reloadly.FakeReloadly``.
  dingconnect  ``DingConnectGateway`` over httpx against ``tests.fakes.dingconnect``.
The fakes are Tornado servers on 127.0.0.1, each in a process of its own (started by the
child, ``--fake``): they stand in for a remote provider, so they do not take the bot's GIL
or its core. ``--fake-thread`` runs them in a daemon thread of the child instead, as before.
Their ``latency_seconds`` is the same latency as the simulator's, added to every answer.

A charge counts when it ends SUCCEEDED; any other end is reported (and fails --check).
Latency of a charge: request + approve + submit, from its turn to run (its semaphore slot)
to ``approve`` returning. charges/s: charges done / wall time from the first to the last.
Target: each adapter's charges/s at least 0.8 x the simulated carrier's at the same latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.children import child_main, close_child, parse_or_serve, run_child

TARGET_RATIO = 0.8  # an adapter's charges/s over the simulated carrier's, same latency
CONCURRENCY = 50  # charges in flight
AMOUNT_CENTS = 500  # $5.00: sold by every operator of both fakes
FAKE_FLOAT = Decimal("1000000")  # our balance at the fakes (their default 1,000 is ~200 charges)
FIRST_USER = 700_000_000
BACKENDS = ("simulated", "reloadly", "dingconnect")
BASELINE = "simulated"
# Prefixes after which every 7-digit subscriber number is a valid mobile of that operator
# (phonenumbers' metadata, as bench/sweep.py uses), and in both fakes' number plans.
PREFIXES = ("12", "96", "97", "88", "31", "71", "76", "18")


@dataclass(frozen=True)
class Job:
    """What one child process does."""

    backend: str
    latency_ms: int
    charges: int
    concurrency: int = CONCURRENCY
    timeout_s: float = 300.0
    fake_thread: bool = False  # the fake in a thread of the child, not a process of its own


# -- the child: one backend at one latency ------------------------------------------------


@dataclass
class _Timings:
    charge_ms: list[float] = field(default_factory=list)  # request + approve + submit
    top_up_ms: list[float] = field(default_factory=list)  # the provider call alone


class _TimedProvider:
    """The provider, with its top_up timed (so the charge's own cost can be told apart)."""

    def __init__(self, inner: Any, timings: _Timings) -> None:
        self._inner = inner
        self._timings = timings

    async def catalog(self, operator: Any) -> Any:
        return await self._inner.catalog(operator)

    async def top_up(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.top_up(request)
        finally:
            self._timings.top_up_ms.append((time.perf_counter() - started) * 1000)

    async def lookup(self, reference: str) -> Any:
        return await self._inner.lookup(reference)


@dataclass
class _Backend:
    provider: Any
    requests: Callable[[], list[tuple[str, str]]]  # (method, path) of every HTTP request
    paid: Callable[[], int]  # successful top-ups the backend recorded
    fake_cpu: Callable[[], float]  # CPU seconds of the fake so far (its thread or process)
    in_process: bool = True  # the fake's CPU is part of this process's (thread, simulator)
    connections: Callable[[], int | None] = lambda: None  # TCP connections (fake process)
    warnings: Callable[[], list[str]] = lambda: []  # what the fake process logged


class _Warnings(logging.Handler):
    """Counts WARNING and above (an adapter that logs is doing something unexpected)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(f"{record.name}: {record.getMessage()}")


class _Connections:
    """TCP connections the fake accepted: Tornado's HTTPServer.handle_stream, wrapped in this
    child only (the fakes keep no count; it shows whether the client reuses connections)."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        import tornado.httpserver

        original = tornado.httpserver.HTTPServer.handle_stream
        counter = self

        def handle_stream(server: Any, stream: Any, address: Any) -> Any:
            counter.count += 1
            return original(server, stream, address)

        tornado.httpserver.HTTPServer.handle_stream = handle_stream  # type: ignore[method-assign,assignment]


class _PoolRetries:
    """Requests httpcore's pool handed a connection another request had already taken
    (``ConnectionNotAvailable``; the pool then tries again): AsyncHTTP11Connection's
    handle_async_request, wrapped in this child only."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        import httpcore

        original = httpcore.AsyncHTTP11Connection.handle_async_request
        counter = self

        async def handle_async_request(connection: Any, request: Any) -> Any:
            try:
                return await original(connection, request)
            except httpcore.ConnectionNotAvailable:
                counter.count += 1
                raise

        httpcore.AsyncHTTP11Connection.handle_async_request = (  # type: ignore[method-assign]
            handle_async_request)  # type: ignore[assignment]


def _number(index: int) -> str:
    """The index-th line's number, E.164: a different one for every line."""
    prefix = PREFIXES[index % len(PREFIXES)]
    return f"+855{prefix}{1_000_000 + index // len(PREFIXES):07d}"


async def _seed(db: Any, cipher: Any, clock: Any, count: int) -> list[tuple[int, int]]:
    """A user per line, each wallet funded with one charge; (user id, line id) pairs."""
    from bot.domain.money import Money
    from bot.domain.phone import parse_cambodian_mobile
    from storage.lines import LinesRepository
    from storage.payments import PaymentsRepository
    from storage.users import UsersRepository

    now = clock.now()
    pairs = []
    async with db.write() as conn:
        for index in range(count):
            user_id = FIRST_USER + index
            await UsersRepository(conn).ensure(user_id, language="en", now=now)
            line = await LinesRepository(conn, cipher).add(
                owner_id=user_id, number=parse_cambodian_mobile(_number(index)), now=now,
                verified_at=now)
            await PaymentsRepository(conn, cipher).record_payment(
                user_id=user_id, source="operator", external_id=f"bench:{user_id}",
                amount=Money(AMOUNT_CENTS, "USD"), now=now, actor="cli")
            pairs.append((user_id, line.id))
    return pairs


def _fake_thread(name: str) -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == name), None)


def _fake_main(spec: str) -> None:
    """The fake server's own process (``--fake``): start it, say READY with its address,
    then answer CPU and REPORT on stdin until it closes. Only the requests' method and path,
    the paid count, the TCP connections and the warnings go back."""
    from bot.clock import SystemClock

    args = json.loads(spec)
    warnings = _Warnings()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(warnings)
    connections = _Connections()
    connections.install()
    clock = SystemClock()
    fake: Any
    if args["backend"] == "reloadly":
        from tests.fakes.reloadly import FakeReloadly

        fake = FakeReloadly(clock=clock.now, balance=FAKE_FLOAT)
        credentials = {"client_id": fake.client_id, "client_secret": fake.client_secret}

        def paid() -> int:
            return sum(t.status == "SUCCESSFUL" for t in fake.transactions())
    else:
        from tests.fakes.dingconnect import DEFAULT_API_KEY, FakeDingConnect

        fake = FakeDingConnect(clock=clock.now, balance=FAKE_FLOAT)
        credentials = {"api_key": DEFAULT_API_KEY}

        def paid() -> int:
            return sum(t.state == "Complete" for t in fake.transfers())
    with fake:
        fake.latency_seconds = args["latency_ms"] / 1000
        print("READY " + json.dumps({"base_url": fake.base_url, **credentials}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "CPU":
                print(f"CPU {_cpu_seconds()!r}", flush=True)
            elif command == "REPORT":
                print("REPORT " + json.dumps({
                    "requests": [(r.method, r.path) for r in fake.requests], "paid": paid(),
                    "connections": connections.count, "cpu": _cpu_seconds(),
                    "warnings": warnings.first if warnings.count else [],
                    "warning_count": warnings.count}), flush=True)


class _FakeProcess:
    """The bot's side of a fake in its own process (see ``_fake_main``)."""

    def __init__(self, backend: str, latency_ms: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.providers", "--fake",
             json.dumps({"backend": backend, "latency_ms": latency_ms})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = json.loads(self._expect("READY"))
        self._report: dict[str, Any] | None = None

    def _expect(self, word: str) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith(word + " "):
            raise RuntimeError(f"the fake process answered {line!r}, not {word}")
        return line[len(word) + 1:]

    def _ask(self, word: str) -> str:
        assert self._process.stdin is not None
        self._process.stdin.write(word + "\n")
        self._process.stdin.flush()
        return self._expect(word)

    def cpu(self) -> float:
        """The fake process's CPU seconds so far (a pipe round trip: not while measuring)."""
        if self._report is not None:
            return float(self._report["cpu"])
        return float(self._ask("CPU"))

    def report(self) -> dict[str, Any]:
        """Requests, paid top-ups, connections, CPU: read once, after the run."""
        if self._report is None:
            self._report = json.loads(self._ask("REPORT"))
        return self._report

    def close(self) -> None:
        close_child(self._process)


@contextlib.asynccontextmanager
async def _remote(job: Job, make_gateway: Callable[[dict[str, Any]], Any]
                  ) -> AsyncIterator[_Backend]:
    """A gateway against a fake in a process of its own."""
    fake = _FakeProcess(job.backend, job.latency_ms)
    try:
        gateway = make_gateway(fake.info)
        try:
            yield _Backend(
                gateway, lambda: [(m, p) for m, p in fake.report()["requests"]],
                lambda: int(fake.report()["paid"]), fake.cpu, in_process=False,
                connections=lambda: int(fake.report()["connections"]),
                warnings=lambda: [f"fake ({fake.report()['warning_count']}): {w}"
                                  for w in fake.report()["warnings"]])
        finally:
            fake.report()  # before the gateway closes its connections
            await gateway.aclose()
    finally:
        fake.close()


@contextlib.asynccontextmanager
async def _open_backend(job: Job, folder: Path, cipher: Any,
                        clock: Any) -> AsyncIterator[_Backend]:
    if job.backend == "simulated":
        async with _simulated(job, folder, cipher, clock) as backend:
            yield backend
    elif job.backend == "reloadly":
        async with _reloadly(job, clock) as backend:
            yield backend
    else:
        async with _dingconnect(job, clock) as backend:
            yield backend


@contextlib.asynccontextmanager
async def _simulated(job: Job, folder: Path, cipher: Any,
                     clock: Any) -> AsyncIterator[_Backend]:
    from sqlalchemy import text

    from bot.gateways.simulated_carrier import SimulatedCarrier, SimulatorKnobs
    from storage import migrate
    from storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{folder / 'simulated.db'}")
    await migrate.upgrade(db)
    carrier = SimulatedCarrier(db, cipher, clock, SimulatorKnobs(latency_ms=job.latency_ms))
    paid = [0]

    async def count_paid() -> int:
        async with db.read() as conn:
            return int((await conn.execute(text(
                "SELECT count(*) FROM sim_topups WHERE status = 'succeeded'"))).scalar_one())

    try:
        yield _Backend(carrier, lambda: [], lambda: paid[0], lambda: 0.0)
    finally:
        paid[0] = await count_paid()
        await db.dispose()


@contextlib.asynccontextmanager
async def _reloadly(job: Job, clock: Any) -> AsyncIterator[_Backend]:
    from bot.gateways.reloadly import ReloadlyConfig, ReloadlyGateway

    def gateway(info: dict[str, Any]) -> ReloadlyGateway:
        return ReloadlyGateway(ReloadlyConfig(
            client_id=info["client_id"], client_secret=info["client_secret"], sandbox=True,
            auth_url=info["base_url"], api_url=info["base_url"]), clock)

    if not job.fake_thread:
        async with _remote(job, gateway) as backend:
            yield backend
        return
    from tests.fakes.reloadly import FakeReloadly

    with FakeReloadly(clock=clock.now, balance=FAKE_FLOAT) as fake:
        fake.latency_seconds = job.latency_ms / 1000
        adapter = gateway({"client_id": fake.client_id, "client_secret": fake.client_secret,
                           "base_url": fake.base_url})
        thread = _fake_thread(fake.name)
        try:
            yield _Backend(
                adapter, lambda: [(r.method, r.path) for r in fake.requests],
                lambda: sum(t.status == "SUCCESSFUL" for t in fake.transactions()),
                lambda: _thread_cpu(thread))
        finally:
            await adapter.aclose()


@contextlib.asynccontextmanager
async def _dingconnect(job: Job, clock: Any) -> AsyncIterator[_Backend]:
    from bot.gateways.dingconnect import DingConfig, DingConnectGateway

    def gateway(info: dict[str, Any]) -> DingConnectGateway:
        return DingConnectGateway(DingConfig(api_key=info["api_key"],
                                             api_url=info["base_url"]), clock)

    if not job.fake_thread:
        async with _remote(job, gateway) as backend:
            yield backend
        return
    from tests.fakes.dingconnect import DEFAULT_API_KEY, FakeDingConnect

    with FakeDingConnect(clock=clock.now, balance=FAKE_FLOAT) as fake:
        fake.latency_seconds = job.latency_ms / 1000
        adapter = gateway({"api_key": DEFAULT_API_KEY, "base_url": fake.base_url})
        thread = _fake_thread(fake.name)
        try:
            yield _Backend(
                adapter, lambda: [(r.method, r.path) for r in fake.requests],
                lambda: sum(t.state == "Complete" for t in fake.transfers()),
                lambda: _thread_cpu(thread))
        finally:
            await adapter.aclose()


def _thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds of a thread so far (0 when there is none or it is gone)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: the loop and the fake's
    return usage.ru_utime + usage.ru_stime


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _drive(service: Any, pairs: list[tuple[int, int]], concurrency: int,
                 timings: _Timings) -> Counter[str]:
    """Every line's charge, requested and approved, ``concurrency`` at a time; how each
    ended (the state approve returned, or what went wrong)."""
    from bot.domain.money import Money
    from bot.services.charging import Approved, Requested

    slots = asyncio.Semaphore(concurrency)
    amount = Money(AMOUNT_CENTS, "USD")

    async def one(user_id: int, line_id: int) -> str:
        async with slots:
            started = time.perf_counter()
            asked = await service.request_manual(user_id, line_id, amount, None,
                                                 f"bench-{line_id}")
            if not isinstance(asked, Requested):
                return f"request: {type(asked).__name__}"
            approved = await service.approve(user_id, asked.charge.id)
            timings.charge_ms.append((time.perf_counter() - started) * 1000)
            if not isinstance(approved, Approved):
                return f"approve: {type(approved).__name__}"
            return str(approved.charge.state.value)

    ends = await asyncio.gather(*(one(u, line) for u, line in pairs), return_exceptions=True)
    return Counter(e if isinstance(e, str) else f"raised {type(e).__name__}: {e}"[:120]
                   for e in ends)


async def _states(db: Any) -> dict[str, int]:
    from sqlalchemy import text

    async with db.read() as conn:
        rows = await conn.execute(text("SELECT state, count(*) FROM charges GROUP BY state"))
        return {str(state): int(n) for state, n in rows}


async def _run(job: Job) -> dict[str, Any]:
    from bot.clock import SystemClock
    from bot.services.charging import ChargingService
    from storage import migrate
    from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
    from storage.db import Database

    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    connections = _Connections()
    connections.install()
    retries = _PoolRetries()
    retries.install()
    clock = SystemClock()
    cipher = FieldCipher(KeyMaterial(encryption_keys=(generate_fernet_key(),),
                                     blind_index_key=os.urandom(32)))
    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        folder = Path(tmp)
        db = Database(f"sqlite+aiosqlite:///{folder / 'bot.db'}")
        await migrate.upgrade(db)
        pairs = await _seed(db, cipher, clock, job.charges)
        timings = _Timings()
        async with _open_backend(job, folder, cipher, clock) as backend:
            service = ChargingService(db, cipher, _TimedProvider(backend.provider, timings),
                                      clock)
            fake_cpu0 = backend.fake_cpu()
            cpu0 = _cpu_seconds()
            started = time.perf_counter()
            try:
                ends = await asyncio.wait_for(
                    _drive(service, pairs, job.concurrency, timings), job.timeout_s)
            except TimeoutError:
                ends = Counter({f"timed out after {job.timeout_s:.0f} s": job.charges})
            seconds = time.perf_counter() - started
            own_cpu = _cpu_seconds() - cpu0  # this process: the loop (and a fake's thread)
            fake_cpu = backend.fake_cpu() - fake_cpu0
            requests = backend.requests()
        states = await _states(db)
        await db.dispose()
    paid = backend.paid()
    # CPU per charge counts the fake either way: in this process's figure when it is a
    # thread here, added when it is a process of its own. CPU % is this process's alone.
    cpu = own_cpu if backend.in_process else own_cpu + fake_cpu
    accepted = backend.connections()
    problems = [f"{len(backend.warnings())} kinds of warnings logged by the fake, first: "
                f"{backend.warnings()}"] if backend.warnings() else []
    return _result(job, ends, states, paid, seconds, cpu, own_cpu, fake_cpu, requests,
                   timings, connections.count if accepted is None else accepted,
                   retries.count, warnings, problems)


def _result(job: Job, ends: Counter[str], states: dict[str, int], paid: int, seconds: float,
            cpu: float, own_cpu: float, fake_cpu: float, requests: list[tuple[str, str]],
            timings: _Timings, connections: int, pool_retries: int, warnings: _Warnings,
            problems: list[str]) -> dict[str, Any]:
    succeeded = ends.get("succeeded", 0)
    problems = [f"{n} charges ended {end}" for end, n in sorted(ends.items())
                if end != "succeeded"] + problems
    if states.get("succeeded", 0) != succeeded or sum(states.values()) != job.charges:
        problems.append(f"charges in the database: {states}")
    if paid != succeeded:
        problems.append(f"the backend recorded {paid} successful top-ups for {succeeded} "
                        f"succeeded charges")
    if warnings.count:
        problems.append(f"{warnings.count} warnings logged, first: {warnings.first}")
    charge_ms, top_up_ms = sorted(timings.charge_ms), sorted(timings.top_up_ms)
    return {
        "backend": job.backend, "latency_ms": job.latency_ms, "charges": job.charges,
        "succeeded": succeeded, "seconds": seconds,
        "rate": succeeded / seconds if seconds > 0 else 0.0,
        "p50": _percentile(charge_ms, 50), "p99": _percentile(charge_ms, 99),
        "max": charge_ms[-1] if charge_ms else float("nan"),
        "top_up_p50": _percentile(top_up_ms, 50), "top_up_p99": _percentile(top_up_ms, 99),
        "cpu_ms": 1000 * cpu / job.charges, "fake_cpu_ms": 1000 * fake_cpu / job.charges,
        "cpu_share": own_cpu / seconds if seconds > 0 else float("nan"),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "requests": len(requests),
        "by_path": dict(Counter(f"{m} {p}" for m, p in requests).most_common()),
        "connections": connections, "pool_retries": pool_retries, "problems": problems,
        "fake_thread": job.fake_thread,
    }


def _child(spec: str) -> None:
    child_main(spec, Job, _run)


def _run_child(job: Job) -> dict[str, Any]:
    def failed(why: str) -> dict[str, Any]:
        nan = float("nan")
        return {"backend": job.backend, "latency_ms": job.latency_ms, "charges": job.charges,
                "succeeded": 0, "seconds": nan, "rate": 0.0, "p50": nan, "p99": nan, "max": nan,
                "top_up_p50": nan, "top_up_p99": nan, "cpu_ms": nan, "fake_cpu_ms": nan,
                "cpu_share": nan,
                "rss_mb": nan, "requests": 0, "by_path": {}, "connections": 0, "pool_retries": 0,
                "fake_thread": job.fake_thread,
                "problems": [why]}

    return run_child("bench.providers", job, job.timeout_s + 120, failed)


def _load_note() -> str:
    one, five, fifteen = os.getloadavg()
    busy = " - the machine is busy: figures will be low and noisy" if one > 0.5 else ""
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}{busy}"


def _jobs(charges: int, latencies: list[int], only: str | None,
          fake_thread: bool = False) -> list[Job]:
    # The baseline always runs: the ratio is to the simulator measured in the same run.
    names = [b for b in BACKENDS if only is None or b in (only, BASELINE)]
    return [Job(name, latency, charges, fake_thread=fake_thread)
            for latency in latencies for name in names]


def _verdict(result: dict[str, Any], base: dict[str, Any] | None) -> tuple[str, str]:
    """(ratio to the baseline, PASS/FAIL/ok); FAIL also when a charge did not succeed."""
    if result["problems"]:
        return "-", "FAIL"
    if result["backend"] == BASELINE or base is None or not base["rate"]:
        return "-", "ok"
    ratio = result["rate"] / base["rate"]
    return f"{ratio:.2f}", "PASS" if ratio >= TARGET_RATIO else "FAIL"


def _print_table(jobs: list[Job], results: list[dict[str, Any]]) -> bool:
    """The table and the notes under it; whether everything passed."""
    header = (f"{'backend':<12} {'latency':>7} {'ok/charges':>10} {'seconds':>7} "
              f"{'charges/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'top_up p50':>10} "
              f"{'÷sim':>5} {'HTTP/charge':>11} {'TCP conns':>9} {'retries':>7} {'CPU ms/ch':>9} "
              f"{'of it fake':>10} {'CPU %':>5} {'RSS MB':>6}  result")
    print(header)
    print("-" * len(header))
    ok = True
    notes: list[str] = []
    baselines = {r["latency_ms"]: r for r in results if r["backend"] == BASELINE}
    for job, result in zip(jobs, results, strict=True):
        ratio, verdict = _verdict(result, baselines.get(job.latency_ms))
        ok &= verdict != "FAIL"
        http = f"{result['requests'] / job.charges:.3f}" if result["requests"] else "-"
        conns = str(result["connections"]) if result["requests"] else "-"
        retries = str(result["pool_retries"]) if result["requests"] else "-"
        fake = f"{result['fake_cpu_ms']:.2f}" if result["requests"] else "-"
        print(f"{job.backend:<12} {str(job.latency_ms) + ' ms':>7} "
              f"{str(result['succeeded']) + '/' + str(job.charges):>10} "
              f"{result['seconds']:>7.2f} {result['rate']:>9.1f} {result['p50']:>7.1f} "
              f"{result['p99']:>7.1f} {result['top_up_p50']:>10.1f} {ratio:>5} {http:>11} "
              f"{conns:>9} {retries:>7} {result['cpu_ms']:>9.2f} {fake:>10} "
              f"{100 * result['cpu_share']:>5.0f} {result['rss_mb']:>6.0f}  "
              f"{verdict}")
        where = f"{job.backend} {job.latency_ms} ms"
        notes.extend(f"  {where}: {problem}" for problem in result["problems"])
        if result["by_path"]:
            paths = ", ".join(f"{path} {n}" for path, n in result["by_path"].items())
            notes.append(f"  {where}: requests: {paths}")
    print()
    print(f"target: an adapter's charges/s >= {TARGET_RATIO} x the simulated carrier's at the "
          f"same latency (÷sim); every charge SUCCEEDED")
    print("latency: one charge, request + approve + submit, from its slot to approve returning; "
          "top_up p50: the provider call alone")
    print("HTTP/charge: requests in the fake's log / charges (token or catalog reads included); "
          "TCP conns: connections the fake accepted; retries: requests httpcore's pool handed "
          "a connection already taken (ConnectionNotAvailable), each then tried again")
    in_thread = any(r.get("fake_thread") for r in results)
    where = ("the fakes ran in a thread of the bot's process (--fake-thread)" if in_thread
             else "each fake ran in a process of its own")
    print(f"{where}; CPU ms/ch: the bot's process (every thread) plus the "
          f"fake's, per charge; of it fake: the fake server's; CPU %: the bot's process alone"
          f"{' (the fake thread included)' if in_thread else ''} over the run's wall time "
          f"(100 = one core: the run is CPU-bound; well below the baseline's: the machine was "
          f"busy, or the run waited on something else)")
    print("RSS: the bot process's peak (the setup and the imports included"
          f"{', and the fake' if in_thread else ''})")
    if notes:
        print()
        print("\n".join(notes))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.providers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=1000,
                        help="charges per backend and latency (default 1000)")
    parser.add_argument("--latency-ms", default="50,300",
                        help="provider latencies, comma-separated (default 50,300)")
    parser.add_argument("--only", choices=BACKENDS,
                        help="one backend (the simulated baseline runs too)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or a charge did not succeed")
    parser.add_argument("--fake-thread", action="store_true",
                        help="run each fake in a thread of the bot's process (as before), not "
                             "in a process of its own")
    args = parse_or_serve(parser, argv, child=_child, fake=_fake_main)
    if args is None:  # it ran as a child or as a fake's process
        return 0
    latencies = [int(part) for part in args.latency_ms.split(",") if part.strip()]

    import httpx
    import tornado

    print(f"bench.providers: {os.cpu_count()} cores ({platform.machine()}), Python "
          f"{platform.python_version()}, httpx {httpx.__version__}, tornado {tornado.version}; "
          f"a child process per run, fresh SQLite database; the fakes in "
          f"{'a thread of it' if args.fake_thread else 'a process of their own'}")
    print(f"{args.charges} charges of $5.00 per run, a user and a line each, {CONCURRENCY} in "
          f"flight; latency added per provider call (simulator) or per HTTP answer (fakes)")
    print(f"before: {_load_note()}")
    print()
    jobs = _jobs(args.charges, latencies, args.only, args.fake_thread)
    results = []
    wall = time.perf_counter()
    for job in jobs:
        print(f"  running {job.backend} at {job.latency_ms} ms ...", flush=True)
        results.append(_run_child(job))
    print()
    ok = _print_table(jobs, results)
    print()
    print(f"after: {_load_note()}; whole run {time.perf_counter() - wall:.0f} s")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
