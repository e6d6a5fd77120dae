"""A user's lines: list, rename, unbind, and the plan chosen from the operator's catalog."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.domain.products import Product
from bot.domain.readings import LineReading, shown_to_owner
from bot.gateways.esim import EsimProvider
from bot.gateways.topup import GatewayError
from bot.services.catalog import PlanSource
from storage.audit import AuditRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.readings import ReadingsRepository
from storage.rules import RulesRepository

MAX_NICKNAME_CHARS = 32
SNOOZE_FOR = timedelta(hours=6)  # "remind me later" on a low-balance warning


@dataclass(frozen=True)
class LineWithPlan:
    line: LineRecord
    plan: Product | None


@dataclass(frozen=True)
class LineCard(LineWithPlan):
    reading: LineReading | None  # the newest one its owner may see
    read_by: str | None = None  # who read it, when it was an eSIM's provider


def _owned(line: LineRecord | None, user_id: int) -> bool:
    return line is not None and line.owner_id == user_id and line.is_bound


class LinesService:
    def __init__(self, db: Database, cipher: FieldCipher, provider: PlanSource,
                 clock: Clock, *, esims: EsimProvider | None = None,
                 esim_provider_name: str | None = None) -> None:
        self._db = db
        self._esims = esims
        self._esim_provider_name = esim_provider_name
        self._cipher = cipher
        self._provider = provider
        self._clock = clock

    async def for_user(self, user_id: int) -> list[LineRecord]:
        async with self._db.read() as conn:
            return await LinesRepository(conn, self._cipher).for_owner(user_id)

    async def own(self, user_id: int, line_id: int) -> LineRecord | None:
        """The line if it is bound to ``user_id``; None for anyone else's or unknown ids."""
        async with self._db.read() as conn:
            line = await LinesRepository(conn, self._cipher).get(line_id)
        return line if _owned(line, user_id) else None

    async def card(self, user_id: int, line_id: int) -> LineCard | None:
        """The line, its plan and its newest reading, in one read; None if not the user's."""
        async with self._db.read() as conn:
            line = await LinesRepository(conn, self._cipher).get(line_id)
            if line is None or not _owned(line, user_id):
                return None
            reading = await ReadingsRepository(conn).latest(line_id)
        products = await self._plans_for(line)
        return LineCard(line, next((p for p in products if p.id == line.plan_product_id), None),
                        shown_to_owner(reading, line.verified_at),
                        read_by=self._esim_provider_name if line.is_esim else None)

    async def snooze_warnings(self, user_id: int, line_id: int) -> datetime | None:
        """"Remind me later" on a low-balance warning: when the line is looked at again
        (None when it is not the user's line)."""
        now = self._clock.now()
        until = now + SNOOZE_FOR
        async with self._db.write() as conn:
            if not await LinesRepository(conn, self._cipher).snooze_warnings(
                    line_id, owner_id=user_id, until=until, now=now):
                return None
            await AuditRepository(conn).record(at=now, actor=f"user:{user_id}",
                                               action="line.warnings_snoozed",
                                               subject=str(line_id))
        return until

    async def rename(self, user_id: int, line_id: int, nickname: str) -> LineRecord | None:
        clean = " ".join(nickname.split())[:MAX_NICKNAME_CHARS] or None
        async with self._db.write() as conn:
            repo = LinesRepository(conn, self._cipher)
            line = await repo.get(line_id, lock=True)
            if line is None or line.owner_id != user_id or not line.is_bound:
                return None
            await repo.rename(line_id, clean, now=self._clock.now())
            await AuditRepository(conn).record(
                at=self._clock.now(), actor=f"user:{user_id}", action="line.renamed",
                subject=str(line_id))
            return await repo.get(line_id)

    async def unbind(self, user_id: int, line_id: int) -> LineRecord | None:
        """Unbinds the line and disables its auto-recharge rules; None if not the user's."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = LinesRepository(conn, self._cipher)
            line = await repo.get(line_id, lock=True)
            if line is None or line.owner_id != user_id or not line.is_bound:
                return None
            await repo.unbind(line_id, now=now)
            disabled = await RulesRepository(conn).disable_for_line(line_id, now)
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="line.unbound", subject=str(line_id),
                details={"line": line.label, "rules_disabled": disabled})
            return line

    async def catalog(self, user_id: int, line_id: int) -> tuple[LineRecord, list[Product]] | None:
        line = await self.own(user_id, line_id)
        if line is None:
            return None
        return line, await self._plans_for(line)

    async def _plans_for(self, line: LineRecord) -> list[Product]:
        """What the line can be topped up with: its operator's plans, or for an eSIM the
        top-ups its provider offers for it (none while it is being bought, or expired)."""
        if not line.is_esim:
            return await self._provider.catalog(line.operator)
        if self._esims is None or line.iccid is None:
            return []
        try:
            packages = await self._esims.topup_packages(line.iccid)
        except GatewayError:
            return []
        return [product for package in packages if (product := package.as_product())]

    async def choose_plan(self, user_id: int, line_id: int,
                          product_id: str) -> LineWithPlan | None:
        """Stores the plan; None when the line is not the user's or the plan not its operator's."""
        found = await self.catalog(user_id, line_id)
        if found is None:
            return None
        line, products = found
        plan = next((p for p in products if p.id == product_id), None)
        if plan is None:
            return None
        now = self._clock.now()
        async with self._db.write() as conn:
            # Guarded, so a line unbound or moved since the read above is left alone.
            if not await LinesRepository(conn, self._cipher).set_plan(
                    line_id, plan.id, owner_id=user_id, now=now):
                return None
            await AuditRepository(conn).record(
                at=now, actor=f"user:{user_id}", action="line.plan_chosen",
                subject=str(line_id), details={"plan": plan.id})
        return LineWithPlan(dataclasses.replace(line, plan_product_id=plan.id), plan)

    async def with_plan(self, user_id: int, line_id: int) -> LineWithPlan | None:
        found = await self.catalog(user_id, line_id)
        if found is None:
            return None
        line, products = found
        return LineWithPlan(line, next((p for p in products if p.id == line.plan_product_id),
                                       None))
