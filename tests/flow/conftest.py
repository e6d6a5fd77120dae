"""Flow-test harness: the real Application and database, a recording Bot API layer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application

from bot.app import build_application
from bot.clock import ManualClock
from bot.settings import load_settings
from bot.wiring import Components, build_components
from handlers.approvals import SUBMISSION_TASK
from handlers.esim import ORDER_TASK
from storage import migrate
from tests.flow.recording import BOT_TOKEN, RecordingRequest, RecordingSms


@dataclass
class BotHarness:
    app: Application  # type: ignore[type-arg]
    api: RecordingRequest
    components: Components
    sms: RecordingSms

    async def send(self, update_json: dict[str, Any]) -> None:
        """Processes the update, and waits for the top-ups and eSIM orders it sent in the
        background (an approval answers at once and submits in a task), as a user would see
        them."""
        before = asyncio.all_tasks()
        await self.app.process_update(Update.de_json(update_json, self.app.bot))
        started = [task for task in asyncio.all_tasks() - before
                   if task.get_name().startswith((SUBMISSION_TASK, ORDER_TASK))]
        if started:
            await asyncio.gather(*started)


@contextlib.asynccontextmanager
async def open_harness(tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
                       env: dict[str, str] | None = None) -> AsyncIterator[BotHarness]:
    """The bot as ``harness`` builds it, with ``env`` set on top (a flow's own settings)."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    for name in ("DATABASE_URL", "ENCRYPTION_KEYS", "BLIND_INDEX_KEY", "TELEGRAM_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    sms = RecordingSms()
    components = build_components(load_settings(env_file=None), clock=clock, sms=sms)
    await migrate.upgrade(components.db)
    api = RecordingRequest()
    app = build_application(components, request=api)
    await app.initialize()
    await app.start()  # the job queue runs (conversation timeouts); nothing polls
    try:
        yield BotHarness(app=app, api=api, components=components, sms=sms)
    finally:
        await app.stop()
        await app.shutdown()
        await components.aclose()


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    async with open_harness(tmp_path, clock, monkeypatch) as opened:
        yield opened
