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
from bot.gateways.topup import TopUpProvider
from bot.services.catalog import CatalogService
from bot.services.charging.policy import (
    APPROVAL_REQUEST,
    CHARGE_EXPIRED,
    DEFAULT_ZONE,
    ApprovalReason,
    Checkpoint,
    RetryPolicy,
)
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


class Phase:
    """What every phase of a charge shares: its collaborators and the small steps they all
    take (reading a charge or its line, the notification params, audit rows, expiry)."""

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

    async def _point(self, name: str, charge_id: int) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(name, charge_id)

    def _repo(self, conn: AsyncConnection) -> ChargesRepository:
        return ChargesRepository(conn, self._cipher)

    async def _zone(self, user_id: int) -> ZoneInfo:
        return await self._zone_for(user_id) if self._zone_for is not None else DEFAULT_ZONE

    def _product(self, product_id: str | None) -> Product | None:
        return self._catalog.get(product_id)

    def _what(self, charge: ChargeRecord) -> dict[str, Any]:
        """What a charge buys, as plain notification params."""
        product = self._product(charge.product_id)
        return {
            "product_id": charge.product_id,
            "product_name": product.name if product is not None else None,
            "product_kind": product.kind.value if product is not None else None,
            "data_mb": product.data_mb if product is not None else None,
            "validity_days": product.validity_days if product is not None else None,
        }

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

    async def _base_params(self, conn: AsyncConnection, charge: ChargeRecord) -> dict[str, Any]:
        line = await self._line(conn, charge.line_id)
        return {"charge_id": charge.id, "line": self._label(line),
                "amount_minor": charge.amount.minor, "currency": charge.amount.currency,
                "cause": charge.cause, **self._what(charge)}

    async def _approval_params(self, conn: AsyncConnection, charge: ChargeRecord,
                               reason: ApprovalReason, *, cap: Money | None = None,
                               spent: Money | None = None) -> dict[str, Any]:
        wallet = await WalletRepository(conn).available(charge.user_id, charge.amount.currency)
        return {**await self._base_params(conn, charge), "reason": reason.value,
                "wallet_minor": wallet.minor, "wallet_currency": wallet.currency,
                "expires_at": charge.expires_at.isoformat() if charge.expires_at else None,
                "cap_minor": cap.minor if cap is not None else None,
                "spent_minor": spent.minor if spent is not None else None}

    async def _ask(self, conn: AsyncConnection, charge: ChargeRecord, reason: ApprovalReason,
                   now: datetime, **cap: Money | None) -> None:
        params = await self._approval_params(conn, charge, reason, **cap)
        await NotificationsRepository(conn).enqueue(
            user_id=charge.user_id, chat_id=charge.user_id, dedupe_key=f"approval:{charge.id}",
            kind=APPROVAL_REQUEST, params=params, now=now)

    async def _tell_admins(self, conn: AsyncConnection, charge: ChargeRecord, kind: str,
                           params: dict[str, Any], now: datetime, dedupe: str) -> None:
        # notifications.user_id must be a user: the charge's owner is the subject; the
        # message goes to the admin chat.
        for chat_id in self._admins:
            await NotificationsRepository(conn).enqueue(
                user_id=charge.user_id, chat_id=chat_id, dedupe_key=f"{dedupe}:admin:{chat_id}",
                kind=kind, params={**params, "audience": "admin", "user_id": charge.user_id,
                                   "reference": charge.reference}, now=now)

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
            await NotificationsRepository(conn).enqueue(
                user_id=charge.user_id, chat_id=charge.user_id,
                dedupe_key=f"expired:{charge.id}", kind=CHARGE_EXPIRED,
                params={**await self._base_params(conn, charge),
                        "replaces": f"approval:{charge.id}"}, now=now)
        await self._audit(conn, now, actor, "charge.expired", charge)
        return present(await repo.get(charge.id), f"charge {charge.id} exists")
