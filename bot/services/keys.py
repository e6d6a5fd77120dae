"""Key rotation: re-encrypt every encrypted field with the primary key.

Each batch is its own transaction and rows already under the primary key are skipped, so
an interrupted rotation is simply run again.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.clock import Clock
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.encrypted_fields import ENCRYPTED, EncryptedFieldsRepository


@dataclass(frozen=True)
class RotationReport:
    examined: int
    rotated: int
    complete: bool  # False when stopped early: run again to finish


class KeyRotationService:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock,
                 batch_size: int = 500) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self._batch_size = batch_size

    async def rotate(self, *, max_batches: int | None = None) -> RotationReport:
        """Rotates everything (or stops after ``max_batches``, as an interruption would)."""
        examined = rotated = batches = 0
        finished_tables = 0
        for spec in ENCRYPTED:
            after: object | None = None
            while max_batches is None or batches < max_batches:
                async with self._db.write() as conn:
                    repo = EncryptedFieldsRepository(conn)
                    rows = await repo.batch(spec, after, self._batch_size)
                    for key, tokens in rows:
                        fresh = {name: self._cipher.rotate(token)
                                 for name, token in tokens.items()
                                 if token is not None and not self._cipher.is_primary(token)}
                        if fresh:
                            await repo.replace(spec, key, fresh)
                            rotated += 1
                    examined += len(rows)
                batches += 1
                if len(rows) < self._batch_size:
                    finished_tables += 1
                    break
                after = rows[-1][0]
        report = RotationReport(examined=examined, rotated=rotated,
                                complete=finished_tables == len(ENCRYPTED))
        async with self._db.write() as conn:
            await AuditRepository(conn).record(
                at=self._clock.now(), actor="cli", action="keys.rotated",
                details={"examined": examined, "rotated": rotated, "complete": report.complete})
        return report
