"""A carrier's balance SMS forwarded to the bot outside any flow."""

from __future__ import annotations

import time
from typing import Any

from storage.readings import ReadingsRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind
from tests.flow.recording import callback_update, text_update

SMS = "Your main balance is $1.25, valid until 25/12/2026. Data: 1.5GB. Thank you for using Smart."


def forwarded(text: str, user_id: int = 555) -> dict[str, Any]:
    update = text_update(text, user_id=user_id)
    update["message"]["forward_origin"] = {
        "type": "hidden_user", "sender_user_name": "Smart", "date": int(time.time())}
    return update


async def readings(harness: BotHarness, line_id: int) -> int:
    async with harness.components.db.read() as conn:
        return len(await ReadingsRepository(conn).history(line_id, since=harness.components
                                                             .clock.now().replace(year=2000)))


async def test_a_forwarded_sms_is_read_for_the_only_line(harness: BotHarness) -> None:
    line_id = await bind(harness, "+855969999999")
    await harness.send(forwarded(SMS))

    assert "Saved" in harness.api.texts()[-1]
    assert "$1.25" in harness.api.texts()[-1]
    assert await readings(harness, line_id) == 1


async def test_with_two_lines_the_bot_asks_which_one_then_stores(harness: BotHarness) -> None:
    first = await bind(harness, "+855969999999")
    second = await bind(harness, "+85512345678")
    await harness.send(forwarded(SMS))
    assert "Which line" in harness.api.texts()[-1]

    await harness.send(callback_update(f"v1:bl:{second}"))

    assert "Saved" in harness.api.texts()[-1]
    assert await readings(harness, second) == 1
    assert await readings(harness, first) == 0


async def test_a_forwarded_message_that_is_not_a_balance_stores_nothing(
        harness: BotHarness) -> None:
    line_id = await bind(harness, "+855969999999")
    await harness.send(forwarded("Happy new year from your cousin 🎉"))

    assert "could not read" in harness.api.texts()[-1]
    assert await readings(harness, line_id) == 0
