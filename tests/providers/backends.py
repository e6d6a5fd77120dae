"""The top-up backends the contract tests run against, each with the controls a test needs:
the simulated carrier, and the Reloadly and DingConnect adapters against their local fakes
(real HTTP on 127.0.0.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.clock import ManualClock
from bot.gateways.dingconnect import DingConfig, DingConnectGateway
from bot.gateways.reloadly import ReloadlyConfig, ReloadlyGateway
from bot.gateways.simulated_carrier import SimulatedCarrier
from bot.gateways.topup import TopUpProvider
from storage import migrate
from storage.crypto import FieldCipher
from storage.db import Database
from tests.fakes import dingconnect as ding
from tests.fakes import reloadly
from tests.fakes.http import FakeHttpServer, Fault

NAMES = ("simulated", "reloadly", "dingconnect")
SMART_NUMBER = "+85510234567"


async def no_sleep(_seconds: float) -> None:
    """Reads are retried at once in tests (tenacity's back-off would sleep)."""


@dataclass
class Backend:
    name: str
    provider: TopUpProvider
    lose_next_answer: Callable[[], None]  # the next top-up is made, its answer lost
    operator_down: Callable[[bool], None]  # Smart declines top-ups while down
    times_paid: Callable[[str], Awaitable[int]]  # successful top-ups under a reference
    requests: Callable[[], int]  # HTTP requests so far (0 for the simulator)
    fake: FakeHttpServer | None = None  # the fake server, for tests that steer it further


@asynccontextmanager
async def simulated(folder: Path, cipher: FieldCipher,
                    clock: ManualClock) -> AsyncIterator[Backend]:
    """On SQLite only: the simulator's own tests cover it on PostgreSQL."""
    db = Database(f"sqlite+aiosqlite:///{folder / 'simulated.db'}")
    await migrate.upgrade(db)
    carrier = SimulatedCarrier(db, cipher, clock)
    normal = carrier.knobs

    def lose_next_answer() -> None:
        carrier.knobs = dataclasses.replace(normal, lost_response_rate=1.0)

    async def times_paid(reference: str) -> int:
        carrier.knobs = normal  # the fault lasts one top-up
        return await carrier.times_paid(reference)

    def operator_down(down: bool) -> None:
        carrier.knobs = dataclasses.replace(normal, decline_rate=1.0 if down else 0.0)

    try:
        yield Backend("simulated", carrier, lose_next_answer, operator_down, times_paid,
                      lambda: 0)
    finally:
        await db.dispose()


@asynccontextmanager
async def reloadly_fake(clock: ManualClock) -> AsyncIterator[Backend]:
    with reloadly.FakeReloadly(clock=clock.now) as fake:
        gateway = ReloadlyGateway(ReloadlyConfig(
            client_id=fake.client_id, client_secret=fake.client_secret, sandbox=True,
            auth_url=fake.base_url, api_url=fake.base_url), clock, sleep=no_sleep)

        async def times_paid(reference: str) -> int:
            return sum(1 for t in fake.transactions()
                       if t.custom_identifier == reference and t.status == "SUCCESSFUL")

        try:
            yield Backend(
                "reloadly", gateway,
                lambda: fake.faults.add(Fault.drop_after_processing(), path="/topups",
                                        method="POST"),
                lambda down: fake.set_operator_down(reloadly.SMART_ID, down),
                times_paid, lambda: len(fake.requests), fake)
        finally:
            await gateway.aclose()


@asynccontextmanager
async def dingconnect_fake(clock: ManualClock) -> AsyncIterator[Backend]:
    with ding.FakeDingConnect(clock=clock.now) as fake:
        gateway = DingConnectGateway(DingConfig(api_key=ding.DEFAULT_API_KEY,
                                                api_url=fake.base_url), clock, sleep=no_sleep)

        async def times_paid(reference: str) -> int:
            return sum(1 for t in fake.transfers()
                       if t.distributor_ref == reference and t.state == "Complete")

        try:
            yield Backend(
                "dingconnect", gateway,
                lambda: fake.faults.add(Fault.drop_after_processing(),
                                        path="/api/V1/SendTransfer"),
                lambda down: fake.set_provider_down(ding.SMART, down),
                times_paid, lambda: len(fake.requests), fake)
        finally:
            await gateway.aclose()
