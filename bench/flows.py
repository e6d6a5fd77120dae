"""Throughput and latency of the bot's flows through the full Application and database.

Run from the project root:  python -m bench.flows  [--check] [--chats N] [--only TEXT]

Each scenario runs in its own child process (a fresh SQLite database in a temp DATA_DIR,
its own peak RSS) on the real Application: ``bot.app.build_application`` with the real
components, handlers, persistence, job queue and PerChatUpdateProcessor, and a recording
Bot API layer that answers instantly (tests/flow/recording.py). Updates are put on
``app.update_queue`` after ``initialize()``, ``post_init`` and ``start()``, as in production.

Per chat, in order: /start, /bind, own contact (binds at once), /lines, the line's button,
"Choose plan", a plan, /balance, "1.25", /settings, /help. The steps after /lines use the
line id taken from the keyboard the bot sent. The three button steps from the line card on
(line card, plan list, plan chosen) call the carrier's catalog, where the simulated latency
is applied.

Two load shapes:
  burst  every chat starts at once (the first four steps of all chats enqueued interleaved;
         each chat's other seven are enqueued together as soon as the bot has sent its
         /lines keyboard): the bot is saturated, so updates/s is its capacity and latency is
         mostly queueing. Each chat has several updates queued at once, which exercises the
         per-chat ordering.
  paced  the same updates offered at a fixed rate, chats round-robin: latency at that load.
         Latency is measured from the scheduled arrival, not from when the loop got round to
         enqueueing it (no coordinated omission).

Latency of an update = scheduled arrival -> the update processor's coroutine for it returned
(every handler done, so its last Bot API call has been answered).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

# -- targets (from the issue) -------------------------------------------------------------

TARGET_RATE_0MS = 500.0  # updates/s at zero carrier latency ...
TARGET_P99_0MS = 50.0  # ... with p99 under this many ms at that rate
TARGET_RATE_50MS = 300.0  # updates/s with 50 ms of carrier latency
CARRIER_LATENCY_MS = 50
KEEP_UP = 0.95  # a paced run "kept up" when it achieved this share of the offered rate

STEPS = ("/start", "/bind", "contact", "/lines", "line", "plans", "pick", "/balance", "1.25",
         "/settings", "/help")
FIRST_DEPENDENT_STEP = STEPS.index("line")  # from here on the step needs the line id


@dataclass(frozen=True)
class Spec:
    name: str
    app: str  # "flows" or "echo" (the baseline)
    load: str  # "burst" or "paced"
    chats: int
    latency_ms: int = 0
    rate: float = 0.0  # offered updates/s (paced)
    processor: str = "per_chat"  # or "sequential": PTB's default concurrent_updates=False
    rate_limiter: bool = False  # True: the production AIORateLimiter stays in
    baseline: str = ""  # the name of the spec this one is compared with
    min_rate: float = 0.0  # targets (0: none)
    max_p99_ms: float = 0.0
    timeout_s: float = 120.0


# -- the child: one scenario ----------------------------------------------------------------


def _prepare_environment(data_dir: str) -> None:
    from tests.flow.recording import BOT_TOKEN

    os.environ["TELEGRAM_BOT_TOKEN"] = BOT_TOKEN
    os.environ["DATA_DIR"] = data_dir
    for name in ("DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "TELEGRAM_API_BASE_URL",
                 "WEBHOOK_URL", "SIM_LATENCY_MS", "SIM_TIMEOUT_RATE", "SIM_DECLINE_RATE",
                 "SIM_PENDING_RATE", "SIM_SETTLE_SECONDS"):
        os.environ.pop(name, None)


class _Tracker:
    """Scheduled arrival and completion of every update; the line id each chat was shown."""

    def __init__(self) -> None:
        self.line_ids: dict[int, int] = {}
        self.line_seen_at: dict[int, float] = {}
        self._line_waiters: dict[int, asyncio.Future[int]] = {}
        self.reset(0)

    def reset(self, expected: int) -> None:
        """A new phase (warm-up, then the measured run): counts start again."""
        self.expected = expected
        self.scheduled: dict[int, float] = {}
        self.steps: dict[int, str] = {}  # which step of the mix each update is
        self.finished: dict[int, float] = {}
        self.all_done = asyncio.Event()
        self.api_calls: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()  # answerCallbackQuery texts
        self.texts: Counter[str] = Counter()  # first line of sendMessage / editMessageText

    def finish(self, update: object) -> None:
        update_id = getattr(update, "update_id", None)
        if update_id is None or update_id not in self.scheduled:
            return
        self.finished[update_id] = time.perf_counter()
        if len(self.finished) >= self.expected:
            self.all_done.set()

    def saw_line(self, chat_id: int, line_id: int) -> None:
        if chat_id in self.line_ids:
            return
        self.line_ids[chat_id] = line_id
        self.line_seen_at[chat_id] = time.perf_counter()
        waiter = self._line_waiters.pop(chat_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(line_id)

    async def line_of(self, chat_id: int) -> int:
        if chat_id in self.line_ids:
            return self.line_ids[chat_id]
        waiter = self._line_waiters.setdefault(
            chat_id, asyncio.get_running_loop().create_future())
        return await waiter


def _make_request(tracker: _Tracker) -> Any:
    from telegram.request import RequestData

    from tests.flow.recording import RecordingRequest

    class BenchRequest(RecordingRequest):
        """The flow tests' recording Bot API (answers at once), noting what the bot sent."""

        async def do_request(self, url: str, method: str,
                             request_data: RequestData | None = None,
                             read_timeout: Any = None, write_timeout: Any = None,
                             connect_timeout: Any = None, pool_timeout: Any = None,
                             ) -> tuple[int, bytes]:
            result = await super().do_request(url, method, request_data, read_timeout,
                                              write_timeout, connect_timeout, pool_timeout)
            api_method = url.rsplit("/", 1)[-1]
            params = request_data.parameters if request_data is not None else {}
            tracker.api_calls[api_method] += 1
            if api_method == "answerCallbackQuery":
                tracker.answers[str(params.get("text", ""))] += 1
            elif api_method in ("sendMessage", "editMessageText"):
                tracker.texts[str(params.get("text", "")).split("\n", 1)[0]] += 1
                markup = params.get("reply_markup")
                if api_method == "sendMessage" and isinstance(markup, dict):
                    for row in markup.get("inline_keyboard", ()):
                        for button in row:
                            data = str(button.get("callback_data", ""))
                            if data.startswith("v1:ln:") and data.endswith(":show"):
                                chat_id = int(str(params["chat_id"]))
                                tracker.saw_line(chat_id, int(data.split(":")[2]))
            self.calls.clear()  # nothing reads them back; keep memory flat
            return result

    return BenchRequest()


def _make_processor(spec: Spec, tracker: _Tracker) -> Any:
    from telegram.ext import SimpleUpdateProcessor

    from bot.update_processor import PerChatUpdateProcessor

    async def timed(update: object, coroutine: Awaitable[Any]) -> None:
        try:
            await coroutine
        finally:
            tracker.finish(update)

    class TimedPerChat(PerChatUpdateProcessor):
        """The bot's processor, unchanged, with completion timestamps around each update."""

        async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
            await super().do_process_update(update, timed(update, coroutine))

    class TimedSequential(SimpleUpdateProcessor):
        """What ApplicationBuilder.concurrent_updates(False) installs: one update at a time."""

        async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
            await super().do_process_update(update, timed(update, coroutine))

    if spec.processor == "sequential":
        return TimedSequential(1)
    return TimedPerChat()


def _build_application(spec: Spec, components: Any, request: Any, processor: Any) -> Any:
    """bot.app.build_application itself, with two of its collaborators swapped for this run.

    build_application takes no argument for the rate limiter or the update processor, so
    the names it looks up are replaced while it runs: the update processor by the same one
    with timestamps (or PTB's sequential one), and AIORateLimiter by ``None`` (no rate
    limiter: ApplicationBuilder.rate_limiter(None)) unless the spec keeps it.
    """
    import bot.app as bot_app

    replacements: dict[str, Any] = {"PerChatUpdateProcessor": lambda: processor}
    if not spec.rate_limiter:
        replacements["AIORateLimiter"] = lambda **_kwargs: None
    saved = {name: vars(bot_app)[name] for name in replacements}
    vars(bot_app).update(replacements)
    try:
        app = bot_app.build_application(components, request=request)
    finally:
        vars(bot_app).update(saved)
    if spec.app == "echo":
        _keep_only_echo(app)
    return app


def _keep_only_echo(app: Any) -> None:
    """The baseline: the same Application, every handler replaced by one trivial echo."""
    from telegram import Update
    from telegram.ext import CallbackQueryHandler, ContextTypes, MessageHandler, filters

    for group, handlers in list(app.handlers.items()):
        for handler in list(handlers):
            app.remove_handler(handler, group)

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await message.reply_text(message.text or "ok")

    async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer()

    app.add_handler(MessageHandler(filters.ALL, echo))
    app.add_handler(CallbackQueryHandler(answer))


def _phone(index: int) -> str:
    """A distinct Cambodian mobile per chat, spread over Cellcard, Smart and Metfone."""
    prefix = ("12", "10", "97")[index % 3]
    return f"855{prefix}{100000 + index:06d}"


def _plan_for(phone: str) -> str:
    from bot.domain.phone import parse_cambodian_mobile
    from bot.gateways.simulated_catalog import CATALOG

    return CATALOG[parse_cambodian_mobile("+" + phone).operator][0].id


def _step_json(step: str, chat_id: int, phone: str, plan: str,
               line_id: int) -> dict[str, Any]:
    from tests.flow.recording import callback_update, contact_update, text_update

    if step == "contact":
        return contact_update(phone, user_id=chat_id, contact_user_id=chat_id)
    if step == "line":
        return callback_update(f"v1:ln:{line_id}:show", user_id=chat_id)
    if step == "plans":
        return callback_update(f"v1:pl:{line_id}:0", user_id=chat_id)
    if step == "pick":
        return callback_update(f"v1:pc:{line_id}:{plan}", user_id=chat_id)
    return text_update(step, user_id=chat_id)


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                self.first += f" ({record.exc_info[1]!r})"


WARM_UP_CHATS = 5


async def _run(spec: Spec) -> dict[str, Any]:
    from telegram import Update

    from bot.settings import load_settings
    from bot.wiring import build_components
    from storage import migrate
    from tests.flow.recording import RecordingSms

    errors = _ErrorCounter()
    logging.getLogger().addHandler(errors)
    logging.getLogger().setLevel(logging.WARNING)

    data_dir = tempfile.mkdtemp(prefix="bench-flows-")
    _prepare_environment(data_dir)
    components = build_components(load_settings(env_file=None), sms=RecordingSms())
    await migrate.upgrade(components.db)
    components.simulator.knobs = dataclasses.replace(components.simulator.knobs,
                                                   latency_ms=spec.latency_ms)

    tracker = _Tracker()
    app = _build_application(spec, components, _make_request(tracker),
                             _make_processor(spec, tracker))
    await app.initialize()
    if app.post_init is not None:  # as run_polling/run_webhook do: set-up, then start()
        await app.post_init(app)
    await app.start()  # consumes app.update_queue through the update processor
    echo = spec.app == "echo"

    async def drive(chats: list[int], first_phone: int, load: str,
                    rate: float) -> tuple[float, float, bool]:
        """Feeds every chat's steps; returns the start, the feeder's worst lag, timed out."""
        phones = {chat: _phone(first_phone + i) for i, chat in enumerate(chats)}
        plans = {chat: _plan_for(phones[chat]) for chat in chats}
        tracker.reset(len(chats) * len(STEPS))
        lag = 0.0

        async def line_of(chat: int) -> int:
            return chat if echo else await tracker.line_of(chat)

        def enqueue(chat: int, step: str, line_id: int, scheduled: float) -> None:
            update = Update.de_json(_step_json(step, chat, phones[chat], plans[chat], line_id),
                                    app.bot)
            tracker.scheduled[update.update_id] = scheduled
            tracker.steps[update.update_id] = step
            app.update_queue.put_nowait(update)

        started = time.perf_counter()
        if load == "burst":
            for step in STEPS[:FIRST_DEPENDENT_STEP]:
                for chat in chats:
                    enqueue(chat, step, 0, started)

            async def rest_of(chat: int) -> None:
                line_id = await line_of(chat)
                at = tracker.line_seen_at.get(chat, time.perf_counter())
                for step in STEPS[FIRST_DEPENDENT_STEP:]:
                    enqueue(chat, step, line_id, at)

            feeders = [asyncio.create_task(rest_of(chat)) for chat in chats]
        else:
            async def emit() -> None:
                nonlocal lag
                interval = 1.0 / rate
                index = 0
                for step_index, step in enumerate(STEPS):
                    for chat in chats:
                        due = started + index * interval
                        index += 1
                        delay = due - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        line_id = 0
                        if step_index >= FIRST_DEPENDENT_STEP:
                            line_id = await line_of(chat)
                            due = max(due, tracker.line_seen_at.get(chat, due))
                        lag = max(lag, time.perf_counter() - due)
                        enqueue(chat, step, line_id, due)

            feeders = [asyncio.create_task(emit())]
        timed_out = False
        try:
            await asyncio.wait_for(tracker.all_done.wait(), timeout=spec.timeout_s)
        except TimeoutError:
            timed_out = True
        for feeder in feeders:
            feeder.cancel()
        return started, lag, timed_out

    # Warm-up: a few chats through the whole mix first, so one-off costs (imports on first
    # use, phone metadata, statement caches) stay out of the measurement.
    warm = [8_000_000 + i for i in range(WARM_UP_CHATS)]
    await drive(warm, 800_000, "burst", 0.0)
    await asyncio.sleep(1.1)  # and one persistence flush of the warm-up's data

    chats = [9_000_000 + i for i in range(spec.chats)]
    cpu_before = _cpu_seconds()
    started, lag, timed_out = await drive(chats, 0, spec.load, spec.rate)
    ended = max(tracker.finished.values(), default=time.perf_counter())
    cpu = _cpu_seconds() - cpu_before
    latencies = sorted((tracker.finished[u] - tracker.scheduled[u]) * 1000
                       for u in tracker.finished)
    by_step: dict[str, list[float]] = {}
    for u in tracker.finished:
        by_step.setdefault(tracker.steps[u], []).append(
            (tracker.finished[u] - tracker.scheduled[u]) * 1000)
    step_p99 = {step: round(_percentile(sorted(values), 99), 1)
                for step, values in by_step.items()}
    checks = await _verify(spec, components, tracker, chats, timed_out)
    await app.stop()
    await app.shutdown()
    await components.db.dispose()
    if errors.count:
        checks.append(f"{errors.count} errors logged, first: {errors.first}")

    done = len(tracker.finished)
    seconds = ended - started
    return {
        "name": spec.name, "updates": done, "expected": tracker.expected, "seconds": seconds,
        "rate": done / seconds if seconds > 0 else 0.0,
        "p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99),
        "max": latencies[-1] if latencies else float("nan"),
        "lag_ms": lag * 1000, "cpu_ms": 1000 * cpu / done if done else float("nan"),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "api_calls": dict(tracker.api_calls), "problems": checks, "step_p99": step_p99,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: the loop and SQLite's
    return usage.ru_utime + usage.ru_stime


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _verify(spec: Spec, components: Any, tracker: _Tracker, chats: list[int],
                  timed_out: bool) -> list[str]:
    """What must be true after the run; anything listed here fails the scenario."""
    problems: list[str] = []
    if timed_out:
        problems.append(f"timed out: {len(tracker.finished)} of {tracker.expected} updates "
                        f"done after {spec.timeout_s:.0f} s")
    n = len(chats)
    if spec.app == "echo":
        if tracker.api_calls["sendMessage"] != n * 8 or tracker.api_calls[
                "answerCallbackQuery"] != n * 3:
            problems.append(f"echo replies: {dict(tracker.api_calls)}")
        return problems
    from sqlalchemy import text

    first, last = min(chats), max(chats)
    async with components.db.read() as conn:
        lines_with_plan = (await conn.execute(text(
            "SELECT count(*) FROM lines WHERE plan_product_id IS NOT NULL "
            "AND owner_id BETWEEN :first AND :last"), {"first": first, "last": last})).scalar_one()
        readings = (await conn.execute(text(
            "SELECT count(*) FROM line_readings r JOIN lines l ON l.id = r.line_id "
            "WHERE l.owner_id BETWEEN :first AND :last"),
            {"first": first, "last": last})).scalar_one()
    expected = {
        "lines bound (keyboards seen)": (sum(chat in tracker.line_ids for chat in chats), n),
        "lines with the chosen plan": (lines_with_plan, n),
        "balance readings stored": (readings, n),
        "'Plan saved.' answers": (tracker.answers["Plan saved."], n),
        "'Saved.' replies": (tracker.texts["Saved."], n),
        "'Your settings:' replies": (tracker.texts["Your settings:"], n),
        "'Commands:' replies": (tracker.texts["Commands:"], n),
        # out-of-order or overlapping updates of one chat end up in these
        "'did not understand' replies": (
            tracker.texts["I did not understand that. /help lists what I can do."], 0),
        "'in the middle of something' replies": (
            tracker.texts["You are in the middle of something. Finish it, or send /cancel "
                          "to stop."], 0),
    }
    for label, (got, want) in expected.items():
        if got != want:
            problems.append(f"{label}: {got}, expected {want}")
    return problems


def _child(spec_json: str) -> None:
    spec = Spec(**json.loads(spec_json))
    result = asyncio.run(_run(spec))
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: scenarios, table, targets --------------------------------------------------


def _specs(chats: int, seq_chats: int, rl_chats: int) -> list[Spec]:
    slow = CARRIER_LATENCY_MS
    return [
        Spec("baseline echo, burst", "echo", "burst", chats),
        Spec("baseline echo, paced 500/s", "echo", "paced", chats, rate=TARGET_RATE_0MS),
        Spec("baseline echo, paced 300/s", "echo", "paced", chats, rate=TARGET_RATE_50MS),
        Spec("flows 0 ms, burst", "flows", "burst", chats, baseline="baseline echo, burst",
             min_rate=TARGET_RATE_0MS),
        Spec("flows 0 ms, paced 500/s", "flows", "paced", chats, rate=TARGET_RATE_0MS,
             baseline="baseline echo, paced 500/s", min_rate=KEEP_UP * TARGET_RATE_0MS,
             max_p99_ms=TARGET_P99_0MS),
        Spec(f"flows {slow} ms, burst", "flows", "burst", chats, latency_ms=slow,
             baseline="baseline echo, burst", min_rate=TARGET_RATE_50MS),
        Spec(f"flows {slow} ms, paced 300/s", "flows", "paced", chats, latency_ms=slow,
             rate=TARGET_RATE_50MS, baseline="baseline echo, paced 300/s",
             min_rate=KEEP_UP * TARGET_RATE_50MS),
        Spec(f"flows {slow} ms, burst, PTB sequential", "flows", "burst", seq_chats,
             latency_ms=slow, processor="sequential", baseline="baseline echo, burst"),
        Spec("flows 0 ms, burst, AIORateLimiter", "flows", "burst", rl_chats,
             rate_limiter=True, baseline="baseline echo, burst"),
    ]


def _verdict(spec: Spec, result: dict[str, Any]) -> tuple[str, list[str]]:
    """PASS/FAIL against the targets; rows without targets only have to be correct."""
    misses = list(result["problems"])
    if spec.min_rate and not result["rate"] >= spec.min_rate:
        what = (f"did not keep up with {spec.rate:.0f}/s" if spec.load == "paced"
                else f"below {spec.min_rate:.0f} updates/s")
        misses.append(f"{what} ({result['rate']:.0f}/s)")
    if spec.max_p99_ms and not result["p99"] < spec.max_p99_ms:
        misses.append(f"p99 {result['p99']:.1f} ms, target under {spec.max_p99_ms:.0f} ms")
    if misses:
        return "FAIL", misses
    return ("PASS" if spec.min_rate or spec.max_p99_ms else "ok"), misses


def _run_child(spec: Spec) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.flows", "--child", json.dumps(dataclasses.asdict(spec))],
        capture_output=True, text=True, timeout=spec.timeout_s + 60, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT "):])
            return result
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return {"name": spec.name, "updates": 0, "expected": spec.chats * len(STEPS),
            "seconds": float("nan"), "rate": 0.0, "p50": float("nan"), "p99": float("nan"),
            "max": float("nan"), "lag_ms": 0.0, "cpu_ms": float("nan"), "rss_mb": float("nan"),
            "api_calls": {},
            "problems": [f"child exited {completed.returncode}: " + " | ".join(tail)]}


def _ratio(value: float, base: float) -> str:
    if not base or value != value or base != base:
        return "-"
    return f"{value / base:.2f}x"


def _load_note() -> str:
    one, _five, _fifteen = os.getloadavg()
    busy = " - the machine is busy: figures will be low and noisy" if one > 0.5 else ""
    return f"load average {one:.2f}{busy}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or a run is wrong")
    parser.add_argument("--chats", type=int, default=300, help="chats per run (default 300)")
    parser.add_argument("--seq-chats", type=int, default=30,
                        help="chats in the slow PTB-sequential run (default 30)")
    parser.add_argument("--rl-chats", type=int, default=15,
                        help="chats in the AIORateLimiter run (default 15)")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0

    import telegram

    print(f"bench.flows: {os.cpu_count()} cores ({platform.machine()}), Python "
          f"{platform.python_version()}, python-telegram-bot {telegram.__version__}, SQLite "
          f"{sqlite3.sqlite_version} via aiosqlite, a fresh temp DATA_DIR per scenario")
    print(f"mix per chat, in order: {', '.join(STEPS)} ({len(STEPS)} updates; the line "
          f"card, the plan list and the plan choice call the carrier)")
    print("Bot API: recorded and answered at once. Runs are WITHOUT the rate limiter: "
          "AIORateLimiter's 30 msg/s overall limit caps the bot at ~30 updates/s (its row)")
    print(f"before: {_load_note()}")
    print()

    specs = _specs(args.chats, args.seq_chats, args.rl_chats)
    if args.only:
        wanted = [spec for spec in specs if args.only in spec.name]
        names = {spec.name for spec in wanted}
        specs = [spec for spec in specs if spec.name in names
                 or any(w.baseline == spec.name for w in wanted)]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for spec in specs:
        print(f"  running {spec.name} ({spec.chats} chats x {len(STEPS)} updates) ...",
              flush=True)
        results[spec.name] = _run_child(spec)

    header = (f"{'scenario':<36} {'updates':>7} {'seconds':>7} {'upd/s':>6} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'upd/s÷base':>10} {'p99÷base':>8} {'CPU ms/upd':>10} {'RSS MB':>6}  "
              f"result")
    print()
    print(header)
    print("-" * len(header))
    failed = False
    notes: list[str] = []
    for spec in specs:
        result = results[spec.name]
        base = results.get(spec.baseline)
        verdict, misses = _verdict(spec, result)
        failed |= verdict == "FAIL"
        rate_ratio = p99_ratio = "-"
        if base is not None:
            # a paced run's updates/s is the offered rate: only its latency compares
            rate_ratio = _ratio(result["rate"], base["rate"]) if spec.load == "burst" else "-"
            p99_ratio = _ratio(result["p99"], base["p99"])
        print(f"{spec.name:<36} {result['updates']:>7} {result['seconds']:>7.2f} "
              f"{result['rate']:>6.0f} {result['p50']:>8.1f} {result['p99']:>8.1f} "
              f"{rate_ratio:>10} {p99_ratio:>8} {result['cpu_ms']:>10.2f} "
              f"{result['rss_mb']:>6.0f}  "
              f"{verdict}")
        notes.extend(f"  {spec.name}: {miss}" for miss in misses)
        if misses and result.get("step_p99"):
            steps = ", ".join(f"{step} {ms:.0f}" for step, ms in result["step_p99"].items())
            notes.append(f"  {spec.name}: p99 ms by step: {steps}")
        if spec.load == "paced" and result["lag_ms"] > 10:
            notes.append(f"  {spec.name}: the feeder fell up to {result['lag_ms']:.0f} ms "
                         f"behind schedule (latency counts from the schedule)")

    print()
    print(f"targets: flows 0 ms >= {TARGET_RATE_0MS:.0f} updates/s (burst) with p99 < "
          f"{TARGET_P99_0MS:.0f} ms at {TARGET_RATE_0MS:.0f}/s offered (paced); flows "
          f"{CARRIER_LATENCY_MS} ms >= {TARGET_RATE_50MS:.0f} updates/s (burst, and keeping up "
          f"with {TARGET_RATE_50MS:.0f}/s paced)")
    ratios = [("flows 0 ms, burst", "baseline echo, burst", "flows 0 ms / baseline"),
              (f"flows {CARRIER_LATENCY_MS} ms, burst", "baseline echo, burst",
               f"flows {CARRIER_LATENCY_MS} ms / baseline"),
              (f"flows {CARRIER_LATENCY_MS} ms, burst",
               f"flows {CARRIER_LATENCY_MS} ms, burst, PTB sequential",
               f"per-chat processor / PTB sequential at {CARRIER_LATENCY_MS} ms")]
    shown = [f"{label} {_ratio(results[a]['rate'], results[b]['rate'])}"
             for a, b, label in ratios if a in results and b in results]
    if shown:
        print("updates/s ratios: " + "; ".join(shown))
    print("CPU ms/upd: the process's CPU time (all threads) per update during the run; "
          "it is what one core must supply, and is less disturbed by a busy machine")
    print("burst: every chat at once, so updates/s is capacity and latency mostly queueing; "
          "paced: the rate shown offered, latency from the scheduled arrival to the update's "
          "last handler returning")
    if notes:
        print("notes:")
        print("\n".join(notes))
    print(f"after: {_load_note()}; total {time.perf_counter() - t0:.0f} s")
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
