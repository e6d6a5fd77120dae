"""Schema migrations through Alembic, driven from code (no alembic.ini to keep in sync)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.crypto import FieldCipher
from storage.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaError(RuntimeError):
    """The database holds a schema this version of the bot does not know."""


def _config(connection: Connection | None = None,
            cipher: FieldCipher | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    # Migrations that encrypt old rows need the keys (0007); they refuse without them.
    config.attributes["cipher"] = cipher
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise SchemaError("no migrations found")
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(db: Database, target: str = "head", *,
                  cipher: FieldCipher | None = None) -> None:
    await ensure_known(db)
    async with db.schema_change() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_config(sync, cipher), target))


async def downgrade(db: Database, target: str, *, cipher: FieldCipher | None = None) -> None:
    async with db.schema_change() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_config(sync, cipher), target))


async def ensure_known(db: Database) -> str | None:
    """The database's revision (None when it has no schema yet); SchemaError when it is one
    this version does not know, so the bot refuses to start rather than guess."""
    current = await current_revision(db)
    if current is not None and current not in known_revisions():
        raise SchemaError(f"the database is at schema revision {current}, which this version "
                          "does not know: it was migrated by a newer release; run that one")
    return current
