"""Fixtures the charging and scheduler tests share: a world of users, lines and services
on the test's database, and a line-readings fake."""

from __future__ import annotations

import pytest

from bot.clock import ManualClock
from storage.crypto import FieldCipher
from storage.db import Database
from tests.unit.charging_world import World, make_world
from tests.unit.scheduler_world import FakeReadings


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock) -> World:
    return await make_world(db, cipher, clock)


@pytest.fixture
def fake(clock: ManualClock) -> FakeReadings:
    return FakeReadings(clock)
