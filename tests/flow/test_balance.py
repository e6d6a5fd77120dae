"""/balance through the real Application: typing a balance, pasting the carrier's SMS, and
everything that must store nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from storage.readings import ReadingsRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard, last_answer
from tests.flow.recording import callback_update, text_update
from tests.unit.test_balance_sms import SAMPLES

CELLCARD = "+85512345678"  # 012 345 678
SMART = "+85510345678"  # 010 345 678
METFONE = "+855973456789"  # 097 345 6789
PHONE_OF = {"smart": SMART, "cellcard": CELLCARD, "metfone": METFONE}
COULD_NOT_READ = "could not read"
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def readings(harness: BotHarness, line_id: int) -> list[LineReading]:
    async with harness.components.db.read() as conn:
        return await ReadingsRepository(conn).history(line_id, since=LONG_AGO)


async def card(harness: BotHarness, line_id: int, user_id: int = 555) -> str:
    await harness.send(callback_update(f"v1:ln:{line_id}:show", user_id=user_id))
    return str(harness.api.sent("editMessageText")[-1]["text"])


# --- typing the balance ----------------------------------------------------------------------


async def test_balance_with_one_line_asks_then_a_typed_amount_is_stored(
        harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))
    assert "What is the balance of 012 ••• 678?" in harness.api.texts()[-1]

    await harness.send(text_update("1.25"))

    assert "Saved" in harness.api.texts()[-1]
    assert "$1.25" in harness.api.texts()[-1]
    (reading,) = await readings(harness, line_id)
    assert reading.source is ReadingSource.USER
    assert reading.balance == Money(125, "USD")
    assert reading.data_mb is None and reading.validity_end is None
    assert reading.read_at == harness.components.clock.now()

    shown = await card(harness, line_id)
    assert "Balance: $1.25" in shown
    assert "reported by you" in shown
    assert "No balance known yet" not in shown


@pytest.mark.parametrize(("sample", "phone"), [
    ("smart-en-promo-first", SMART),
    ("cellcard-en-data-left", CELLCARD),
    ("metfone-en-basic-account", METFONE),
    ("metfone-km-data-first", METFONE),
])
async def test_a_pasted_carrier_sms_stores_balance_data_and_validity(
        harness: BotHarness, sample: str, phone: str) -> None:
    expected = SAMPLES[sample].expected
    assert PHONE_OF[SAMPLES[sample].operator] == phone
    line_id = await bind(harness, phone)
    await harness.send(text_update("/balance"))

    await harness.send(text_update(SAMPLES[sample].text))

    assert "Saved" in harness.api.texts()[-1]
    (reading,) = await readings(harness, line_id)
    assert reading.source is ReadingSource.USER
    assert reading.balance == expected.balance
    assert reading.data_mb == expected.data_mb
    assert reading.validity_end == expected.validity_end
    shown = await card(harness, line_id)
    assert "Data left:" in shown and "Valid until:" in shown


@pytest.mark.parametrize("typed", ["hello", "🙂💸🎉", "1.2.3", "-5", "$1.234",
                                   "balance " * 70])
async def test_unreadable_text_is_answered_and_stores_nothing(
        harness: BotHarness, typed: str) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))

    await harness.send(text_update(typed))

    assert COULD_NOT_READ in harness.api.texts()[-1]
    assert await readings(harness, line_id) == []
    # still waiting for the balance
    await harness.send(text_update("2"))
    assert "Saved" in harness.api.texts()[-1]
    assert [r.balance for r in await readings(harness, line_id)] == [Money(200, "USD")]


async def test_a_4000_character_message_is_refused_and_stores_nothing(
        harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))

    await harness.send(text_update("Balance: $1.25 " + "x" * 4000))

    # over the 1,000-character SMS limit: refused as too long, before any parsing
    assert "too long to be a balance SMS" in harness.api.texts()[-1]
    assert await readings(harness, line_id) == []
    await harness.send(text_update("1.25"))
    assert "Saved" in harness.api.texts()[-1]


# --- which line ------------------------------------------------------------------------------


async def test_with_two_lines_balance_asks_which_line(harness: BotHarness) -> None:
    first = await bind(harness, CELLCARD)
    second = await bind(harness, SMART)
    await harness.send(text_update("/balance"))

    question = harness.api.sent()[-1]
    assert "Which line?" in question["text"]
    assert keyboard(question) == [("012 ••• 678", f"v1:bl:{first}"),
                                  ("010 ••• 678", f"v1:bl:{second}")]

    await harness.send(callback_update(f"v1:bl:{second}"))
    assert "What is the balance of 010 ••• 678?" in harness.api.texts()[-1]
    await harness.send(text_update("$3"))

    assert [r.balance for r in await readings(harness, second)] == [Money(300, "USD")]
    assert await readings(harness, first) == []


async def test_the_cards_report_balance_button_starts_the_flow(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    shown = await card(harness, line_id)
    assert "No balance known yet" in shown
    (report,) = [data for text, data in keyboard(harness.api.sent("editMessageText")[-1])
                 if "Report balance" in text]
    assert report == f"v1:bl:{line_id}"

    await harness.send(callback_update(report))
    assert "What is the balance of 012 ••• 678?" in harness.api.texts()[-1]
    await harness.send(text_update("0.75"))

    assert [r.balance for r in await readings(harness, line_id)] == [Money(75, "USD")]


async def test_another_users_line_is_refused(harness: BotHarness) -> None:
    victim = await bind(harness, CELLCARD, user_id=111)
    await bind(harness, SMART, user_id=222)
    start = len(harness.api.calls)

    await harness.send(callback_update(f"v1:bl:{victim}", user_id=222))
    await harness.send(text_update("1.25", user_id=222))

    answer = last_answer(harness)
    assert "not yours" in answer["text"]
    assert answer.get("show_alert") is True
    assert await readings(harness, victim) == []
    sent_to_b = "\n".join(json.dumps(call.params, ensure_ascii=False)
                          for call in harness.api.calls[start:])
    for form in ("+85512345678", "012 345 678", "012 ••• 678", "12345678"):
        assert form not in sent_to_b


@pytest.mark.parametrize(("data", "answer"), [
    ("v1:bl:abc", "That line is not yours or no longer bound."),
    ("v1:bl:99999", "That line is not yours or no longer bound."),
    ("v1:bl", "That button is no longer active."),  # does not decode
    ("v1:bl:1:2", "That button is no longer active."),
])
async def test_garbage_line_ids_are_answered(harness: BotHarness, data: str,
                                             answer: str) -> None:
    line_id = await bind(harness, CELLCARD)

    await harness.send(callback_update(data))
    assert last_answer(harness)["text"] == answer
    await harness.send(text_update("1.25"))

    assert await readings(harness, line_id) == []
    assert "went wrong" not in " ".join(harness.api.texts())


async def test_cancel_mid_flow_stores_nothing(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))

    await harness.send(text_update("/cancel"))
    assert "Cancelled" in harness.api.texts()[-1]
    await harness.send(text_update("1.25"))  # plain text now

    assert "Saved" not in harness.api.texts()[-1]
    assert await readings(harness, line_id) == []


async def test_a_line_unbound_while_asking_takes_no_reading(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))
    await harness.send(callback_update(f"v1:ln:{line_id}:unbok"))  # from an older card

    await harness.send(text_update("1.25"))

    assert "no longer bound" in harness.api.texts()[-1]
    assert await readings(harness, line_id) == []


async def test_balance_without_lines_says_so(harness: BotHarness) -> None:
    await harness.send(text_update("/balance"))
    assert "no lines yet" in harness.api.texts()[-1]
    await harness.send(text_update("1.25"))
    assert "Saved" not in harness.api.texts()[-1]


async def test_report_balance_on_another_card_mid_flow_switches_the_line(
        harness: BotHarness) -> None:
    first = await bind(harness, CELLCARD)
    second = await bind(harness, SMART)
    await harness.send(callback_update(f"v1:bl:{first}"))
    await harness.send(callback_update(f"v1:bl:{second}"))  # changed their mind

    await harness.send(text_update("1.25"))

    assert await readings(harness, first) == []
    assert len(await readings(harness, second)) == 1
    assert "no longer active" not in last_answer(harness).get("text", "")


async def test_the_card_says_how_long_ago_the_balance_was_reported(
        harness: BotHarness, clock: ManualClock) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))
    await harness.send(text_update("1.25"))
    clock.advance(timedelta(hours=2))

    assert "(reported by you, 2 hours ago)" in await card(harness, line_id)


async def test_a_reading_just_saved_is_not_described_in_the_future(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/balance"))
    await harness.send(text_update("1.25"))

    saved = harness.api.texts()[-1]
    assert "Saved" in saved
    assert "(reported by you, in " not in saved
