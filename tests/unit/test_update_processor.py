"""The per-chat update processor: concurrency across chats, order within a chat."""

from __future__ import annotations

import asyncio
from typing import Any

from telegram import Update

from bot.update_processor import PerChatUpdateProcessor, ordering_key
from tests.flow.recording import text_update


def _update(chat_id: int) -> Update:
    return Update.de_json(text_update("hi", user_id=chat_id), None)


async def _run_all(processor: PerChatUpdateProcessor,
                   jobs: list[tuple[Update, Any]]) -> None:
    # As PTB does: one task per update, created in arrival order.
    await asyncio.gather(*(asyncio.create_task(processor.process_update(u, c))
                           for u, c in jobs))


async def test_updates_from_different_chats_run_at_the_same_time() -> None:
    processor = PerChatUpdateProcessor()
    both_started = asyncio.Event()
    running: set[int] = set()

    async def handler(chat: int) -> None:
        running.add(chat)
        if len(running) == 2:
            both_started.set()
        # Would time out if chat 2 could only start after chat 1 finished.
        await asyncio.wait_for(both_started.wait(), timeout=2)

    await _run_all(processor, [(_update(1), handler(1)), (_update(2), handler(2))])
    assert both_started.is_set()


async def test_one_chats_updates_run_one_at_a_time_in_arrival_order() -> None:
    processor = PerChatUpdateProcessor()
    events: list[str] = []
    in_flight = 0
    max_in_flight = 0

    async def handler(index: int) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        events.append(f"start {index}")
        for _ in range(3):  # yield to the loop so an overtaking update could run
            await asyncio.sleep(0)
        events.append(f"end {index}")
        in_flight -= 1

    await _run_all(processor, [(_update(7), handler(i)) for i in range(20)])

    assert max_in_flight == 1
    assert events == [f"{step} {i}" for i in range(20) for step in ("start", "end")]


async def test_locks_are_released_when_a_chat_goes_quiet() -> None:
    processor = PerChatUpdateProcessor()

    async def fails() -> None:
        raise RuntimeError("handler blew up")

    async def fine() -> None:
        return None

    await asyncio.gather(processor.process_update(_update(3), fails()),
                         return_exceptions=True)
    await processor.process_update(_update(3), fine())
    assert processor._locks == {}
    assert processor._holders == {}


def test_ordering_key_prefers_the_chat_and_ignores_non_updates() -> None:
    assert ordering_key(_update(42)) == 42
    assert ordering_key("not an update") is None
