"""The shared base of the charging phases: collaborators and the steps every phase takes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import Clock
from bot.domain.charges import ChargeState
from bot.domain.invariants import holds, present
from bot.domain.money import Money
from bot.domain.products import Product
from bot.gateways.esim_charges import EsimCharges
from bot.gateways.topup import TopUpProvider
from bot.services.catalog import CatalogService
from bot.services.charging.notices import (
    ApprovalRequest,
    ChargeExpired,
    ChargeFacts,
    ChargeFailed,
    ChargeStuck,
    TriggerShown,
)
from bot.services.charging.policy import (
    DEFAULT_ZONE,
    ApprovalReason,
    Checkpoint,
    RetryPolicy,
)
from bot.services.notices import queue
from storage.audit import AuditRepository
from storage.charges import ChargeRecord, ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LineRecord, LinesRepository
from storage.notifications import NotificationsRepository
from storage.wallet import WalletRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    db: Database
    cipher: FieldCipher
    provider: TopUpProvider
    clock: Clock
    approval_timeout: timedelta
    admins: tuple[int, ...]
    retry: RetryPolicy
    zone_for: Callable[[int], Awaitable[ZoneInfo]] | None
    catalog: CatalogService
    concurrency: int
    checkpoint: Checkpoint | None
    esims: EsimCharges | None = None  # orders for eSIM lines (None: no eSIMs sold)


class Phase:
    """What every phase of a charge shares: its collaborators and the small steps they all
    take (reading a charge or its line, what its messages say, audit rows, expiry)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db
        self._cipher = deps.cipher
        self._provider = deps.provider
        self._clock = deps.clock
        self._approval_timeout = deps.approval_timeout
        self._admins = deps.admins
        self.retry = deps.retry
        self._zone_for = deps.zone_for
        self._catalog = deps.catalog
        self._concurrency = deps.concurrency
        self._checkpoint = deps.checkpoint
        self._esims = deps.esims

    async def _point(self, name: str, charge_id: int) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(name, charge_id)

    def _repo(self, conn: AsyncConnection) -> ChargesRepository:
        return ChargesRepository(conn, self._cipher)

    async def _zone(self, user_id: int) -> ZoneInfo:
        return await self._zone_for(user_id) if self._zone_for is not None else DEFAULT_ZONE

    def _product(self, product_id: str | None) -> Product | None:
        return self._catalog.get(product_id)

    @staticmethod
    def _label(line: LineRecord | None) -> str:
        return line.label if line is not None else "?"

    async def _line(self, conn: AsyncConnection, line_id: int) -> LineRecord | None:
        return await LinesRepository(conn, self._cipher).get(line_id)

    @staticmethod
    def _owned(line: LineRecord | None, user_id: int) -> bool:
        return line is not None and line.owner_id == user_id and line.is_bound

    async def _get(self, charge_id: int) -> ChargeRecord | None:
        async with self._db.read() as conn:
            return await self._repo(conn).get(charge_id)

    async def _facts(self, conn: AsyncConnection, charge: ChargeRecord) -> ChargeFacts:
        """What the charge's messages say of it: its line, price and what it buys."""
        line = await self._line(conn, charge.line_id)
        product = self._product(charge.product_id)
        return ChargeFacts(
            charge_id=charge.id, line=self._label(line), amount=charge.amount,
            cause=charge.cause, product_id=charge.product_id,
            product_name=product.name if product is not None else None,
            product_kind=product.kind if product is not None else None,
            data_mb=product.data_mb if product is not None else None,
            validity_days=product.validity_days if product is not None else None)

    async def _approval_request(self, conn: AsyncConnection, charge: ChargeRecord,
                                reason: ApprovalReason, *, cap: Money | None = None,
                                spent: Money | None = None) -> ApprovalRequest:
        """The charge's approval request, with today's wallet balance and the reading a
        rule charged on."""
        wallet = await WalletRepository(conn).available(charge.user_id, charge.amount.currency)
        return ApprovalRequest(charge=await self._facts(conn, charge), reason=reason,
                               wallet=wallet, expires_at=charge.expires_at, cap=cap,
                               spent=spent, trigger=TriggerShown.of(charge.trigger))

    async def _ask(self, conn: AsyncConnection, charge: ChargeRecord, reason: ApprovalReason,
                   now: datetime, **cap: Money | None) -> None:
        await queue(NotificationsRepository(conn),
                    await self._approval_request(conn, charge, reason, **cap),
                    user_id=charge.user_id, chat_id=charge.user_id,
                    dedupe_key=f"approval:{charge.id}", now=now)

    async def _tell_admins(self, conn: AsyncConnection, charge: ChargeRecord,
                           notice: ChargeFailed | ChargeStuck, now: datetime,
                           dedupe: str) -> None:
        """Queues the admin copy ``notice`` to each admin chat."""
        # notifications.user_id must be a user: the charge's owner is the subject; the
        # message goes to the admin chat.
        for chat_id in self._admins:
            await queue(NotificationsRepository(conn), notice, user_id=charge.user_id,
                        chat_id=chat_id, dedupe_key=f"{dedupe}:admin:{chat_id}", now=now)

    @staticmethod
    async def _audit(conn: AsyncConnection, now: datetime, actor: str, action: str,
                     charge: ChargeRecord, **details: Any) -> None:
        await AuditRepository(conn).record(
            at=now, actor=actor, action=action, subject=str(charge.id),
            details={"amount": charge.amount.plain(), "line": charge.line_id,
                     "cause": charge.cause, **details})

    async def _expire(self, conn: AsyncConnection, charge: ChargeRecord, now: datetime, *,
                      actor: str, notify: bool) -> ChargeRecord:
        repo = self._repo(conn)
        moved = await repo.transition(charge.id, ChargeState.AWAITING_APPROVAL,
                                      ChargeState.EXPIRED, now, next_attempt_at=None)
        holds(moved, f"charge {charge.id} expired once")
        await WalletRepository(conn).release(charge.id, now=now)  # none is held yet
        if notify:
            await queue(NotificationsRepository(conn),
                        ChargeExpired(charge=await self._facts(conn, charge)),
                        user_id=charge.user_id, chat_id=charge.user_id,
                        dedupe_key=f"expired:{charge.id}", now=now,
                        replaces=f"approval:{charge.id}")
        await self._audit(conn, now, actor, "charge.expired", charge)
        return present(await repo.get(charge.id), f"charge {charge.id} exists")
