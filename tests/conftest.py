"""Shared fixtures: a movable clock, keys, and a migrated database on every backend.

``db`` runs a test on SQLite always and on PostgreSQL when TEST_POSTGRES_URL is set
(each test gets its own database, copied from a migrated template).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bot.clock import ManualClock
from storage import migrate
from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
from storage.db import Database

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "")
NO_POSTGRES = "TEST_POSTGRES_URL is not set: PostgreSQL tests skipped (tests/run.sh starts one)"
_TEMPLATE = "topup_template_" + uuid.uuid4().hex[:8]
_template_ready = False

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres",
                 marks=[pytest.mark.postgres,
                        pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES)]),
]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens: bound (so nobody else takes it while the
    test runs) but never listening, so a connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))


@pytest.fixture
def keys() -> KeyMaterial:
    return KeyMaterial(encryption_keys=(generate_fernet_key(),), blind_index_key=os.urandom(32))


@pytest.fixture
def cipher(keys: KeyMaterial) -> FieldCipher:
    return FieldCipher(keys)


def _admin_dsn() -> str:
    return POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def create_postgres_database(*, migrated: bool) -> str:
    """A fresh PostgreSQL database for one test; its SQLAlchemy URL."""
    global _template_ready
    admin = await asyncpg.connect(_admin_dsn())
    try:
        if migrated and not _template_ready:
            await admin.execute(f'CREATE DATABASE "{_TEMPLATE}"')
            template_db = Database(_with_database(POSTGRES_URL, _TEMPLATE))
            await migrate.upgrade(template_db)
            await template_db.dispose()
            _template_ready = True
        name = "topup_t_" + uuid.uuid4().hex[:12]
        template = f' TEMPLATE "{_TEMPLATE}"' if migrated else ""
        await admin.execute(f'CREATE DATABASE "{name}"{template}')
    finally:
        await admin.close()
    return _with_database(POSTGRES_URL, name)


async def drop_postgres_database(url: str) -> None:
    admin = await asyncpg.connect(_admin_dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_template() -> Iterator[None]:
    yield
    if _template_ready:
        asyncio.run(drop_postgres_database(_with_database(POSTGRES_URL, _TEMPLATE)))


@pytest.fixture(params=BACKENDS)
async def empty_database_url(request: pytest.FixtureRequest,
                             tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database on the backend named by ``request.param``."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    url = await create_postgres_database(migrated=False)
    yield url
    await drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database at the newest schema, on SQLite and (when available) PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await migrate.upgrade(database)
        yield database
        await database.dispose()
        return
    url = await create_postgres_database(migrated=True)
    database = Database(url)
    yield database
    await database.dispose()
    await drop_postgres_database(url)
