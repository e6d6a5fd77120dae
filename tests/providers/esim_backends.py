"""The eSIM providers the contract tests run against, each with the controls a test needs:
the simulated eSIM provider, and the Airalo adapter against its local fake (real HTTP on
127.0.0.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bot.clock import ManualClock
from bot.gateways.airalo import AiraloConfig, AiraloGateway
from bot.gateways.esim import EsimProvider
from bot.gateways.simulated_esim import SimulatedEsimProvider
from storage import migrate
from storage.crypto import FieldCipher
from storage.db import Database
from tests.fakes import airalo
from tests.fakes.http import Fault

NAMES = ("simulated", "airalo")


@dataclass
class EsimBackend:
    name: str
    provider: EsimProvider
    one_gb: str  # a Cambodian 1 GB / 7 day eSIM package
    one_gb_topup: str  # its 1 GB top-up
    install: Callable[[str], Awaitable[None]]
    use_data: Callable[[str, int], Awaitable[None]]
    sell_out: Callable[[str], None]
    lose_next_answer: Callable[[], None]  # the next order is made, its answer lost
    orders_under: Callable[[str], Awaitable[int]]  # orders the provider holds for a reference


def clock_sleep(clock: ManualClock) -> Callable[[float], Awaitable[None]]:
    """A sleep that moves the test's clock (and the fake's) instead of waiting."""
    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))
    return sleep


@asynccontextmanager
async def simulated(folder: Path, cipher: FieldCipher,
                    clock: ManualClock) -> AsyncIterator[EsimBackend]:
    db = Database(f"sqlite+aiosqlite:///{folder / 'simulated-esim.db'}")
    await migrate.upgrade(db)
    provider = SimulatedEsimProvider(db, cipher, clock, install_after=timedelta(days=365))
    normal = provider.knobs

    def sell_out(package_id: str) -> None:
        provider.knobs = dataclasses.replace(
            provider.knobs, out_of_stock=provider.knobs.out_of_stock | {package_id})

    def lose_next_answer() -> None:
        provider.knobs = dataclasses.replace(normal, lost_response_rate=1.0)

    async def orders_under(reference: str) -> int:
        provider.knobs = normal  # a lost answer lasts one order
        return len([o for o in await provider.orders_between(
            clock.now() - timedelta(days=400), clock.now() + timedelta(seconds=1))
            if o.reference == reference])

    try:
        yield EsimBackend("simulated", provider, "kh-7d-1gb", "kh-7d-1gb-topup",
                          provider.install, provider.use_data, sell_out, lose_next_answer,
                          orders_under)
    finally:
        await db.dispose()


@asynccontextmanager
async def faked_airalo(clock: ManualClock) -> AsyncIterator[EsimBackend]:
    with airalo.FakeAiralo(clock=clock.now) as fake:
        gateway = AiraloGateway(AiraloConfig(client_id=fake.client_id,
                                             client_secret=fake.client_secret,
                                             api_url=fake.api_url),
                                clock, sleep=clock_sleep(clock))

        async def install(iccid: str) -> None:
            fake.install(iccid)

        async def use_data(iccid: str, megabytes: int) -> None:
            fake.drain(iccid, megabytes)
            clock.advance(timedelta(minutes=2))  # past the adapter's usage cache

        def lose_next_answer() -> None:
            fake.faults.add(Fault.drop_after_processing(), path="/v2/orders(/topups)?",
                            method="POST")

        async def orders_under(reference: str) -> int:
            return len(fake.orders_with_description(reference))

        try:
            yield EsimBackend("airalo", gateway, airalo.PACKAGE_1GB, airalo.TOPUP_1GB,
                              install, use_data, fake.sell_out, lose_next_answer,
                              orders_under)
        finally:
            await gateway.aclose()


@asynccontextmanager
async def esim_backend(name: str, folder: Path, cipher: FieldCipher,
                       clock: ManualClock) -> AsyncIterator[EsimBackend]:
    if name == "simulated":
        async with simulated(folder, cipher, clock) as backend:
            yield backend
    else:
        async with faked_airalo(clock) as backend:
            yield backend
