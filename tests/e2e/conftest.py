"""Fixtures for end-to-end tests: a Bot API test server, and a PTB Bot pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from telegram import Bot

from tests.e2e.botapi import BotApiServer
from tests.e2e.deployment import Deployment


def bot_for(server: BotApiServer, token: str | None = None) -> Bot:
    """A python-telegram-bot Bot talking to ``server`` (as ``topup-bot run`` would)."""
    return Bot(token or server.token, base_url=f"{server.base_url}/bot",
               base_file_url=f"{server.base_url}/file/bot")


@pytest.fixture
def botapi() -> Iterator[BotApiServer]:
    with BotApiServer() as server:
        yield server


@pytest.fixture
async def bot(botapi: BotApiServer) -> AsyncIterator[Bot]:
    async with bot_for(botapi) as client:
        yield client


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A Bot API server with Telegram's flood limits (1 message a second per chat after a
    burst of 3: the bot meets 429s and must retry them), or, parametrized indirectly with
    "unthrottled", a generous per-chat limit for the long flows, which at 1 a second would
    spend most of their time in the bot's rate-limit retries."""
    limits = {"telegram": {}, "unthrottled": {"chat_rate": 50.0, "chat_burst": 50}}
    with BotApiServer(**limits[getattr(request, "param", "telegram")]) as server:
        running = Deployment(server, tmp_path / "data")
        try:
            yield running
        finally:
            running.cleanup()
