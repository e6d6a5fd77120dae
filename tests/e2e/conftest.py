"""Fixtures for end-to-end tests: a Bot API test server, and a PTB Bot pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from telegram import Bot

from tests.e2e.botapi import BotApiServer


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
