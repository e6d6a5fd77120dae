"""The simulated eSIM provider's own behaviour: an eSIM installs itself some time after its
purchase, then spends data day by day; everything survives a restart (it lives in the
database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.domain.charges import DeclineReason
from bot.domain.money import Money
from bot.gateways.esim import EsimRefused, EsimStatus
from bot.gateways.simulated_esim import SimulatedEsimProvider
from storage import migrate
from storage.crypto import FieldCipher
from storage.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'esim.db'}")
    await migrate.upgrade(database)
    yield database
    await database.dispose()


async def test_an_esim_installs_itself_then_spends_its_data_day_by_day(
        db: Database, cipher: FieldCipher, clock: ManualClock) -> None:
    provider = SimulatedEsimProvider(db, cipher, clock, install_after=timedelta(minutes=30))
    order = await provider.order("kh-15d-3gb", "ref-sim-1")
    assert order.iccid is not None
    clock.advance(timedelta(minutes=29))
    assert (await provider.usage(order.iccid)).status is EsimStatus.NOT_INSTALLED

    clock.advance(timedelta(minutes=1))
    installed = await provider.usage(order.iccid)
    assert installed.status is EsimStatus.ACTIVE and installed.remaining_mb == 3072
    assert installed.expires_at == clock.now() + timedelta(days=15)

    readings: list[int] = []
    for _ in range(3):
        clock.advance(timedelta(days=1))
        remaining = (await provider.usage(order.iccid)).remaining_mb
        assert remaining is not None
        readings.append(remaining)
    assert readings == sorted(readings, reverse=True) and len(set(readings)) == 3

    restarted = SimulatedEsimProvider(db, cipher, clock)  # the same world after a restart
    assert (await restarted.usage(order.iccid)).remaining_mb == readings[-1]


async def test_an_unlimited_esim_takes_no_top_up(db: Database, cipher: FieldCipher,
                                                 clock: ManualClock) -> None:
    provider = SimulatedEsimProvider(db, cipher, clock)
    order = await provider.order("kh-10d-unlimited", "ref-unlimited")
    assert order.iccid is not None
    usage = await provider.usage(order.iccid)
    assert (usage.remaining_mb, usage.total_mb) == (None, None)
    assert await provider.topup_packages(order.iccid) == []
    with pytest.raises(EsimRefused) as refused:
        await provider.top_up(order.iccid, "kh-7d-1gb-topup", "ref-no")
    assert refused.value.reason is DeclineReason.PRODUCT_UNAVAILABLE


async def test_no_credit_no_order(db: Database, cipher: FieldCipher,
                                  clock: ManualClock) -> None:
    provider = SimulatedEsimProvider(db, cipher, clock, credit=Money(1000, "USD"))
    await provider.order("kh-15d-3gb", "ref-first")  # 4.80 of the 10.00
    with pytest.raises(EsimRefused) as refused:
        await provider.order("kh-30d-10gb", "ref-broke")  # 12.00
    assert refused.value.reason is DeclineReason.PROVIDER_BALANCE
    assert await provider.balance() == Money(520, "USD")
