"""The notifications dispatcher draining a queued outbox against our Bot API test server.

Run from the project root:  python -m bench.notify  [--messages 10000] [--chats 2000]

The test server (tests/e2e/botapi, real HTTP on 127.0.0.1) enforces Telegram's flood limits:
about 30 messages/s overall and 1/s per chat, answering 429 with retry_after above them.
The bot is the real one: ``bot.wiring.build_components`` on a fresh SQLite database and
``bot.app.build_application`` (AIORateLimiter, job queue), started without polling, so the
repeating dispatcher job sends what ``--messages`` wallet receipts queued over ``--chats``
chats hold (several per chat, so the per-chat limit matters too).

Printed: messages/s achieved over the whole drain and after the warm-up, as a ratio of the
30/s ceiling (target >= 0.95); 429 answers during and after the warm-up (target 0 after);
the drain's duration, the latency from queueing to sending (p50/p99) and peak RSS.

The baseline, measured in the same run on a fresh server: the same kind of messages sent
the way most bots send a broadcast, ``asyncio.gather`` over ``bot.send_message`` with no
rate limiter and a retry after each 429.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from telegram import Bot
from telegram.error import RetryAfter

from tests.e2e.botapi import BotApiServer
from tests.e2e.botapi.ratelimit import RateStats

CEILING = 30.0  # Telegram's overall limit, messages a second
TARGET_RATIO = 0.95
FIRST_CHAT = 7_000_000


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    rate: float
    rate_after_warmup: float
    rejected: int
    rejected_after_warmup: int
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rates(stats: RateStats, start: float, warmup: float) -> tuple[float, float, int, int]:
    times = stats.send_times
    cut = start + warmup
    after = [t for t in times if t >= cut]
    overall = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    late = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0
    rejected_after = sum(1 for r in stats.rejections if r.at >= cut)
    return overall, late, stats.rejected, rejected_after


def _environment(server: BotApiServer, data_dir: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SIM_", "PAYMENTS_", "WEBHOOK_")) or name in (
                "DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "ADMIN_CHAT_IDS"):
            del os.environ[name]
    os.environ.update(TELEGRAM_BOT_TOKEN=server.token, TELEGRAM_API_BASE_URL=server.base_url,
                      DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")


async def _queue(components: Any, chats: list[int], messages: int) -> None:
    from storage.notifications import NotificationsRepository
    from storage.users import UsersRepository

    now = components.clock.now()
    async with components.db.write() as conn:
        for chat in chats:
            await UsersRepository(conn).ensure(chat, language="en", now=now)
        repo = NotificationsRepository(conn)
        for n in range(messages):
            chat = chats[n % len(chats)]
            await repo.enqueue(user_id=chat, chat_id=chat, dedupe_key=f"bench:{n}",
                               kind="wallet_credit", now=now, params={
                                   "amount_minor": 500 + n % 7, "currency": "USD",
                                   "balance_minor": 10_000 + n, "source": "operator",
                                   "reference": f"cash {n}", "at": now.isoformat()})


async def _pending(components: Any) -> int:
    from storage.tables import notifications

    async with components.db.read() as conn:
        return int((await conn.execute(select(func.count()).where(
            notifications.c.status == "pending"))).scalar_one())


async def _latencies(components: Any) -> list[float]:
    from storage.tables import notifications

    async with components.db.read() as conn:
        rows = await conn.execute(select(notifications.c.created_at, notifications.c.sent_at)
                                  .where(notifications.c.sent_at.is_not(None)))
        return [(sent - created).total_seconds() * 1000 for created, sent in rows]


async def run_dispatcher(messages: int, chats: int, warmup: float) -> Result:
    """The bot's own dispatcher: queue everything, start the Application, wait for empty."""
    from bot.app import build_application, prepare_database
    from bot.settings import load_settings
    from bot.wiring import build_components

    with BotApiServer() as server, tempfile.TemporaryDirectory() as tmp:
        chat_ids = [FIRST_CHAT + i for i in range(chats)]
        for chat in chat_ids:
            server.user(chat)
        _environment(server, Path(tmp))
        components = build_components(load_settings(env_file=None))
        await prepare_database(components)
        await _queue(components, chat_ids, messages)
        app = build_application(components)
        await app.initialize()
        server.reset_stats()
        start = time.monotonic()
        await app.start()  # the job queue starts: the dispatcher runs every second
        last_report = start
        while (left := await _pending(components)) > 0:
            if time.monotonic() - last_report >= 30:
                print(f"  ... {messages - left} sent, {left} to go", file=sys.stderr)
                last_report = time.monotonic()
            await asyncio.sleep(0.2)  # a benchmark watching the clock, not a test
        seconds = time.monotonic() - start
        await app.stop()
        await app.shutdown()
        latencies = sorted(await _latencies(components))
        stats = server.stats
    overall, late, rejected, rejected_after = _rates(stats, start, warmup)
    return Result("dispatcher (AIORateLimiter, outbox)", stats.accepted, seconds, overall,
                  late, rejected, rejected_after,
                  statistics.median(latencies),
                  latencies[max(0, int(len(latencies) * 0.99) - 1)])


async def run_naive(messages: int, chats: int, warmup: float) -> Result:
    """The baseline: gather over send_message without a rate limiter, retrying each 429."""
    with BotApiServer() as server:
        chat_ids = [FIRST_CHAT + i for i in range(chats)]
        for chat in chat_ids:
            server.user(chat)
        async with Bot(server.token, base_url=f"{server.base_url}/bot") as bot:
            gate = asyncio.Semaphore(100)  # PTB's default connection pool is smaller anyway

            async def send(n: int) -> None:
                async with gate:
                    for _ in range(50):
                        try:
                            await bot.send_message(chat_ids[n % chats], f"Receipt {n}")
                            return
                        except RetryAfter as exc:
                            wait = exc.retry_after
                            await asyncio.sleep(wait if isinstance(wait, int | float)
                                                else wait.total_seconds())

            server.reset_stats()
            start = time.monotonic()
            await asyncio.gather(*(send(n) for n in range(messages)))
            seconds = time.monotonic() - start
        stats = server.stats
    overall, late, rejected, rejected_after = _rates(stats, start, warmup)
    return Result("baseline: gather + send_message", stats.accepted, seconds, overall, late,
                  rejected, rejected_after)


def _print(results: list[Result], warmup: float) -> bool:
    print(f"\n{'run':<38} {'sent':>6} {'secs':>7} {'msg/s':>6} {'after':>6} "
          f"{'ratio':>6} {'429s':>6} {'429s':>7} {'p50 ms':>8} {'p99 ms':>9}")
    print(f"{'':<38} {'':>6} {'':>7} {'':>6} {'warmup':>6} {'/30':>6} {'all':>6} "
          f"{'after':>7}")
    ok = True
    for r in results:
        ratio = r.rate_after_warmup / CEILING
        print(f"{r.name:<38} {r.messages:>6} {r.seconds:>7.1f} {r.rate:>6.2f} "
              f"{r.rate_after_warmup:>6.2f} {ratio:>6.3f} {r.rejected:>6} "
              f"{r.rejected_after_warmup:>7} {r.p50_ms:>8.0f} {r.p99_ms:>9.0f}")
    ours = results[0]
    ratio = ours.rate_after_warmup / CEILING
    print(f"\nwarm-up: the first {warmup:g} s. Targets: ratio >= {TARGET_RATIO} "
          f"({'met' if ratio >= TARGET_RATIO else 'MISSED'}: {ratio:.3f}); 429s after "
          f"warm-up = 0 ({'met' if ours.rejected_after_warmup == 0 else 'MISSED'}: "
          f"{ours.rejected_after_warmup}).")
    ok = ratio >= TARGET_RATIO and ours.rejected_after_warmup == 0
    if len(results) > 1:
        base = results[1]
        print(f"baseline: {base.rejected} of its sends were answered 429 "
              f"({base.rejected / max(1, base.messages):.1%} of the messages); "
              f"ours {ours.rejected}.")
    print(f"peak RSS of this process: {_rss_mb():.0f} MB")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=2_000)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--baseline-messages", type=int, default=1_500,
                        help="messages for the baseline run (default 1500; 0 skips it)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(f"bench.notify {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.messages} messages "
          f"over {args.chats} chats; load average {os.getloadavg()[0]:.2f}")
    results = [asyncio.run(run_dispatcher(args.messages, args.chats, args.warmup))]
    if args.baseline_messages > 0:
        results.append(asyncio.run(run_naive(args.baseline_messages,
                                             min(args.chats, args.baseline_messages),
                                             args.warmup)))
    ok = _print(results, args.warmup)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
