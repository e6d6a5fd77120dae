"""Usage readings of many eSIMs through the Airalo adapter against its local fake, under
Airalo's documented rate limits, beside a client without client-side spacing measured in the
same run.

Run from the project root:  python -m bench.esim  [--check] [--esims 10000]
                            [--latency-ms 100] [--speed 10] [--baseline-speed 2]
                            [--concurrency 128] [--client-gc]

**Simulated time.** At the documented 5 usage reads a second for the whole account, one
round of 10,000 eSIMs takes about 2,200 s, so both sides run on one scaled clock: simulated
now = origin + (time.monotonic() - start) x speed (CLOCK_MONOTONIC is one clock for every
process of the machine, so the child and its fake, given the same origin and start, read the
same simulated now). The adapter gets that clock and ``sleep(s)`` =
``asyncio.sleep(s / speed)`` (its spacing, its waits for Retry-After, its read retries); the
fake gets the clock (its rate-limit windows, its 429s' Retry-After) and ``latency_seconds``
= latency / speed of real time. **Every figure is in simulated seconds** unless it says
"real" (the wall time of the round, CPU %, stalls). The adapter's requests carry their
simulated sending time (``SENT_HEADER``, set by its transport) and the fake takes each as
arriving exactly ``latency`` later, whenever its process gets to it: its rate-limit windows
then do not see the fake process's own scheduling delays.

Real time still costs simulated time, ``speed`` times over, and so does every real stall
and jitter of the client: at 15x a 7 ms hiccup is 0.1 s simulated. The spacing leaves some
room for it: slots 1.25 / 5 = 0.25 s apart (``SPACING_MARGIN``) put 5 requests in a 1-s
window with 0.25 s to spare, so a request that late makes a sixth in the window and a 429.
With the earlier margin of 1.1 (0.1 s to spare), measured on 2 cores (10,000 eSIMs, 429s
after the first minute): at 20x 11-54 (the fake's clock read as it got
to a request, the client's full collections on) and 11 (them held back), at 15x 0 on an idle
machine, 4 and 1 (with the sending stamp) with other work on it, at 10x 0, 1 and 0; hence
the default ``--speed 10`` for the spaced run. The unspaced run is CPU-bound from 3x on (the
128 requests it sends after every Retry-After take ~0.25 s of the client's CPU, ~2 ms each,
which the scale stretches over most of the next window or more: fewer reads give up, fewer
429s): at 1x and 2x its figures were the same, at 3x-15x they drifted; hence
``--baseline-speed 2``. A note says when a run used more
than 60 % of a core, and when the spaced run's reads/s after the first minute fell below
0.97 x the spacing's 4 a second (the machine did not keep up).

The client's full garbage collections are held back during the round (young ones run as
usual; the start-up objects are frozen first, as ``bot.app.freeze_start_up_objects`` does),
then one is run and timed: each read leaves cyclic garbage (tenacity's retry state among it)
that outlives the young collections while the read waits for its slot, and a full
collection of it held the client's loop 45-85 ms real, 0.9-1.7 s simulated at 20x: enough
to let 4-8 slots through at once (429s a client at 1x would not get from such a pause).
``--client-gc`` keeps them, as in production. The peak RSS then includes that garbage.

**Runs**, each a child process (``--child``) with the fake in a process of its own
(``--fake``, started by the child, answering over a pipe after the run) so that the fake does
not take the client's GIL or core:
  spaced     ``AiraloGateway`` as configured for production, ``usage_per_second=5``: its
             ``SpacedCalls`` gives each usage call a slot 1.25 / 5 s after the one before.
  unspaced   the baseline, ``usage_per_second=1000``: only the fake's 429s hold it back
             (what a client without client-side spacing does: the adapter still waits out
             Retry-After, pausing its usage calls until then, and gives up after 3 waits in a
             row with ``RateLimited``).
The fake is ``tests.fakes.airalo.FakeAiralo`` with its default, documented limits (usage: 10 a
minute per ICCID and 5 a second for the account, fixed windows opened by their first
request, on the fake's clock), seeded with ``make_sims`` (``--esims`` installed eSIMs of one
package, no HTTP request), ``latency_seconds`` added before every answer. A subclass here
keeps the simulated time of every 429 it answers (the client cannot see them: the adapter
waits them out) and of every usage request when its limits are checked (the busiest 1 s
is printed), and its request log as counts per path (30,000 logged requests are long-lived
objects the fake's full collections would walk again and again).

Expected at the start of the spaced run: a 429 or two in the first seconds. The adapter
takes its slot before its bearer token, so the slots that pass while the one token request
is answered (~0.6-1 s simulated here: a new connection and the fake's latency) go together
once it is there: 6 or 7 requests in the first window.

Both runs read every eSIM once through ``AiraloGateway.usage``, ``--concurrency`` reads at a
time (128: the scheduler's sweep concurrency; a pool of workers, each taking the next eSIM).
A read ends with a reading, ``RateLimited`` (gave up) or another error. Round: from the
first read's start to the last read's end. reads/s: readings / round. Latency of a read:
one ``usage()`` call, its wait for a slot and for Retry-After included. 429s: answered by the
fake to usage requests, in all and after the first simulated minute of the round.

Targets (the spaced run; ``--check`` exits 1 when one is missed): every eSIM read, no read
given up or failed, no 429 after the first minute. The baseline is there to be compared
with: its 429s and given-up reads are what the spacing is for.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.children import child_main, close_child, parse_or_serve, run_child
from bot.gateways.rate_limit import SPACING_MARGIN

RUNS = ("spaced", "unspaced")
TARGET_RUN = "spaced"
BASELINE = "unspaced"
LIMIT_PER_SECOND = 5  # Airalo's documented usage limit for the whole account
UNSPACED_PER_SECOND = 1000  # spacing of 1.25 ms: in effect none
CONCURRENCY = 128  # the scheduler's sweep: reads in flight at once
DEFAULT_SPEED = 10.0  # the spaced run: 15x-20x let real jitter through as 429s (docstring)
BASELINE_SPEED = 2.0  # the unspaced run: from 3x on its bursts are CPU-bound, its figures move
CPU_BOUND = 0.6  # a run's client CPU share of one core above which its figures are suspect
NO_FULL_COLLECTION = 10**9  # gc threshold 2: young collections only
FIRST_MINUTE = 60.0  # simulated seconds after the round's start when 429s must have stopped
KEEPING_UP = 0.97  # reads/s after the first minute over the spacing's rate, at least
SENT_HEADER = "X-Bench-Sent"  # the client's simulated sending time, POSIX seconds
PACKAGE = "cambodia-15days-3gb"  # tests.fakes.airalo.PACKAGE_3GB


@dataclass(frozen=True)
class Job:
    """What one child process does."""

    run: str
    esims: int
    latency_ms: float
    speed: float
    concurrency: int
    usage_per_second: int
    timeout_s: float  # real seconds
    full_gc: bool = False  # the client's full collections during the round (--client-gc)


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time, ``speed`` times faster than real time: ``origin`` (POSIX seconds)
    at ``start`` (``time.monotonic()``, the same clock in every process of the machine).
    A ``bot.clock.Clock``; ``sleep`` is the adapter's."""

    origin: float
    start: float
    speed: float

    def seconds(self) -> float:
        """Simulated now, POSIX seconds."""
        return self.origin + (time.monotonic() - self.start) * self.speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.seconds(), UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _busiest(moments: list[float], span: float = 1.0) -> int:
    """The most of ``moments`` (sorted) in any ``span`` [t, t + span)."""
    most, first = 0, 0
    for last, moment in enumerate(moments):
        while moments[first] <= moment - span:
            first += 1
        most = max(most, last - first + 1)
    return most


def _around(arrivals: list[float], moment: float) -> str:
    """The usage requests that reached the fake from 1.2 s before ``moment`` to 0.3 s after,
    as offsets from it: why a 429 came (six in a window opened by the first of them)."""
    first = bisect.bisect_left(arrivals, moment - 1.2)
    last = bisect.bisect_right(arrivals, moment + 0.3)
    return f"{moment:.1f} s: " + " ".join(f"{t - moment:+.2f}" for t in arrivals[first:last])


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


class _Warnings(logging.Handler):
    """Counts WARNING and above (the adapter's 429s are INFO; anything louder is news)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(f"{record.name}: {record.getMessage()}")


def _freeze_start_up_objects() -> None:
    """What ``bot.app.freeze_start_up_objects`` does once the bot has started (its imports
    would bring the Telegram stack into this process): everything alive now out of the
    collector's sight, so a full collection does not walk it again (an unfrozen one held
    this bench's client loop up to ~80 ms real, 1.6 s simulated at 20x)."""
    gc.collect()
    gc.freeze()


class _GcPauses:
    """The garbage collector's pauses in this process (``gc.callbacks``), real ms: a pause
    stops the process, and the scaled clock makes it ``speed`` times longer in simulated
    time (requests held back meanwhile arrive together)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self.total = 0.0
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        generation = int(info.get("generation", 0))
        self.count[generation] += 1
        self.longest[generation] = max(self.longest[generation], ms)
        self.total += ms

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "longest_ms": self.longest, "total_ms": self.total}


class _LoopLag:
    """How late an event loop runs a 10 ms (real) timer: its longest stall."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self.over_20ms = 0

    async def watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            late = (time.perf_counter() - before - 0.01) * 1000
            self.longest_ms = max(self.longest_ms, late)
            self.over_20ms += late > 20


# -- the fake's process -----------------------------------------------------------------------


def _path_kind(path: str) -> str:
    """A request's path with the ICCID left out: "usage" for every eSIM's usage."""
    return "usage" if path.endswith("/usage") else path


class _RequestCounts(list[Any]):
    """The fake's request log, kept as counts per method and path kind: 30,000 logged
    requests are long-lived objects every full collection of the fake walks again (a pause
    that holds answers back, then lets them through together)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def append(self, request: Any) -> None:
        self.counts[f"{request.method} {_path_kind(request.path)}"] += 1


def _fake_main(spec: str) -> None:
    """The fake's own process (``--fake``): seed it, say READY with its address and the
    ICCIDs, then answer REPORT on stdin until it closes."""
    from tests.fakes.airalo import FakeAiralo, RateLimit
    from tests.fakes.http import Answer, LoggedRequest

    class CountingAiralo(FakeAiralo):
        """FakeAiralo that keeps every 429 it answered (path kind, simulated time) and
        counts the usage readings it gave. An API request stamped by the client
        (``SENT_HEADER``) is seen at its sending time + the latency, whenever this process
        gets to it: the network is exactly ``latency`` long, and this process's own
        scheduling and loop delays (``speed`` times longer in simulated time) are not
        part of it."""

        def __init__(self, *, network_s: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.network_s = network_s
            self.seen_at: datetime | None = None  # of the request being answered
            self.log = _RequestCounts()
            self.requests = self.log
            self.refused_kinds: list[str] = []  # of each 429: lists of untracked items
            self.refused_at: list[float] = []
            self.usage_arrivals: list[float] = []  # when each usage request was counted
            self.usage_answered = 0

        def _refused(self, request: LoggedRequest, refusal: Any) -> Answer:
            answer = super()._refused(request, refusal)
            if answer.status == 429:  # under self.lock, as every handler
                self.refused_kinds.append(_path_kind(request.path))
                self.refused_at.append(self._now().timestamp())
            return answer

        def _usage_limits(self, request: LoggedRequest,
                          params: dict[str, str]) -> list[tuple[str, RateLimit | None]]:
            self.usage_arrivals.append(self._now().timestamp())  # before its rate limits
            return super()._usage_limits(request, params)

        def _usage(self, request: LoggedRequest, params: dict[str, str]) -> Answer:
            answer = super()._usage(request, params)
            self.usage_answered += answer.status == 200
            return answer

        def _now(self) -> datetime:
            return self.seen_at or super()._now()

        def _api(self, handler: Any, limits: Any = None) -> Any:
            guarded = super()._api(handler, limits)

            def stamped(request: LoggedRequest, params: dict[str, str]) -> Answer:
                sent = request.headers.get(SENT_HEADER.lower())
                with self.lock:
                    self.seen_at = (None if sent is None else datetime.fromtimestamp(
                        float(sent) + self.network_s, UTC))
                    try:
                        return guarded(request, params)
                    finally:
                        self.seen_at = None
            return stamped

    args = json.loads(spec)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    pauses = _GcPauses()
    pauses.install()
    clock = ScaledClock(**args["clock"])
    fake = CountingAiralo(clock=clock.now, network_s=args["latency_ms"] / 1000)
    lag = _LoopLag()
    with fake:
        assert fake._loop is not None  # started: its loop runs in the server's thread
        asyncio.run_coroutine_threadsafe(lag.watch(), fake._loop)
        fake.latency_seconds = args["latency_ms"] / 1000 / clock.speed
        iccids = fake.make_sims(PACKAGE, args["esims"])
        _freeze_start_up_objects()  # the seeded eSIMs: a provider's own state, not ours
        print("READY " + json.dumps({"api_url": fake.api_url, **fake.credentials,
                                     "iccids": iccids}), flush=True)
        for line in sys.stdin:
            if line.strip() == "REPORT":
                with fake.lock:
                    report = {"refusals": list(zip(fake.refused_kinds, fake.refused_at,
                                                   strict=True)),
                              "arrivals": fake.usage_arrivals,
                              "usage_answered": fake.usage_answered,
                              "requests": dict(fake.log.counts.most_common()),
                              "cpu": _cpu_seconds(), "rss_mb": _rss_mb(),
                              "gc": pauses.summary(), "lag_ms": lag.longest_ms,
                              "lags_over_20ms": lag.over_20ms,
                              "warnings": warnings.first, "warning_count": warnings.count}
                print("REPORT " + json.dumps(report), flush=True)


class _Stamping(httpx.AsyncBaseTransport):
    """The adapter's transport (``provider_transport()``), each request stamped with its
    simulated sending time (``SENT_HEADER``) as it is handed to the connection pool."""

    def __init__(self, clock: ScaledClock) -> None:
        from bot.gateways.http import provider_transport

        self._inner = provider_transport()
        self._clock = clock
        self.failures: Counter[str] = Counter()  # requests that got no answer, by error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers[SENT_HEADER] = repr(self._clock.seconds())
        try:
            return await self._inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            self.failures[f"{type(exc).__name__}: {exc}"[:100]] += 1
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _FakeProcess:
    """The child's side of the fake in its own process (see ``_fake_main``)."""

    def __init__(self, job: Job, clock: ScaledClock) -> None:
        spec = {"esims": job.esims, "latency_ms": job.latency_ms,
                "clock": dataclasses.asdict(clock)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.esim", "--fake", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = json.loads(self._expect("READY"))
        self._report: dict[str, Any] | None = None

    def _expect(self, word: str) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith(word + " "):
            raise RuntimeError(f"the fake process answered {line[:200]!r}, not {word}")
        return line[len(word) + 1:]

    def report(self) -> dict[str, Any]:
        """The fake's 429s, readings, requests, CPU and RSS: read once, after the run."""
        if self._report is None:
            assert self._process.stdin is not None
            self._process.stdin.write("REPORT\n")
            self._process.stdin.flush()
            self._report = json.loads(self._expect("REPORT"))
        return self._report

    def close(self) -> None:
        close_child(self._process)


# -- the child: one run -----------------------------------------------------------------------


@dataclass
class _Reads:
    started: list[float] = field(default_factory=list)  # simulated POSIX seconds
    ended: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)  # whether it gave a reading
    latency: list[float] = field(default_factory=list)  # of the reads that gave a reading
    outcomes: Counter[str] = field(default_factory=Counter)


async def _read_all(gateway: Any, clock: ScaledClock, iccids: list[str],
                    concurrency: int) -> _Reads:
    """Every eSIM's usage once, ``concurrency`` workers each taking the next eSIM."""
    from bot.gateways.http import RateLimited

    reads = _Reads()
    pending = iter(iccids)

    async def worker() -> None:
        for iccid in pending:
            started = clock.seconds()
            try:
                await gateway.usage(iccid)
                outcome = "read"
            except RateLimited:
                outcome = "gave up"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"[:120]
            ended = clock.seconds()
            reads.started.append(started)
            reads.ended.append(ended)
            reads.ok.append(outcome == "read")
            reads.outcomes[outcome] += 1
            if outcome == "read":
                reads.latency.append(ended - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return reads


async def _run(job: Job) -> dict[str, Any]:
    from bot.gateways.airalo import AiraloConfig, AiraloGateway

    warnings = _Warnings()
    logging.getLogger().addHandler(warnings)
    clock = ScaledClock(origin=time.time(), start=time.monotonic(), speed=job.speed)
    fake = _FakeProcess(job, clock)
    problems: list[str] = []
    try:
        info = fake.info
        iccids: list[str] = info["iccids"]
        transport = _Stamping(clock)
        gateway = AiraloGateway(
            AiraloConfig(client_id=info["client_id"], client_secret=info["client_secret"],
                         api_url=info["api_url"], usage_per_second=job.usage_per_second),
            clock, sleep=clock.sleep, transport=transport)
        try:
            _freeze_start_up_objects()
            thresholds = gc.get_threshold()
            if not job.full_gc:  # young collections only: see the module docstring
                gc.set_threshold(thresholds[0], thresholds[1], NO_FULL_COLLECTION)
            pauses = _GcPauses()
            pauses.install()
            lag = _LoopLag()
            watching = asyncio.create_task(lag.watch())
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            try:
                reads = await asyncio.wait_for(
                    _read_all(gateway, clock, iccids, job.concurrency), job.timeout_s)
            except TimeoutError:
                reads = _Reads(outcomes=Counter({f"timed out after {job.timeout_s:.0f} s real":
                                                 job.esims}))
            wall = time.perf_counter() - wall0
            watching.cancel()
            pauses.uninstall()
            gc.set_threshold(*thresholds)
            held_back = time.perf_counter()
            collected = gc.collect()  # what the round left for a full collection
            held_back_ms = (time.perf_counter() - held_back) * 1000
            cpu = _cpu_seconds() - cpu0
            report = fake.report()
        finally:
            await gateway.aclose()
    finally:
        fake.close()
    read = reads.outcomes.get("read", 0)
    lost = sum(transport.failures.values())  # an answer lost may have been a reading
    if not read <= report["usage_answered"] <= read + lost:
        problems.append(f"the fake gave {report['usage_answered']} readings, the client "
                        f"counted {read} ({lost} requests without an answer)")
    if warnings.count:
        problems.append(f"{warnings.count} warnings logged, first: {warnings.first}")
    if report["warning_count"]:
        problems.append(f"the fake logged {report['warning_count']} warnings, first: "
                        f"{report['warnings']}")
    result = _result(job, reads, report, wall, cpu, problems)
    result.update(transport_failures=dict(transport.failures), gc=pauses.summary(),
                  fake_gc=report["gc"], lag_ms=lag.longest_ms,
                  lags_over_20ms=lag.over_20ms, full_gc=job.full_gc,
                  held_back=collected, held_back_ms=held_back_ms,
                  fake_lag_ms=report["lag_ms"], fake_lags_over_20ms=report["lags_over_20ms"])
    return result


def _result(job: Job, reads: _Reads, report: dict[str, Any], wall: float, cpu: float,
            problems: list[str]) -> dict[str, Any]:
    nan = float("nan")
    start = min(reads.started, default=nan)
    end = max(reads.ended, default=nan)
    round_s = end - start
    read = reads.outcomes.get("read", 0)
    after = start + FIRST_MINUTE
    late_reads = sum(1 for t, ok in zip(reads.ended, reads.ok, strict=True) if ok and t > after)
    usage_429 = sorted(t - start for kind, t in report["refusals"] if kind == "usage")
    other_429 = Counter(kind for kind, _ in report["refusals"] if kind != "usage")
    per_minute = Counter(int(t // 60) for t in usage_429)
    arrivals = sorted(t - start for t in report["arrivals"])
    latency = sorted(reads.latency)
    errors = {o: n for o, n in reads.outcomes.items() if o not in ("read", "gave up")}
    return {
        "run": job.run, "usage_per_second": job.usage_per_second, "esims": job.esims,
        "read": read, "gave_up": reads.outcomes.get("gave up", 0), "errors": errors,
        "round_s": round_s, "rate": read / round_s if round_s > 0 else 0.0,
        "rate_after": late_reads / (end - after) if end > after else nan,
        "p50": _percentile(latency, 50), "p99": _percentile(latency, 99),
        "max": latency[-1] if latency else nan,
        "429": len(usage_429), "429_after": sum(1 for t in usage_429 if t > FIRST_MINUTE),
        "429_first": usage_429[0] if usage_429 else None,
        "429_after_at": [round(t, 1) for t in usage_429 if t > FIRST_MINUTE][:12],
        "429_last": usage_429[-1] if usage_429 else None,
        "429_per_minute": [per_minute.get(m, 0) for m in range(min(5, max(per_minute, default=-1)
                                                                    + 1))],
        "around_late_429": [_around(arrivals, t) for t in usage_429
                            if t > FIRST_MINUTE][:3 if job.run == TARGET_RUN else 0],
        "busiest": _busiest(arrivals),
        "busiest_after": _busiest([t for t in arrivals if t > FIRST_MINUTE]),
        "first_arrivals": [round(t, 2) for t in arrivals[:12]],
        "other_429": dict(other_429), "requests": report["requests"],
        "wall_s": wall, "cpu_share": cpu / wall if wall > 0 else nan,
        "fake_cpu_s": report["cpu"], "rss_mb": _rss_mb(), "fake_rss_mb": report["rss_mb"],
        "problems": problems,
    }


def _child(spec: str) -> None:
    child_main(spec, Job, _run)


def _run_child(job: Job) -> dict[str, Any]:
    def failed(why: str) -> dict[str, Any]:
        nan = float("nan")
        return {"run": job.run, "usage_per_second": job.usage_per_second, "esims": job.esims,
                "read": 0, "gave_up": 0, "errors": {}, "round_s": nan, "rate": 0.0,
                "rate_after": nan, "p50": nan, "p99": nan, "max": nan, "429": 0, "429_after": 0,
                "429_first": None, "429_last": None, "429_per_minute": [], "busiest": 0,
                "busiest_after": 0, "first_arrivals": [], "other_429": {},
                "requests": {}, "wall_s": nan, "cpu_share": nan, "fake_cpu_s": nan,
                "rss_mb": nan, "fake_rss_mb": nan,
                "problems": [why]}

    return run_child("bench.esim", job, job.timeout_s + 120, failed)


def _jobs(esims: int, latency_ms: float, speed: float, baseline_speed: float,
          concurrency: int, full_gc: bool = False) -> list[Job]:
    # Long enough for a spaced round (a slot every SPACING_MARGIN / 5 s) three times over, in
    # real time; the unspaced round is shorter (its reads give up).
    spaced_s = esims * SPACING_MARGIN / LIMIT_PER_SECOND + 2 * FIRST_MINUTE
    jobs = []
    for run in RUNS:
        pace = speed if run == TARGET_RUN else baseline_speed
        jobs.append(Job(run, esims, latency_ms, pace, concurrency,
                        LIMIT_PER_SECOND if run == TARGET_RUN else UNSPACED_PER_SECOND,
                        3 * spaced_s / pace + 120, full_gc))
    return jobs


def _load_note() -> str:
    one, five, fifteen = os.getloadavg()
    busy = " - the machine is busy: figures will be low and noisy" if one > 0.5 else ""
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}{busy}"


def _misses(result: dict[str, Any]) -> list[str]:
    """What fails --check: a wrong run (either), a missed target (the spaced run)."""
    misses = list(result["problems"])
    misses.extend(f"{n} reads ended {error}" for error, n in result["errors"].items())
    if result["run"] == TARGET_RUN:
        if result["read"] != result["esims"]:
            misses.append(f"{result['read']} of {result['esims']} eSIMs read")
        if result["gave_up"]:
            misses.append(f"{result['gave_up']} reads gave up (RateLimited)")
        if result["429_after"]:
            misses.append(f"{result['429_after']} 429s after the first minute")
    return misses


def _gc_note(who: str, pauses: dict[str, Any]) -> str:
    return (f"{who} GC {'/'.join(map(str, pauses['count']))} collections (gen 0/1/2), "
            f"longest {pauses['longest_ms'][2]:.0f} ms (gen 2), {pauses['total_ms']:.0f} ms "
            f"in all")


def _seconds(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _print_table(jobs: list[Job], results: list[dict[str, Any]]) -> bool:
    """The table, the comparison and the notes under it; whether --check passes."""
    header = (f"{'run':<9} {'speed':>5} {'per s':>5} {'read/eSIMs':>11} {'gave up':>7} "
              f"{'errors':>6} "
              f"{'round s':>8} {'reads/s':>7} {'after 1m':>8} {'p50 s':>6} {'p99 s':>6} "
              f"{'429s':>7} {'after 1m':>8} {'usage HTTP':>10} {'wall s':>7} "
              f"{'CPU % bot/fake':>14} {'RSS MB':>6}  result")
    print(header)
    print("-" * len(header))
    ok = True
    notes: list[str] = []
    spacing = LIMIT_PER_SECOND / SPACING_MARGIN
    for job, result in zip(jobs, results, strict=True):
        misses = _misses(result)
        verdict = "FAIL" if misses else ("PASS" if job.run == TARGET_RUN else "ok")
        ok &= not misses
        wall = result["wall_s"]
        fake_share = result["fake_cpu_s"] / wall if wall and wall > 0 else float("nan")
        cpu = f"{100 * result['cpu_share']:.0f} / {100 * fake_share:.0f}"
        errors = sum(result["errors"].values())
        usage_requests = sum(n for k, n in result["requests"].items() if k.endswith(" usage"))
        print(f"{job.run:<9} {str(round(job.speed, 2)) + 'x':>5} {job.usage_per_second:>5} "
              f"{str(result['read']) + '/' + str(job.esims):>11} {result['gave_up']:>7} "
              f"{errors:>6} {_seconds(result['round_s']):>8} {result['rate']:>7.2f} "
              f"{result['rate_after']:>8.2f} {result['p50']:>6.1f} {result['p99']:>6.1f} "
              f"{result['429']:>7} {result['429_after']:>8} {usage_requests:>10} "
              f"{_seconds(wall):>7} {cpu:>14} {result['rss_mb']:>6.0f}  {verdict}")
        notes.extend(f"  {job.run}: {miss}" for miss in misses)
        if result["429"]:
            notes.append(
                f"  {job.run}: usage 429s from {result['429_first']:.1f} s to "
                f"{result['429_last']:.1f} s after the round's start; in its first minutes: "
                f"{', '.join(map(str, result['429_per_minute']))}")
        if result.get("429_after_at"):
            notes.append(f"  {job.run}: the first 429s after the first minute at "
                         f"{', '.join(map(str, result['429_after_at']))} s")
        notes.extend(f"  {job.run}: usage requests around the 429 at {around}"
                     for around in result.get("around_late_429", []))
        if "gc" in result:
            notes.append(f"  {job.run}: real-time stalls: the client's loop at most "
                         f"{result['lag_ms']:.0f} ms late ({result['lags_over_20ms']} times "
                         f"over 20 ms), the fake's {result['fake_lag_ms']:.0f} ms "
                         f"({result['fake_lags_over_20ms']}), i.e. up to "
                         f"{max(result['lag_ms'], result['fake_lag_ms']) * job.speed:.0f} ms "
                         f"simulated; {_gc_note('client', result['gc'])}"
                         + ("" if result["full_gc"] else
                            f", after the round a full one: {result['held_back']:,} objects "
                            f"freed in {result['held_back_ms']:.0f} ms")
                         + f"; {_gc_note('fake', result['fake_gc'])}")
        if result.get("transport_failures"):
            notes.append(f"  {job.run}: requests without an answer (the adapter retries a "
                         f"read): {result['transport_failures']}")
        if result["other_429"]:
            notes.append(f"  {job.run}: other 429s: {result['other_429']}")
        if result["requests"]:
            paths = ", ".join(f"{path} {n}" for path, n in result["requests"].items())
            notes.append(f"  {job.run}: requests: {paths}")
        notes.append(f"  {job.run}: most usage requests reaching the fake in any 1 s: "
                     f"{result['busiest']} ({result['busiest_after']} after the first "
                     f"minute); the first reached it at "
                     f"{', '.join(map(str, result['first_arrivals']))} s")
        notes.append(f"  {job.run}: latency max {result['max']:.1f} s; the fake's process: "
                     f"peak RSS {result['fake_rss_mb']:.0f} MB")
        if (job.run == TARGET_RUN and not math.isnan(result["rate_after"])
                and result["rate_after"] < KEEPING_UP * spacing):
            notes.append(f"  {job.run}: reads/s after the first minute is below "
                         f"{KEEPING_UP} x the spacing's {spacing:.2f}: the machine did not "
                         f"keep up at {job.speed:g}x (lower --speed)")
        if result["cpu_share"] > CPU_BOUND:
            notes.append(f"  {job.run}: the client used {100 * result['cpu_share']:.0f} % of a "
                         f"core: CPU-bound at {job.speed:g}x, its figures depend on the speed "
                         f"(lower {'--speed' if job.run == TARGET_RUN else '--baseline-speed'})")
    print()
    by_run = {r["run"]: r for r in results}
    spaced, unspaced = by_run.get(TARGET_RUN), by_run.get(BASELINE)
    if spaced and unspaced and unspaced["round_s"] and unspaced["rate"]:
        print(f"spaced ÷ unspaced: round time {spaced['round_s'] / unspaced['round_s']:.2f}x, "
              f"reads/s {spaced['rate'] / unspaced['rate']:.2f}x, 429s {spaced['429']:,} "
              f"against {unspaced['429']:,}"
              + (f" ({spaced['429'] / unspaced['429']:.4f}x)" if unspaced["429"] else "")
              + f", given up {spaced['gave_up']:,} against {unspaced['gave_up']:,}")
    print(f"targets ({TARGET_RUN}): every eSIM read, none given up or failed, no 429 after the "
          f"first simulated minute")
    print(f"simulated seconds (speed: per real second) but wall s and CPU %; per s: the "
          f"adapter's usage_per_second (its spacing: {SPACING_MARGIN} / per s); reads/s: "
          f"readings / round, "
          f"and after the round's first minute (spacing at {LIMIT_PER_SECOND}/s: "
          f"{spacing:.2f}); p50/p99: one usage() call, its waits included (readings only)")
    print("429s: the fake's answers to usage requests; usage HTTP: usage requests the fake got "
          "(429s included); CPU %: of one core over the round's wall time, the client's "
          "process / the fake's; RSS: the client process's peak (the imports included)")
    if notes:
        print()
        print("\n".join(notes))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.esim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--esims", type=int, default=10_000,
                        help="eSIMs read per run (default 10000)")
    parser.add_argument("--latency-ms", type=float, default=100.0,
                        help="the fake's latency per answer, simulated ms (default 100)")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help=f"simulated seconds per real second (default {DEFAULT_SPEED:g})")
    parser.add_argument("--baseline-speed", type=float, default=BASELINE_SPEED,
                        help=f"the same for the unspaced run (default {BASELINE_SPEED:g})")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help=f"reads in flight at once (default {CONCURRENCY})")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or a run went wrong")
    parser.add_argument("--client-gc", action="store_true",
                        help="keep the client's full garbage collections during the round, "
                             "as in production (their pauses, magnified --speed times, let "
                             "spaced calls through together)")
    args = parse_or_serve(parser, argv, child=_child, fake=_fake_main)
    if args is None:  # it ran as a child or as a fake's process
        return 0
    if (args.esims < 1 or args.speed <= 0 or args.baseline_speed <= 0 or args.concurrency < 1
            or args.latency_ms < 0):
        parser.error("--esims and --concurrency must be at least 1, the speeds above 0, "
                     "--latency-ms not negative")

    import tornado

    print(f"bench.esim: {os.cpu_count()} cores ({platform.machine()}), Python "
          f"{platform.python_version()}, httpx {httpx.__version__}, tornado {tornado.version}; "
          f"a child process per run, the fake in a process of its own")
    print(f"{args.esims} installed eSIMs read once each through AiraloGateway.usage, "
          f"{args.concurrency} in flight; the fake's latency {args.latency_ms:g} ms and its "
          f"documented limits (usage 5/s for the account, 10/min per eSIM); simulated time at "
          f"{args.speed:g}x real time (the unspaced run at {args.baseline_speed:g}x); the client's "
          f"full garbage collections "
          f"{'on, as in production' if args.client_gc else 'held back until after the round'}")
    print(f"before: {_load_note()}")
    print()
    jobs = _jobs(args.esims, args.latency_ms, args.speed, args.baseline_speed,
                 args.concurrency, args.client_gc)
    results = []
    wall = time.perf_counter()
    for job in jobs:
        print(f"  running {job.run} (usage_per_second={job.usage_per_second}) ...", flush=True)
        results.append(_run_child(job))
    print()
    ok = _print_table(jobs, results)
    print()
    print(f"after: {_load_note()}; whole run {time.perf_counter() - wall:.0f} s real")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
