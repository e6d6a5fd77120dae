"""Charges: one row per thing that may cost the user money, keyed by what caused it.

The UNIQUE ``idempotency_key`` makes a cause charge at most once; every change of state is a
compare-and-set on the state the caller read (``UPDATE ... WHERE state = <from>``), so two
workers, two taps or a replayed update can never both move the same charge.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.charges import OPEN_STATES, TRANSITIONS, ChargeState
from bot.domain.invariants import present
from bot.domain.lines import LineKind
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from storage.common import insert_ignoring_conflict
from storage.crypto import FieldCipher
from storage.tables import charges, lines, users

REFERENCE_PREFIX = "tb-"

# States whose charges count against a rule's monthly cap: the money is spent or on its way.
CAP_STATES = (ChargeState.APPROVED, ChargeState.SUBMITTED, ChargeState.SUCCEEDED)
# States a sweep moves on (submit, look up, re-send, fail) once ``next_attempt_at`` is due.
WORKING_STATES = (ChargeState.APPROVED, ChargeState.SUBMITTED)

_READ_BY_CHARS = 32  # charges.trigger_read_by

# Inserts tried by one ``create``: each one that inserts nothing has met a charge committed
# meanwhile, which the next round finds (so a second round is already rare).
_CREATE_ATTEMPTS = 3

# Columns a transition or a reschedule may set besides the state.
_SETTABLE = frozenset({"expires_at", "next_attempt_at", "failure_reason", "provider_tx",
                       "balance_after_minor", "validity_end_after", "attempts",
                       "delivered", "provider_money", "amount_minor"})


def reference_for(idempotency_key: str) -> str:
    """Our reference at the provider: short, stable for one key, revealing nothing of it."""
    return REFERENCE_PREFIX + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


async def lock_wallet_of(conn: AsyncConnection, user_id: int) -> None:
    """Serializes spending from one user's wallet: whoever checks the available balance
    and then holds funds takes this first, so two approvals of two charges cannot both
    spend the same money. (PostgreSQL: FOR NO KEY UPDATE on the user's row, which does not
    block inserts that merely reference the user; SQLite's write lock already serializes.)"""
    # key_share=True renders FOR NO KEY UPDATE on PostgreSQL (nothing on SQLite).
    await conn.execute(select(users.c.id).where(users.c.id == user_id)
                       .with_for_update(key_share=True))


class Creation(enum.StrEnum):
    """What ``ChargesRepository.create`` did."""

    CREATED = "created"  # inserted now
    SAME_CAUSE = "same_cause"  # this idempotency key charged before: that charge
    LINE_BUSY = "line_busy"  # the line has another open charge: that one; nothing written


@dataclass(frozen=True)
class ProviderMoney:
    """What a provider reports it took for a top-up, in its account currency."""

    currency: str
    cost_minor: int | None
    fee_minor: int | None
    discount_minor: int | None


@dataclass(frozen=True)
class ChargeRecord:
    id: int
    idempotency_key: str
    reference: str
    user_id: int
    line_id: int
    rule_id: int | None
    cause: str
    amount: Money
    product_id: str | None
    state: ChargeState
    expires_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    failure_reason: str | None
    provider_tx_id: str | None
    balance_after: Money | None
    validity_end_after: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered: Money | None = None  # what the line received, as the provider reports it
    provider_money: ProviderMoney | None = None
    trigger: TriggerReading | None = None  # the reading a rule charged on


def _trigger_values(trigger: TriggerReading | None) -> dict[str, Any]:
    reading = trigger.reading if trigger is not None else None
    balance = reading.balance if reading is not None else None
    return {
        "trigger_source": reading.source.value if reading is not None else None,
        "trigger_read_at": reading.read_at if reading is not None else None,
        "trigger_balance_minor": balance.minor if balance is not None else None,
        "trigger_currency": balance.currency if balance is not None else None,
        "trigger_data_mb": reading.data_mb if reading is not None else None,
        "trigger_validity_end": reading.validity_end if reading is not None else None,
        # A provider's display name ("Airalo"): cut to the column, never failing a sweep.
        "trigger_read_by": (trigger.read_by[:_READ_BY_CHARS]
                            if trigger is not None and trigger.read_by else None),
    }


def _trigger(row: RowMapping) -> TriggerReading | None:
    if row["trigger_source"] is None or row["trigger_read_at"] is None:
        return None
    balance = row["trigger_balance_minor"]
    return TriggerReading(LineReading(
        source=ReadingSource(row["trigger_source"]), read_at=row["trigger_read_at"],
        balance=Money(balance, row["trigger_currency"]) if balance is not None else None,
        data_mb=row["trigger_data_mb"], validity_end=row["trigger_validity_end"]),
        read_by=row["trigger_read_by"])


class ChargesRepository:
    def __init__(self, conn: AsyncConnection, cipher: FieldCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    def _record(self, row: RowMapping) -> ChargeRecord:
        currency: str = row["currency"]
        tx_enc = row["provider_tx_enc"]
        balance = row["balance_after_minor"]
        return ChargeRecord(
            id=row["id"], idempotency_key=row["idempotency_key"], reference=row["reference"],
            user_id=row["user_id"], line_id=row["line_id"], rule_id=row["rule_id"],
            cause=row["cause"], amount=Money(row["amount_minor"], currency),
            product_id=row["product_id"], state=ChargeState(row["state"]),
            expires_at=row["expires_at"], attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"], failure_reason=row["failure_reason"],
            provider_tx_id=self._cipher.decrypt(tx_enc) if tx_enc else None,
            balance_after=Money(balance, currency) if balance is not None else None,
            validity_end_after=row["validity_end_after"], created_at=row["created_at"],
            updated_at=row["updated_at"],
            delivered=(Money(row["delivered_minor"], row["delivered_currency"])
                       if row["delivered_minor"] is not None else None),
            provider_money=(ProviderMoney(
                currency=row["provider_currency"], cost_minor=row["provider_cost_minor"],
                fee_minor=row["provider_fee_minor"],
                discount_minor=row["provider_discount_minor"])
                if row["provider_currency"] is not None else None),
            trigger=_trigger(row))

    def _values(self, values: dict[str, Any]) -> dict[str, Any]:
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValueError(f"not charge columns: {sorted(unknown)}")
        out = dict(values)
        if "provider_tx" in out:
            tx = out.pop("provider_tx")
            out["provider_tx_enc"] = self._cipher.encrypt(tx) if tx is not None else None
        if "delivered" in out:
            delivered: Money | None = out.pop("delivered")
            out["delivered_minor"] = delivered.minor if delivered else None
            out["delivered_currency"] = delivered.currency if delivered else None
        if "provider_money" in out:
            money: ProviderMoney | None = out.pop("provider_money")
            out.update(provider_cost_minor=money.cost_minor if money else None,
                       provider_fee_minor=money.fee_minor if money else None,
                       provider_discount_minor=money.discount_minor if money else None,
                       provider_currency=money.currency if money else None)
        return out

    async def create(self, *, idempotency_key: str, user_id: int, line_id: int,
                     amount: Money, cause: str, state: ChargeState, now: datetime,
                     rule_id: int | None = None, product_id: str | None = None,
                     expires_at: datetime | None = None,
                     next_attempt_at: datetime | None = None,
                     trigger: TriggerReading | None = None) -> tuple[ChargeRecord, Creation]:
        """The charge of ``idempotency_key``, inserted now (CREATED); or, with nothing
        written, the charge that already exists for that key (SAME_CAUSE) or the line's
        open charge (LINE_BUSY): never a second charge for one cause, nor a second open
        charge on one line.

        Every charge is created here. The checks come first, so the usual case writes
        nothing; the partial unique index ``uq_charges_line_id_open`` is the backstop for a
        concurrent creation on PostgreSQL, where the INSERT ... ON CONFLICT DO NOTHING waits
        for it and then inserts nothing (no unique violation aborts the caller's
        transaction, which may be a whole sweep batch). ``trigger``: the reading a rule
        charges on, kept with the charge."""
        if state not in (ChargeState.AWAITING_APPROVAL, ChargeState.APPROVED):
            raise ValueError(f"a charge cannot start {state.value}")
        values = {
            "idempotency_key": idempotency_key, "reference": reference_for(idempotency_key),
            "user_id": user_id, "line_id": line_id, "rule_id": rule_id, "cause": cause,
            "amount_minor": amount.minor, "currency": amount.currency,
            "product_id": product_id, "state": state.value, "expires_at": expires_at,
            "attempts": 0, "next_attempt_at": next_attempt_at,
            "created_at": now, "updated_at": now, **_trigger_values(trigger),
        }
        for _attempt in range(_CREATE_ATTEMPTS):
            existing = await self.by_key(idempotency_key)
            if existing is not None:
                return existing, Creation.SAME_CAUSE
            busy = await self.open_for_line(line_id)
            if busy is not None:
                return busy, Creation.LINE_BUSY
            if await insert_ignoring_conflict(self._conn, charges, values):
                record = present(await self.by_key(idempotency_key),
                                 f"charge {idempotency_key} just inserted exists")
                return record, Creation.CREATED
            # A concurrent transaction inserted this key or an open charge of this line and
            # committed; the loop reads which. (Only if that charge was closed again in the
            # meantime does the insert run once more.)
        raise RuntimeError(f"could not create charge {idempotency_key!r}: the line's open "
                           "charge kept changing")

    async def open_for_line(self, line_id: int) -> ChargeRecord | None:
        """The line's open charge (awaiting approval, approved or submitted), if any."""
        row = (await self._conn.execute(select(charges).where(
            charges.c.line_id == line_id,
            charges.c.state.in_([s.value for s in OPEN_STATES]))
            .order_by(charges.c.id).limit(1))).mappings().first()
        return self._record(row) if row else None

    async def get(self, charge_id: int, *, lock: bool = False) -> ChargeRecord | None:
        query = select(charges).where(charges.c.id == charge_id)
        if lock:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return self._record(row) if row else None

    async def by_key(self, idempotency_key: str) -> ChargeRecord | None:
        row = (await self._conn.execute(select(charges).where(
            charges.c.idempotency_key == idempotency_key))).mappings().first()
        return self._record(row) if row else None

    async def by_reference(self, reference: str) -> ChargeRecord | None:
        row = (await self._conn.execute(select(charges).where(
            charges.c.reference == reference))).mappings().first()
        return self._record(row) if row else None

    async def recent_for_user(self, user_id: int, states: Iterable[ChargeState],
                              limit: int) -> list[ChargeRecord]:
        """The user's newest charges in ``states``, newest first (what /support offers)."""
        query = (select(charges)
                 .where(charges.c.user_id == user_id,
                        charges.c.state.in_([s.value for s in states]))
                 .order_by(charges.c.id.desc()).limit(limit))
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def transition(self, charge_id: int, from_state: ChargeState, to_state: ChargeState,
                         now: datetime, *, bump_attempts: bool = False,
                         **values: Any) -> bool:
        """Moves the charge from ``from_state`` to ``to_state`` if it is still in
        ``from_state`` (compare-and-set); False when someone moved it first.

        ``values`` may set expires_at, next_attempt_at, failure_reason, provider_tx (stored
        encrypted), balance_after_minor and validity_end_after.
        """
        if to_state not in {to for (origin, _), to in TRANSITIONS.items() if origin is from_state}:
            raise ValueError(f"a charge cannot go from {from_state.value} to {to_state.value}")
        statement = update(charges).where(
            charges.c.id == charge_id, charges.c.state == from_state.value).values(
            state=to_state.value, updated_at=now, **self._values(values))
        if bump_attempts:
            statement = statement.values(attempts=charges.c.attempts + 1)
        result = await self._conn.execute(statement)
        return bool(result.rowcount)

    async def reschedule(self, charge_id: int, state: ChargeState, now: datetime, *,
                         expected_attempts: int | None = None, bump_attempts: bool = False,
                         **values: Any) -> bool:
        """Changes a charge that stays in ``state`` (a retry, a pending look-up, a re-send);
        False when it is no longer in that state (or has another attempt count)."""
        statement = update(charges).where(
            charges.c.id == charge_id, charges.c.state == state.value).values(
            updated_at=now, **self._values(values))
        if expected_attempts is not None:
            statement = statement.where(charges.c.attempts == expected_attempts)
        if bump_attempts:
            statement = statement.values(attempts=charges.c.attempts + 1)
        result = await self._conn.execute(statement)
        return bool(result.rowcount)

    async def claim(self, charge_id: int, state: ChargeState, now: datetime,
                    until: datetime) -> bool:
        """Takes a due charge for one worker: its ``next_attempt_at`` moves to ``until`` (a
        lease) if it is still in ``state`` and due. Several sweepers never work one charge
        together; a worker that dies lets it fall due again when the lease ends."""
        result = await self._conn.execute(update(charges).where(
            charges.c.id == charge_id, charges.c.state == state.value,
            or_(charges.c.next_attempt_at.is_(None), charges.c.next_attempt_at <= now))
            .values(next_attempt_at=until))
        return bool(result.rowcount)

    async def spent_in_period(self, rule_id: int, start: datetime, end: datetime) -> int:
        """Minor units of the rule's charges created in [start, end) that are approved,
        submitted or succeeded: what counts against its monthly cap."""
        total = (await self._conn.execute(
            select(func.coalesce(func.sum(charges.c.amount_minor), 0)).where(
                charges.c.rule_id == rule_id,
                charges.c.state.in_([s.value for s in CAP_STATES]),
                charges.c.created_at >= start, charges.c.created_at < end))).scalar_one()
        return int(total)

    async def last_success_for_lines(self, line_ids: list[int]
                                     ) -> dict[int, tuple[datetime, int]]:
        """When each line was last topped up through us, and for how much (minor units)."""
        if not line_ids:
            return {}
        rows = await self._conn.execute(
            select(charges.c.line_id, charges.c.updated_at, charges.c.amount_minor)
            .where(charges.c.line_id.in_(sorted(set(line_ids))),
                   charges.c.state == ChargeState.SUCCEEDED.value)
            .order_by(charges.c.updated_at))
        return {line_id: (at, amount) for line_id, at, amount in rows.all()}

    async def succeeded_for_line(self, line_id: int, *, user_id: int,
                                 since: datetime) -> list[ChargeRecord]:
        """The line's top-ups for ``user_id`` that succeeded (settled, ``updated_at``) at or
        after ``since``, oldest first: the marks on its balance chart."""
        query = (select(charges)
                 .where(charges.c.line_id == line_id, charges.c.user_id == user_id,
                        charges.c.state == ChargeState.SUCCEEDED.value,
                        charges.c.updated_at >= since)
                 .order_by(charges.c.updated_at, charges.c.id))
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def due_summary(self, now: datetime) -> tuple[int, datetime | None]:
        """Approved or submitted charges whose submit, retry or look-up is due."""
        row = (await self._conn.execute(
            select(func.count(), func.min(charges.c.next_attempt_at))
            .where(charges.c.state.in_([ChargeState.APPROVED.value,
                                        ChargeState.SUBMITTED.value]),
                   charges.c.next_attempt_at <= now))).one()
        return int(row[0]), row[1]

    async def failures_since(self, since: datetime) -> dict[str, int]:
        """Charges failed since ``since``, by reason."""
        rows = await self._conn.execute(
            select(charges.c.failure_reason, func.count())
            .where(charges.c.state == ChargeState.FAILED.value, charges.c.updated_at >= since)
            .group_by(charges.c.failure_reason))
        return {reason or "unknown": int(count) for reason, count in rows.all()}

    async def due_retries(self, now: datetime, limit: int = 100) -> list[ChargeRecord]:
        """Approved or submitted charges whose next submit, look-up or retry is due."""
        query = (select(charges)
                 .where(charges.c.state.in_([s.value for s in WORKING_STATES]),
                        charges.c.next_attempt_at <= now)
                 .order_by(charges.c.next_attempt_at, charges.c.id).limit(limit))
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def expired_requests(self, now: datetime, limit: int = 100) -> list[ChargeRecord]:
        """Approval requests nobody answered before ``expires_at``."""
        query = (select(charges)
                 .where(charges.c.state == ChargeState.AWAITING_APPROVAL.value,
                        charges.c.expires_at <= now)
                 .order_by(charges.c.expires_at, charges.c.id).limit(limit))
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def by_state(self, state: ChargeState | None, limit: int = 50, *,
                       after_id: int | None = None) -> list[ChargeRecord]:
        """Charges in ``state`` (every state when None), oldest first; ``after_id`` pages."""
        query = select(charges).order_by(charges.c.id).limit(limit)
        if state is not None:
            query = query.where(charges.c.state == state.value)
        if after_id is not None:
            query = query.where(charges.c.id > after_id)
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def succeeded_between(self, start: datetime, end: datetime, *,
                                line_kind: LineKind = LineKind.SIM) -> list[ChargeRecord]:
        """Charges of ``line_kind`` lines that succeeded (settled) in [start, end): what a
        day's reconciliation expects to find at the provider (SIM lines' at the top-up
        provider, eSIM lines' at the eSIM provider)."""
        query = select(charges).where(
            charges.c.state == ChargeState.SUCCEEDED.value, charges.c.updated_at >= start,
            charges.c.updated_at < end,
            charges.c.line_id.in_(select(lines.c.id).where(lines.c.kind == line_kind.value)),
        ).order_by(charges.c.id)
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]

    async def latest(self, states: Iterable[ChargeState] | None = None,
                     limit: int = 50) -> list[ChargeRecord]:
        """The newest charges (in ``states`` when given), newest first: for operators."""
        query = select(charges).order_by(charges.c.id.desc()).limit(limit)
        if states is not None:
            query = query.where(charges.c.state.in_([s.value for s in states]))
        return [self._record(r) for r in (await self._conn.execute(query)).mappings()]
