"""The money issue's crash tests for buying an eSIM, over both eSIM providers (the
simulator, and Airalo's adapter against its fake): the process dies at every point a crash
matters (the purchase committed; marked submitted; half-way through settling, the order
made; settled), or the order's answer is lost, a new process recovers, and the purchase ends with
exactly one order at the provider, the ICCID on the line, one QR code message and a ledger
that balances. Also: an order the provider refuses gives the money back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState, DeclineReason
from bot.gateways.esim_charges import EsimCharges
from bot.services.catalog import CatalogService
from bot.services.charging import ChargingService, EsimOrdered
from bot.services.charging.policy import Checkpoint
from storage.crypto import FieldCipher
from storage.db import Database
from storage.lines import LinesRepository
from tests.providers.esim_backends import NAMES, EsimBackend, esim_backend
from tests.unit.charging_world import (
    ADMINS,
    ALICE,
    RETRY,
    Crash,
    World,
    check_invariants,
    crash_at,
    drive_to_completion,
    make_world,
    usd,
)

CRASH_POINTS = {
    "approved": ChargeState.APPROVED,  # the purchase committed, nothing sent yet
    "submitted": ChargeState.SUBMITTED,
    # The order made and its answer lost: looked up at once by its reference, not re-sent.
    "lost": ChargeState.SUCCEEDED,
    "settling": ChargeState.SUBMITTED,
    "settled": ChargeState.SUCCEEDED,
}


@pytest.fixture(params=NAMES)
async def backend(request: pytest.FixtureRequest, tmp_path: Path, cipher: FieldCipher,
                  clock: ManualClock) -> AsyncIterator[EsimBackend]:
    async with esim_backend(request.param, tmp_path, cipher, clock) as chosen:
        yield chosen


@pytest.fixture
async def world(db: Database, cipher: FieldCipher, clock: ManualClock,
                backend: EsimBackend) -> World:
    return await make_world(db, cipher, clock, times_paid=backend.orders_under)


def service(world: World, backend: EsimBackend,
            checkpoint: Checkpoint | None = None) -> ChargingService:
    """A fresh service, as after a restart (it keeps nothing in memory)."""
    catalog = CatalogService(None, world.clock, esims=backend.provider)
    return ChargingService(world.db, world.cipher, world.carrier, world.clock,
                           admin_chat_ids=ADMINS, retry=RETRY, checkpoint=checkpoint,
                           catalog=catalog, esims=EsimCharges(backend.provider, world.clock))


async def esim_line_iccid(world: World, line_id: int) -> str | None:
    async with world.db.read() as conn:
        line = await LinesRepository(conn, world.cipher).get(line_id)
    assert line is not None and line.is_esim
    return line.iccid


@pytest.mark.parametrize("point", list(CRASH_POINTS))
async def test_a_crash_then_a_restart_buys_the_esim_exactly_once(
        world: World, backend: EsimBackend, point: str) -> None:
    await world.fund(ALICE, 2000)
    dying = service(world, backend, None if point == "lost" else crash_at(point))
    if point == "approved":
        with pytest.raises(Crash):
            await dying.buy_esim(ALICE, backend.one_gb, "nonce-1")
        [charge] = await world.all_charges()
    else:
        bought = await dying.buy_esim(ALICE, backend.one_gb, "nonce-1")
        assert isinstance(bought, EsimOrdered) and bought.created
        if point == "lost":
            backend.lose_next_answer()
            await dying.submit(bought.charge.id)
        else:
            with pytest.raises(Crash):
                await dying.submit(bought.charge.id)
        charge = await world.charge(bought.charge.id)
    assert charge.state is CRASH_POINTS[point]

    restarted = service(world, backend)
    await restarted.reconcile_on_start()
    await drive_to_completion(world, restarted)

    done = await world.charge(charge.id)
    assert done.state is ChargeState.SUCCEEDED
    assert await backend.orders_under(done.reference) == 1
    assert await esim_line_iccid(world, done.line_id) is not None
    assert await world.available(ALICE) == usd(1500)
    await check_invariants(world, settled=True)


async def test_the_same_button_again_buys_nothing_more(world: World,
                                                       backend: EsimBackend) -> None:
    await world.fund(ALICE, 2000)
    first = await service(world, backend).buy_esim(ALICE, backend.one_gb, "nonce-2")
    again = await service(world, backend).buy_esim(ALICE, backend.one_gb, "nonce-2")
    assert isinstance(first, EsimOrdered) and isinstance(again, EsimOrdered)
    assert (again.created, again.charge.id) == (False, first.charge.id)
    assert len(await world.all_charges()) == 1
    assert await world.available(ALICE) == usd(1500)  # held once


async def test_a_refused_order_gives_the_money_back_and_unbinds_the_line(
        world: World, backend: EsimBackend) -> None:
    await world.fund(ALICE, 2000)
    buyer = service(world, backend)
    bought = await buyer.buy_esim(ALICE, backend.one_gb, "nonce-3")
    assert isinstance(bought, EsimOrdered)
    backend.sell_out(backend.one_gb)
    await buyer.submit(bought.charge.id)

    failed = await world.charge(bought.charge.id)
    assert (failed.state, failed.failure_reason) == (
        ChargeState.FAILED, DeclineReason.PRODUCT_UNAVAILABLE.value)
    assert await world.available(ALICE) == usd(2000)
    async with world.db.read() as conn:
        line = await LinesRepository(conn, world.cipher).get(failed.line_id)
    assert line is not None and not line.is_bound and line.iccid is None
    await check_invariants(world, settled=True)
