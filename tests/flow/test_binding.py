"""Binding a line through the real Application: every step and every bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import ManualClock
from storage.lines import LinesRepository
from tests.flow.conftest import BotHarness
from tests.flow.recording import callback_update, contact_update, text_update

CELLCARD = "+85512345678"


async def lines_of(harness: BotHarness, user_id: int) -> list[str]:
    async with harness.components.db.read() as conn:
        lines = await LinesRepository(conn, harness.components.cipher).for_owner(user_id)
    return [line.number.e164 for line in lines]


async def begin(harness: BotHarness, user_id: int = 555, language: str = "en") -> None:
    await harness.send(text_update("/start", user_id=user_id, language=language))
    await harness.send(text_update("/bind", user_id=user_id, language=language))


async def test_typed_number_then_right_code_binds_the_line(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012 345 678"))

    assert "SMS" in harness.api.texts()[-1]
    assert "012 ••• 678" in harness.api.texts()[-1]
    assert await lines_of(harness, 555) == []

    await harness.send(text_update(harness.sms.last_code(CELLCARD)))

    assert "Done" in harness.api.texts()[-1]
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_own_contact_binds_without_an_sms(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(contact_update("85512345678", contact_user_id=555))

    assert harness.sms.sent == []
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_someone_elses_contact_still_needs_the_code(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(contact_update("+85512345678", contact_user_id=999))

    assert len(harness.sms.sent) == 1
    assert await lines_of(harness, 555) == []


@pytest.mark.parametrize(("typed", "expected"), [
    ("+1 415 555 0100", "not a Cambodian number"),
    ("023 212 345", "landline"),
    ("hello there", "not a phone number"),
    ("🙂📱", "not a phone number"),
    ("0" * 4000, "far too long"),
    ("013 123 456", "Smart, Cellcard, Metfone"),
])
async def test_bad_numbers_are_explained_and_nothing_is_sent(
        harness: BotHarness, typed: str, expected: str) -> None:
    await begin(harness)
    await harness.send(text_update(typed))

    assert expected in harness.api.texts()[-1]
    assert harness.sms.sent == []
    # still waiting for a number: a good one now works
    await harness.send(text_update("012345678"))
    assert len(harness.sms.sent) == 1


async def test_wrong_codes_count_down_then_lock(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    right = harness.sms.last_code(CELLCARD)
    wrong = "000000" if right != "000000" else "111111"

    for tries_left in (4, 3, 2, 1):
        await harness.send(text_update(wrong))
        assert f"{tries_left} tries left" in harness.api.texts()[-1]
    await harness.send(text_update(wrong))
    assert "locked until" in harness.api.texts()[-1]

    await harness.send(text_update(right))  # the flow is over: plain text now
    assert await lines_of(harness, 555) == []


async def test_malformed_code_does_not_use_a_try(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    await harness.send(text_update("my code is twelve"))
    assert "6 digits" in harness.api.texts()[-1]
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_expired_code_is_refused_and_resend_gives_a_new_one(
        harness: BotHarness, clock: ManualClock) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    old = harness.sms.last_code(CELLCARD)
    clock.advance(timedelta(minutes=6))

    await harness.send(text_update(old))
    assert "expired" in harness.api.texts()[-1]

    await harness.send(callback_update("v1:bnd:resend"))
    assert len(harness.sms.sent) == 2
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_resend_too_soon_is_refused(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    await harness.send(callback_update("v1:bnd:resend"))

    assert len(harness.sms.sent) == 1
    assert "moments ago" in harness.api.texts()[-1]


async def test_cancel_in_the_middle_changes_nothing(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    code = harness.sms.last_code(CELLCARD)
    await harness.send(text_update("/cancel"))
    assert "Cancelled" in harness.api.texts()[-1]

    await harness.send(text_update(code))
    assert await lines_of(harness, 555) == []


async def test_another_command_in_the_middle_is_answered_and_the_flow_stays(
        harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    await harness.send(text_update("/help"))
    assert "/cancel" in harness.api.texts()[-1]

    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_a_line_moves_to_a_new_owner_only_after_the_code_and_the_old_owner_is_told(
        harness: BotHarness) -> None:
    await begin(harness, user_id=111)
    await harness.send(contact_update(CELLCARD, user_id=111, contact_user_id=111))
    assert await lines_of(harness, 111) == [CELLCARD]

    await begin(harness, user_id=222)
    await harness.send(contact_update(CELLCARD, user_id=222, contact_user_id=222))
    assert await lines_of(harness, 111) == [CELLCARD]  # not moved by a contact alone

    await harness.send(text_update(harness.sms.last_code(CELLCARD), user_id=222))

    assert await lines_of(harness, 222) == [CELLCARD]
    assert await lines_of(harness, 111) == []
    told = harness.api.texts(chat_id=111)[-1]
    assert "another Telegram account" in told


async def test_binding_your_own_line_again_says_so(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(contact_update(CELLCARD, contact_user_id=555))
    await harness.send(text_update("/bind"))
    await harness.send(text_update("012345678"))

    assert "already yours" in harness.api.texts()[-1]
    assert harness.sms.sent == []


async def test_a_stale_resend_button_is_answered_without_sending(harness: BotHarness) -> None:
    await harness.send(callback_update("v1:bnd:resend", user_id=777))

    (answer,) = harness.api.sent("answerCallbackQuery")
    assert "no longer active" in answer["text"]
    assert harness.sms.sent == []


@pytest.mark.parametrize("data", ["garbage", "v1:zz:1", "v2:bnd:resend", "v1:bnd", "x" * 64])
async def test_forged_buttons_are_answered_and_change_nothing(
        harness: BotHarness, data: str) -> None:
    await harness.send(callback_update(data, user_id=778))

    (answer,) = harness.api.sent("answerCallbackQuery")
    assert "no longer active" in answer["text"]
    assert harness.sms.sent == []


async def test_binding_in_khmer(harness: BotHarness) -> None:
    await begin(harness, language="km")
    await harness.send(text_update("012345678", language="km"))
    assert harness.api.texts()[-1]  # answered (translated once the km catalog has it)
    await harness.send(text_update(harness.sms.last_code(CELLCARD), language="km"))
    assert await lines_of(harness, 555) == [CELLCARD]


async def test_a_flow_left_idle_times_out_and_says_so(harness: BotHarness) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    assert harness.app.job_queue is not None
    (timeout_job,) = [job for job in harness.app.job_queue.jobs()
                      if "timeout" in (job.name or "").lower()]

    await timeout_job.run(harness.app)  # what the scheduler does when the time is up

    assert "took too long" in harness.api.texts()[-1]
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    assert await lines_of(harness, 555) == []
