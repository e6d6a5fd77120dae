"""The simulated carrier: the embedded default TopUpProvider and LineReadings.

It stands in for the carriers and the aggregator, keeps its state in the database (as a
provider keeps it on its side, so it commits its own transactions), drains balance and
data with time, and reproduces the real providers' failure modes on demand: latency,
timeouts before or after the top-up was applied, declines, pending results that settle
later, and references that are refused or (the fault seen in the wild) paid twice.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aiodataloader import DataLoader

from bot.clock import Clock
from bot.domain.invariants import present
from bot.domain.money import Money
from bot.domain.operators import (
    MIN_AIRTIME_USD_CENTS,
    RECYCLE_AFTER,
    Operator,
    validity_days_for_airtime,
)
from bot.domain.products import Product
from bot.domain.readings import LineReading, ReadingSource
from bot.gateways.readings import LineNotReadable
from bot.gateways.simulated_catalog import CATALOG, PRODUCTS
from bot.gateways.topup import (
    DuplicateReference,
    GatewayTimeout,
    TopUpRequest,
    TopUpResult,
    TopUpStatus,
)
from storage.crypto import FieldCipher
from storage.db import Database
from storage.sim_carrier import SimCarrierRepository, SimLineRow, SimTopupRow

LINE_CURRENCY = "USD"  # Cambodian prepaid balances are kept in US dollars
READ_BATCH = 500  # balance reads answered by one query, at most


class ReplayBehaviour(enum.StrEnum):
    IDEMPOTENT = "idempotent"  # a known reference answers with the original top-up
    REJECT = "reject"  # a known reference is refused (Reloadly's customIdentifier)
    PAY_TWICE = "pay_twice"  # the fault seen in the wild: a replay is paid again


@dataclass(frozen=True)
class SimulatorKnobs:
    latency_ms: int = 0
    timeout_rate: float = 0.0  # the request is lost before it is applied
    lost_response_rate: float = 0.0  # applied, but the answer is lost: outcome unknown
    decline_rate: float = 0.0
    pending_rate: float = 0.0  # accepted as pending; settles ``settle_seconds`` later
    pending_failure_rate: float = 0.0  # a pending top-up that settles as refunded
    settle_seconds: int = 30
    replay: ReplayBehaviour = ReplayBehaviour.IDEMPOTENT
    read_timeout_rate: float = 0.0  # balance reads that time out


class SimLineStatus(enum.StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"  # validity ended: incoming only, credit frozen
    RECYCLED = "recycled"  # no top-up for too long: the number is gone


@dataclass(frozen=True)
class SimLineState:
    phone_e164: str
    operator: Operator
    balance: Money
    data_mb: int
    validity_end: datetime
    data_expires_at: datetime | None
    last_topup_at: datetime | None
    status: SimLineStatus
    recycle_at: datetime
    recent_topups: tuple[SimTopupRow, ...] = ()


@dataclass(frozen=True)
class _Stored:
    """A line as the simulator keeps it, for a balance read."""

    line: SimLineRow | None  # None: never seen
    settling: bool  # a top-up of it is due to settle
    at: datetime  # when it was looked up


class SimulatedCarrier:
    def __init__(self, db: Database, cipher: FieldCipher, clock: Clock,
                 knobs: SimulatorKnobs | None = None, rng: random.Random | None = None) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock
        self.knobs = knobs or SimulatorKnobs()
        self._rng = rng or random.Random()  # fault injection, not security
        self._lookups: DataLoader[str, _Stored] | None = None

    # -- TopUpProvider -------------------------------------------------------------------

    async def catalog(self, operator: Operator) -> list[Product]:
        await self._latency()
        return list(CATALOG[operator])

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        await self._latency()
        if self._chance(self.knobs.timeout_rate):
            raise GatewayTimeout("simulated timeout before the top-up was applied")
        async with self._db.write() as conn:
            repo = SimCarrierRepository(conn, self._cipher)
            now = self._clock.now()
            await self._ensure_line(repo, request.phone_e164, request.operator, now)
            duplicate = False
            known = await repo.topup_by_reference(request.reference)
            if known is not None:
                if self.knobs.replay is ReplayBehaviour.REJECT:
                    raise DuplicateReference(request.reference)
                if self.knobs.replay is ReplayBehaviour.IDEMPOTENT:
                    known = await self._settle_if_due(repo, known, now)
                    return self._result(known)
                duplicate = True
            row = await self._accept(repo, request, now, duplicate=duplicate)
        if self._chance(self.knobs.lost_response_rate):
            raise GatewayTimeout("simulated timeout after the top-up was applied")
        return self._result(row)

    async def lookup(self, reference: str) -> TopUpResult | None:
        await self._latency()
        async with self._db.write() as conn:
            repo = SimCarrierRepository(conn, self._cipher)
            row = await repo.topup_by_reference(reference)
            if row is None:
                return None
            row = await self._settle_if_due(repo, row, self._clock.now())
        return self._result(row)

    async def transactions(self, start: datetime, end: datetime) -> list[TopUpResult]:
        """Its top-ups made in [start, end), as a provider's daily report lists them."""
        async with self._db.read() as conn:
            rows = await SimCarrierRepository(conn, self._cipher).topups_between(start, end)
        return [self._result(row) for row in rows]

    # -- LineReadings --------------------------------------------------------------------

    def can_read(self, operator: Operator) -> bool:
        return operator in CATALOG

    async def read(self, phone_e164: str, operator: Operator) -> LineReading:
        await self._latency()
        if not self.can_read(operator):
            raise LineNotReadable(operator)
        if self._chance(self.knobs.read_timeout_rate):
            raise GatewayTimeout("simulated timeout reading the line")
        stored = await self._lookup().load(phone_e164)
        line, now = stored.line, stored.at
        if line is None or stored.settling:  # first sight of the line, or a top-up to settle
            state = await self.show(phone_e164, operator)
            return LineReading(source=ReadingSource.PROVIDER, read_at=now,
                               balance=state.balance, data_mb=state.data_mb,
                               validity_end=state.validity_end)
        # The usual case is read-only: the usage since the last change is worked out, as
        # show() does, without writing it back.
        current = _drained(line, now)
        return LineReading(source=ReadingSource.PROVIDER, read_at=now,
                           balance=Money(current.balance_minor, line.currency),
                           data_mb=current.data_mb, validity_end=line.validity_end)

    def _lookup(self) -> DataLoader[str, _Stored]:
        """Reads that arrive together share one query. The simulator stands in for a remote
        carrier: a sweep's reads (up to 128 in flight, their latency ending at once) must
        not each cost the bot's own database a round trip, or the stand-in, not the bot,
        decides how a sweep scales."""
        loop = asyncio.get_running_loop()
        if self._lookups is None or self._lookups.loop is not loop:
            self._lookups = DataLoader(self._look_up_many, cache=False,
                                       max_batch_size=READ_BATCH, loop=loop)
        return self._lookups

    async def _look_up_many(self, numbers: list[str]) -> list[_Stored]:
        now = self._clock.now()
        async with self._db.read() as conn:
            found = await SimCarrierRepository(conn, self._cipher).lines_to_read(numbers, now)
        stored = []
        for number in numbers:
            line, settling = found.get(number, (None, False))
            stored.append(_Stored(line, settling, now))
        return stored

    # -- operator controls (`topup-bot sim ...`) ----------------------------------------

    async def show(self, phone_e164: str, operator: Operator) -> SimLineState:
        async with self._db.write() as conn:
            repo = SimCarrierRepository(conn, self._cipher)
            now = self._clock.now()
            line = await self._ensure_line(repo, phone_e164, operator, now)
            for pending in await repo.pending_due(line.phone_index, now):
                await self._settle_if_due(repo, pending, now)
            line = await repo.line_by_index(line.phone_index)
            recent = tuple(await repo.topups_for(line.phone_index, limit=5))
        return self._state(line, now, recent)

    async def set_balance(self, phone_e164: str, operator: Operator, amount: Money) -> SimLineState:
        return await self._change(phone_e164, operator, balance=amount)

    async def use_data(self, phone_e164: str, operator: Operator, megabytes: int) -> SimLineState:
        if megabytes <= 0:
            raise ValueError("megabytes must be positive")
        return await self._change(phone_e164, operator, data_used_mb=megabytes)

    async def set_validity(self, phone_e164: str, operator: Operator,
                           validity_end: datetime) -> SimLineState:
        return await self._change(phone_e164, operator, validity_end=validity_end)

    async def times_paid(self, reference: str) -> int:
        """How many top-ups a reference produced (tests: anything above 1 is a double pay)."""
        async with self._db.read() as conn:
            return await SimCarrierRepository(conn, self._cipher).count_topups(reference)

    # -- internals -----------------------------------------------------------------------

    async def _change(self, phone_e164: str, operator: Operator, *,
                      balance: Money | None = None, data_used_mb: int = 0,
                      validity_end: datetime | None = None) -> SimLineState:
        async with self._db.write() as conn:
            repo = SimCarrierRepository(conn, self._cipher)
            now = self._clock.now()
            line = await self._ensure_line(repo, phone_e164, operator, now)
            current = _drained(line, now)
            values: dict[str, object] = {**current.rebased(now),
                                         "data_mb": max(0, current.data_mb - data_used_mb)}
            if balance is not None:
                if balance.currency != line.currency or balance.minor < 0:
                    raise ValueError(f"the line's balance is kept in {line.currency}")
                values["balance_minor"] = balance.minor
            if validity_end is not None:
                values["validity_end"] = validity_end
            await repo.save_line(line.phone_index, **values)
            saved = await repo.line_by_index(line.phone_index)
            recent = tuple(await repo.topups_for(saved.phone_index, limit=5))
        return self._state(saved, now, recent)

    async def _ensure_line(self, repo: SimCarrierRepository, phone_e164: str,
                           operator: Operator, now: datetime) -> SimLineRow:
        line = await repo.line(phone_e164, lock=True)
        if line is not None:
            return line
        # A line the carrier has never been asked about: a plausible, repeatable state.
        seed = int.from_bytes(hashlib.sha256(phone_e164.encode()).digest()[:8], "big")
        await repo.add_line(
            phone_e164=phone_e164, operator=operator.value,
            balance_minor=50 + seed % 250, currency=LINE_CURRENCY,
            data_mb=(seed >> 8) % 2048, validity_end=now + timedelta(days=3 + (seed >> 16) % 28),
            daily_spend_minor=5 + (seed >> 24) % 16, daily_data_mb=50 + (seed >> 32) % 400,
            now=now)
        return present(await repo.line(phone_e164, lock=True), "the line just added exists")

    async def _accept(self, repo: SimCarrierRepository, request: TopUpRequest, now: datetime,
                      *, duplicate: bool) -> SimTopupRow:
        product = PRODUCTS.get(request.product_id) if request.product_id else None
        amount = product.price if product else request.amount
        base: dict[str, object] = {
            "reference": request.reference, "provider_tx_id": f"SIM-{secrets.token_hex(8)}",
            "phone_index": repo.index_of(request.phone_e164), "product_id": request.product_id,
            "amount_minor": amount.minor if amount else 0,
            "currency": amount.currency if amount else LINE_CURRENCY,
            "duplicate": duplicate, "created_at": now,
        }
        refusal = self._refusal(request, product, amount)
        if refusal is None and self._chance(self.knobs.decline_rate):
            refusal = "declined_by_operator"
        if refusal is not None:
            return await repo.add_topup(status=TopUpStatus.FAILED.value, failure_reason=refusal,
                                        settled_at=now, **base)
        if self._chance(self.knobs.pending_rate):
            return await repo.add_topup(
                status=TopUpStatus.PENDING.value,
                settle_at=now + timedelta(seconds=self.knobs.settle_seconds), **base)
        row = await repo.add_topup(status=TopUpStatus.PENDING.value, settle_at=now, **base)
        return await self._apply(repo, row, now)

    @staticmethod
    def _refusal(request: TopUpRequest, product: Product | None,
                 amount: Money | None) -> str | None:
        if request.product_id and product is None:
            return "unknown_product"
        if product is not None and product.operator is not request.operator:
            return "product_of_another_operator"
        if amount is None:
            return "no_amount"
        if amount.currency != LINE_CURRENCY:
            return "unsupported_currency"
        if product is None and amount.minor < MIN_AIRTIME_USD_CENTS:
            return "amount_below_minimum"
        return None

    async def _settle_if_due(self, repo: SimCarrierRepository, row: SimTopupRow,
                             now: datetime) -> SimTopupRow:
        if row.status != TopUpStatus.PENDING.value or row.settle_at is None or row.settle_at > now:
            return row
        if self._chance(self.knobs.pending_failure_rate):
            await repo.settle(row.id, status=TopUpStatus.FAILED.value, settled_at=now,
                              failure_reason="refunded_by_operator")
            return replace(row, status=TopUpStatus.FAILED.value, settled_at=now,
                           failure_reason="refunded_by_operator")
        return await self._apply(repo, row, now)

    async def _apply(self, repo: SimCarrierRepository, row: SimTopupRow,
                     now: datetime) -> SimTopupRow:
        line = await repo.line_by_index(row.phone_index, lock=True)
        current = _drained(line, now)
        operator = Operator(line.operator)
        product = PRODUCTS.get(row.product_id) if row.product_id else None
        balance, data, data_expires = current.balance_minor, current.data_mb, line.data_expires_at
        validity = line.validity_end
        if product is not None and product.data_mb:
            data += product.data_mb
            pack_end = now + timedelta(days=product.validity_days)
            data_expires = max(data_expires, pack_end) if data_expires else pack_end
        else:
            credit = product.airtime.minor if product and product.airtime else row.amount_minor
            balance += credit
            days = validity_days_for_airtime(operator, credit)
            validity = max(validity, now + timedelta(days=days))
        await repo.save_line(line.phone_index, **{**current.rebased(now), "balance_minor": balance,
                                                  "data_mb": data},
                             data_expires_at=data_expires, validity_end=validity,
                             last_topup_at=now)
        settled = {"status": TopUpStatus.SUCCEEDED.value, "settled_at": now,
                   "balance_after_minor": balance, "data_after_mb": data,
                   "validity_end_after": validity}
        await repo.settle(row.id, **settled)
        return replace(row, **settled)  # type: ignore[arg-type]

    def _result(self, row: SimTopupRow) -> TopUpResult:
        succeeded = row.status == TopUpStatus.SUCCEEDED.value
        return TopUpResult(
            reference=row.reference, status=TopUpStatus(row.status),
            provider_tx_id=row.provider_tx_id, amount=Money(row.amount_minor, row.currency),
            at=row.settled_at or row.created_at, product_id=row.product_id,
            failure_reason=row.failure_reason,
            balance_after=(Money(row.balance_after_minor, LINE_CURRENCY)
                           if succeeded and row.balance_after_minor is not None else None),
            data_after_mb=row.data_after_mb if succeeded else None,
            validity_end=row.validity_end_after if succeeded else None)

    def _state(self, line: SimLineRow, now: datetime,
               recent: tuple[SimTopupRow, ...]) -> SimLineState:
        current = _drained(line, now)
        operator = Operator(line.operator)
        recycle_at = (line.last_topup_at or line.created_at) + RECYCLE_AFTER[operator]
        if now >= recycle_at and now >= line.validity_end:
            status = SimLineStatus.RECYCLED
        elif now >= line.validity_end:
            status = SimLineStatus.EXPIRED
        else:
            status = SimLineStatus.ACTIVE
        return SimLineState(
            phone_e164=line.phone_e164, operator=operator,
            balance=Money(current.balance_minor, line.currency), data_mb=current.data_mb,
            validity_end=line.validity_end, data_expires_at=line.data_expires_at,
            last_topup_at=line.last_topup_at, status=status, recycle_at=recycle_at,
            recent_topups=recent)

    async def _latency(self) -> None:
        if self.knobs.latency_ms:
            await asyncio.sleep(self.knobs.latency_ms / 1000)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate


@dataclass(frozen=True)
class _Usage:
    balance_minor: int
    data_mb: int
    spend_carry: int  # what usage has not yet made a whole cent / MB (units of 1/86400)
    data_carry: int

    def rebased(self, now: datetime) -> dict[str, object]:
        """The columns that restart the usage count at ``now``, losing no fraction."""
        return {"as_of": now, "balance_minor": self.balance_minor, "data_mb": self.data_mb,
                "spend_carry": self.spend_carry, "data_carry": self.data_carry}


def _drained(line: SimLineRow, now: datetime) -> _Usage:
    """Balance and data after the usage since ``as_of`` (none after validity ends)."""
    if line.data_expires_at is not None and now >= line.data_expires_at:
        data_left = 0
    else:
        data_left = line.data_mb
    until = min(now, line.validity_end)
    seconds = max(0, int((until - line.as_of).total_seconds()))
    spent, spend_carry = divmod(line.daily_spend_minor * seconds + line.spend_carry, 86_400)
    used, data_carry = divmod(line.daily_data_mb * seconds + line.data_carry, 86_400)
    return _Usage(balance_minor=max(0, line.balance_minor - spent),
                  data_mb=max(0, data_left - used), spend_carry=spend_carry,
                  data_carry=data_carry)
