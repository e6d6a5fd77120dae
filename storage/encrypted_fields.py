"""Every encrypted column in the schema, and batch access to them for key rotation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.tables import lines, sim_lines


@dataclass(frozen=True)
class EncryptedColumns:
    table: Table
    key: Column[object]
    columns: tuple[Column[object], ...]


# A table that gains an encrypted column is listed here, or rotate-keys will miss it.
ENCRYPTED: tuple[EncryptedColumns, ...] = (
    EncryptedColumns(lines, lines.c.id, (lines.c.phone_enc, lines.c.iccid_enc)),
    EncryptedColumns(sim_lines, sim_lines.c.phone_index, (sim_lines.c.phone_enc,)),
)


class EncryptedFieldsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def batch(self, spec: EncryptedColumns, after: object | None,
                    limit: int) -> list[tuple[object, dict[str, str | None]]]:
        """Up to ``limit`` rows after key ``after``, in key order: (key, {column: token})."""
        query = select(spec.key, *spec.columns).order_by(spec.key).limit(limit)
        query = query.where(or_(*(column.is_not(None) for column in spec.columns)))
        if after is not None:
            query = query.where(spec.key > after)
        rows = (await self._conn.execute(query)).all()
        return [(row[0], {c.name: row[i + 1] for i, c in enumerate(spec.columns)})
                for row in rows]

    async def replace(self, spec: EncryptedColumns, key: object,
                      values: dict[str, str]) -> None:
        await self._conn.execute(update(spec.table).where(spec.key == key).values(**values))
