"""Small helpers every repository uses, so dialect differences live in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_ignoring_conflict(conn: AsyncConnection, table: Table,
                                   values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either backend; True when a row was inserted."""
    dialect = conn.dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(**values).on_conflict_do_nothing()
    result = await conn.execute(statement)
    return bool(result.rowcount)



async def claim_due(conn: AsyncConnection, table: Table, *, due: ColumnElement[bool],
                    lease: Column[Any], oldest_first: ColumnElement[Any], now: datetime,
                    until: datetime, limit: int) -> list[RowMapping]:
    """Leases up to ``limit`` rows that are ``due`` and not leased (``lease`` empty or run
    out), the oldest first; returns them as leased.

    Another sweeper skips leased rows (PostgreSQL: rows a concurrent claim has locked are
    skipped too); one that dies lets its lease run out and the rows are claimed again.
    """
    free = or_(lease.is_(None), lease <= now)
    chosen = select(table.c.id).where(due, free).order_by(oldest_first).limit(limit)
    if conn.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    ids = list((await conn.execute(chosen)).scalars())
    if not ids:
        return []
    claimed = await conn.execute(update(table).where(table.c.id.in_(ids), free)
                                 .values({lease.name: until}).returning(*table.c))
    return list(claimed.mappings())
