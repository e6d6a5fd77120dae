"""What the charging tests share: users with lines and wallets, the simulated carrier
behind a provider that can fail on purpose, and the invariants that must always hold."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.products import Product
from bot.gateways.simulated_carrier import SimulatedCarrier, SimulatorKnobs
from bot.gateways.topup import (
    GatewayTimeout,
    TopUpProvider,
    TopUpRequest,
    TopUpResult,
)
from bot.services.catalog import CatalogService
from bot.services.charging import ChargingService, Checkpoint, RetryPolicy
from storage.charges import ChargeRecord, ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from storage.payments import PaymentsRepository
from storage.tables import holds, notifications, wallet_payments
from storage.users import UsersRepository
from storage.wallet import WalletRepository

ALICE, BOB = 101, 202
ALICE_NUMBER = parse_cambodian_mobile("012345678")  # Cellcard
BOB_NUMBER = parse_cambodian_mobile("0962345678")  # Smart
ADMINS = (9001, 9002)
RETRY = RetryPolicy(max_attempts=3, first_delay=timedelta(seconds=30), multiplier=2,
                    max_delay=timedelta(minutes=10), poll_interval=timedelta(seconds=20),
                    lease=timedelta(minutes=2))
_payments = itertools.count(1)


def usd(cents: int) -> Money:
    return Money(cents, "USD")


class Crash(Exception):
    """The process dies here (nothing in the service catches it)."""


@dataclass
class FaultyProvider:
    """The carrier, with crashes and unreliable look-ups on demand.

    ``crash_after_apply``: the top-up reaches the carrier and is applied, then the process
    dies before it hears the answer. ``lookup_misses``: the next look-ups say "never seen"
    even when the carrier has it (a lagging provider). ``lookup_errors``: the next look-ups
    time out.
    """

    inner: TopUpProvider  # the simulated carrier, or an adapter against its fake
    crash_after_apply: bool = False
    lookup_misses: int = 0
    lookup_errors: int = 0
    # Random faults for chaos runs: a crash after the carrier applied a top-up, a look-up
    # that times out.
    crash_rate: float = 0.0
    lookup_error_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    sent: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)

    async def catalog(self, operator: Operator) -> list[Product]:
        return await self.inner.catalog(operator)

    async def top_up(self, request: TopUpRequest) -> TopUpResult:
        self.sent.append(request.reference)
        result = await self.inner.top_up(request)
        if self.crash_after_apply or self._chance(self.crash_rate):
            self.crash_after_apply = False
            raise Crash("died waiting for the carrier's answer")
        return result

    async def lookup(self, reference: str) -> TopUpResult | None:
        self.looked_up.append(reference)
        if self.lookup_errors > 0 or self._chance(self.lookup_error_rate):
            self.lookup_errors = max(0, self.lookup_errors - 1)
            raise GatewayTimeout("look-up timed out")
        if self.lookup_misses > 0:
            self.lookup_misses -= 1
            return None
        return await self.inner.lookup(reference)


    def _chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate


def crash_at(point: str, *, times: int = 1) -> Checkpoint:
    """A checkpoint that kills the process the first ``times`` times ``point`` is reached."""
    left = [times]

    async def checkpoint(name: str, charge_id: int) -> None:
        if name == point and left[0] > 0:
            left[0] -= 1
            raise Crash(f"died at {point} (charge {charge_id})")

    return checkpoint


def random_crashes(rng: random.Random, rate: float) -> Checkpoint:
    """A checkpoint that kills the process at any point with probability ``rate``."""

    async def checkpoint(name: str, charge_id: int) -> None:
        if rng.random() < rate:
            raise Crash(f"died at {name} (charge {charge_id})")

    return checkpoint


@dataclass
class World:
    db: Database
    cipher: FieldCipher
    clock: ManualClock
    carrier: SimulatedCarrier
    provider: FaultyProvider
    lines: dict[int, int]  # user -> line id
    # Successful top-ups under a reference, where the provider keeps them.
    times_paid: Callable[[str], Awaitable[int]] | None = None

    async def paid(self, reference: str) -> int:
        if self.times_paid is not None:
            return await self.times_paid(reference)
        return await self.carrier.times_paid(reference)

    def service(self, *, checkpoint: Checkpoint | None = None,
                retry: RetryPolicy = RETRY, provider: object | None = None,
                approval_timeout: timedelta = timedelta(hours=1),
                catalog: CatalogService | None = None) -> ChargingService:
        """A fresh service, as after a restart (it keeps nothing in memory); its plans are
        the simulated carrier's unless ``catalog`` says otherwise."""
        return ChargingService(self.db, self.cipher, provider or self.provider,  # type: ignore[arg-type]
                               self.clock, approval_timeout=approval_timeout,
                               admin_chat_ids=ADMINS, retry=retry, checkpoint=checkpoint,
                               catalog=catalog)

    async def add_line(self, user_id: int, national: str) -> int:
        """Another line of ``user_id`` (a line has one open charge at a time, so charges
        open together need lines of their own); its id."""
        async with self.db.write() as conn:
            line = await LinesRepository(conn, self.cipher).add(
                owner_id=user_id, number=parse_cambodian_mobile(national),
                now=self.clock.now(), verified_at=self.clock.now())
        return line.id

    async def fund(self, user_id: int, cents: int) -> None:
        async with self.db.write() as conn:
            await PaymentsRepository(conn, self.cipher).record_payment(
                user_id=user_id, source="operator", external_id=f"operator:{next(_payments)}",
                amount=usd(cents), now=self.clock.now(), actor="cli")

    async def charge(self, charge_id: int) -> ChargeRecord:
        async with self.db.read() as conn:
            found = await ChargesRepository(conn, self.cipher).get(charge_id)
        assert found is not None
        return found

    async def all_charges(self) -> list[ChargeRecord]:
        async with self.db.read() as conn:
            return await ChargesRepository(conn, self.cipher).by_state(None, 10_000)

    async def available(self, user_id: int) -> Money:
        async with self.db.read() as conn:
            return await WalletRepository(conn).available(user_id, "USD")

    async def notifications(self, kind: str | None = None) -> list[dict[str, object]]:
        query = select(notifications).order_by(notifications.c.id)
        if kind is not None:
            query = query.where(notifications.c.kind == kind)
        async with self.db.read() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]

    async def count(self, table: object) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(
                select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def make_world(db: Database, cipher: FieldCipher, clock: ManualClock, *,
                     knobs: SimulatorKnobs | None = None, seed: int = 7,
                     provider: TopUpProvider | None = None,
                     times_paid: Callable[[str], Awaitable[int]] | None = None) -> World:
    """Alice and Bob with a line each; top-ups go to the simulated carrier, or to
    ``provider`` (an adapter against its fake, with its own ``times_paid``)."""
    carrier = SimulatedCarrier(db, cipher, clock, knobs or SimulatorKnobs(), random.Random(seed))
    lines = {}
    async with db.write() as conn:
        for user_id, number in ((ALICE, ALICE_NUMBER), (BOB, BOB_NUMBER)):
            await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
            line = await LinesRepository(conn, cipher).add(
                owner_id=user_id, number=number, now=clock.now(), verified_at=clock.now())
            lines[user_id] = line.id
    return World(db=db, cipher=cipher, clock=clock, carrier=carrier,
                 provider=FaultyProvider(provider or carrier), lines=lines,
                 times_paid=times_paid)


async def check_invariants(world: World, *, settled: bool = False) -> None:
    """The ledger balances for every user, no reference was paid twice, every hold matches
    its charge's state, and every receipt is queued exactly once. With ``settled``, no
    charge is left in flight either."""
    async with world.db.read() as conn:
        credited = {row.user_id: int(row.total) for row in await conn.execute(
            select(wallet_payments.c.user_id, func.sum(wallet_payments.c.amount_minor)
                   .label("total")).group_by(wallet_payments.c.user_id))}
        hold_rows = {row.charge_id: row for row in await conn.execute(select(holds))}
        wallet = WalletRepository(conn)
        for user_id in {*credited, ALICE, BOB}:
            available = (await wallet.available(user_id, "USD")).minor
            held = (await wallet.held(user_id, "USD")).minor
            captured = sum(row.amount_minor for row in hold_rows.values()
                           if row.user_id == user_id and row.status == "captured")
            assert available + held + captured == credited.get(user_id, 0), user_id
            assert available >= 0, user_id
        # A top-up's receipt, or a bought eSIM's QR code message (its receipt).
        receipts = Counter(row.dedupe_key for row in await conn.execute(
            select(notifications.c.dedupe_key).where(
                notifications.c.kind.in_(("receipt", "esim_ready")))))
    everything = await world.all_charges()
    for charge in everything:
        hold = hold_rows.get(charge.id)
        status = hold.status if hold is not None else None
        paid = await world.paid(charge.reference)
        assert paid <= 1, f"charge {charge.id} paid {paid} times"
        if charge.state is ChargeState.SUCCEEDED:
            assert status == "captured", charge
            assert paid == 1, charge
            assert receipts[_receipt_key(charge)] == 1, charge
        elif charge.state in (ChargeState.APPROVED, ChargeState.SUBMITTED):
            assert status == "open", charge
            assert not settled, f"charge {charge.id} left {charge.state.value}"
        elif charge.state is ChargeState.AWAITING_APPROVAL:
            assert status is None, charge
        else:
            assert status in (None, "released"), charge
            if charge.state is ChargeState.FAILED:
                assert paid == 0, charge
        if charge.state is not ChargeState.SUCCEEDED:
            assert receipts[_receipt_key(charge)] == 0, charge
    assert sum(receipts.values()) == sum(c.state is ChargeState.SUCCEEDED for c in everything)
    assert all(count == 1 for count in receipts.values())


def _receipt_key(charge: ChargeRecord) -> str:
    return f"esim-ready:{charge.id}" if charge.cause == "esim" else f"receipt:{charge.id}"


async def drive_to_completion(world: World, service: ChargingService, *,
                              rounds: int = 30) -> None:
    """Lets time pass and sweeps until no charge is in flight, checking as it goes."""
    for _ in range(rounds):
        in_flight = [c for c in await world.all_charges()
                     if c.state in (ChargeState.APPROVED, ChargeState.SUBMITTED)]
        if not in_flight:
            return
        world.clock.advance(RETRY.max_delay + RETRY.lease)
        await service.process_due()
        await check_invariants(world)
    raise AssertionError("charges still in flight after every sweep")
