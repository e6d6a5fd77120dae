"""One contract for every top-up backend: the simulated carrier, and the Reloadly and
DingConnect adapters over real HTTP against their fakes. What the charging service relies
on - a top-up done once per reference, found again by that reference, a decline that is a
FAILED result, an unknown outcome that the look-up resolves - holds for each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.gateways.topup import (
    DuplicateReference,
    GatewayError,
    TopUpRequest,
    TopUpResult,
    TopUpStatus,
)
from storage.crypto import FieldCipher
from tests.providers.backends import (
    NAMES,
    SMART_NUMBER,
    Backend,
    dingconnect_fake,
    reloadly_fake,
    simulated,
)

FIVE_DOLLARS = Money(500, "USD")


@pytest.fixture(params=NAMES)
async def backend(request: pytest.FixtureRequest, cipher: FieldCipher, clock: ManualClock,
                  tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "simulated":
        opened = simulated(tmp_path, cipher, clock)
    elif request.param == "reloadly":
        opened = reloadly_fake(clock)
    else:
        opened = dingconnect_fake(clock)
    async with opened as chosen:
        yield chosen


def airtime(reference: str, amount: Money = FIVE_DOLLARS) -> TopUpRequest:
    return TopUpRequest(reference=reference, phone_e164=SMART_NUMBER, operator=Operator.SMART,
                        amount=amount)


async def test_every_operator_has_a_catalog_priced_in_dollars(backend: Backend) -> None:
    for operator in Operator:
        products = await backend.provider.catalog(operator)
        assert products, f"{backend.name} sells nothing for {operator}"
        assert all(p.operator is operator and p.price.currency == "USD"
                   and p.price.is_positive for p in products)
        assert len({p.id for p in products}) == len(products)


async def test_a_top_up_succeeds_once_and_is_found_by_its_reference(backend: Backend) -> None:
    result = await backend.provider.top_up(airtime("ref-contract-1"))

    assert result.status is TopUpStatus.SUCCEEDED
    assert result.reference == "ref-contract-1" and result.provider_tx_id
    assert result.amount == FIVE_DOLLARS
    found = await backend.provider.lookup("ref-contract-1")
    assert found is not None
    assert (found.status, found.provider_tx_id) == (TopUpStatus.SUCCEEDED, result.provider_tx_id)
    assert await backend.times_paid("ref-contract-1") == 1


async def test_a_plan_from_the_catalog_can_be_bought(backend: Backend) -> None:
    [plan, *_] = await backend.provider.catalog(Operator.SMART)

    result = await backend.provider.top_up(TopUpRequest(
        reference="ref-plan-1", phone_e164=SMART_NUMBER, operator=Operator.SMART,
        product_id=plan.id))

    assert result.status is TopUpStatus.SUCCEEDED
    assert result.amount == plan.price


async def test_an_unknown_reference_is_not_found(backend: Backend) -> None:
    assert await backend.provider.lookup("ref-never-sent") is None


async def test_a_decline_is_a_failed_result_and_takes_nothing(backend: Backend) -> None:
    backend.operator_down(True)
    result = await backend.provider.top_up(airtime("ref-declined"))
    backend.operator_down(False)

    assert result.status is TopUpStatus.FAILED and result.failure_reason
    assert await backend.times_paid("ref-declined") == 0


async def test_an_amount_the_operator_does_not_sell_is_declined(backend: Backend) -> None:
    result = await backend.provider.top_up(airtime("ref-ten-cents", Money(10, "USD")))

    assert result.status is TopUpStatus.FAILED and result.failure_reason
    assert await backend.times_paid("ref-ten-cents") == 0


async def test_a_lost_answer_is_an_error_and_the_look_up_finds_the_top_up(
        backend: Backend) -> None:
    backend.lose_next_answer()
    with pytest.raises(GatewayError):
        await backend.provider.top_up(airtime("ref-lost"))

    found = await backend.provider.lookup("ref-lost")

    assert found is not None and found.status is TopUpStatus.SUCCEEDED
    assert await backend.times_paid("ref-lost") == 1


async def test_a_reference_sent_again_is_never_paid_twice(backend: Backend) -> None:
    first = await backend.provider.top_up(airtime("ref-twice"))
    try:
        again: TopUpResult | None = await backend.provider.top_up(airtime("ref-twice"))
    except DuplicateReference:
        again = None  # refused, as Reloadly and Ding do: the look-up tells the outcome

    assert again is None or again.provider_tx_id == first.provider_tx_id
    assert await backend.times_paid("ref-twice") == 1
