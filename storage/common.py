"""Small helpers every repository uses, so dialect differences live in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_ignoring_conflict(conn: AsyncConnection, table: Table,
                                   values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either backend; True when a row was inserted."""
    dialect = conn.dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return bool(result.rowcount)

