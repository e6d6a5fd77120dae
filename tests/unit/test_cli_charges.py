"""`topup-bot charges [STATE]`: what an operator sees."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.cli_charges import UnknownState, list_charges
from bot.clock import ManualClock
from bot.services.charging import Requested
from storage.crypto import FieldCipher
from storage.db import Database
from tests.unit.charging_world import ALICE, make_world, usd


async def test_charges_are_listed_by_state(db: Database, cipher: FieldCipher,
                                           clock: ManualClock) -> None:
    world = await make_world(db, cipher, clock)
    await world.fund(ALICE, 2000)
    service = world.service()
    second_line = await world.add_line(ALICE, "012999001")  # one open charge per line
    for nonce, line_id in (("a", world.lines[ALICE]), ("b", second_line)):
        result = await service.request_manual(ALICE, line_id, usd(500), None, nonce)
        assert isinstance(result, Requested)
    await service.approve(ALICE, result.charge.id)
    components = SimpleNamespace(charging=service)

    everything = await list_charges(components, None)  # type: ignore[arg-type]
    waiting = await list_charges(components, "AWAITING_APPROVAL")  # type: ignore[arg-type]
    none = await list_charges(components, "submitted")  # type: ignore[arg-type]

    header, newest, oldest, summary = everything.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "USER"]
    assert newest.split()[1] == "succeeded" and oldest.split()[1] == "awaiting_approval"
    assert "5.00 USD" in newest and result.charge.reference in newest
    assert summary == "2 charges, newest first."
    assert waiting.splitlines()[-1] == "1 awaiting_approval charges, newest first."
    assert none == "No submitted charges."
    with pytest.raises(UnknownState, match="one of: awaiting_approval"):
        await list_charges(components, "lost")  # type: ignore[arg-type]
