"""Binding a line through the real Application: every step and every bad input."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bot.clock import ManualClock
from handlers.binding import DRAFT
from handlers.common import user_ui
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


def a_wrong_code(right: str) -> str:
    return "000000" if right != "000000" else "111111"


async def lock_out(harness: BotHarness, user_id: int = 555, language: str = "en") -> datetime:
    """``user_id`` asks for a code to CELLCARD and types five wrong ones; when the
    lockout ends."""
    await begin(harness, user_id, language)
    await harness.send(text_update("012345678", user_id=user_id, language=language))
    wrong = a_wrong_code(harness.sms.last_code(CELLCARD))
    for _ in range(5):
        await harness.send(text_update(wrong, user_id=user_id, language=language))
    return harness.components.clock.now() + harness.components.otp.policy.lockout


async def lockout_text(harness: BotHarness, user_id: int, language: str,
                       locked_until: datetime) -> str:
    """The answer to a code typed while ``user_id`` is locked out, in their language and
    zone."""
    ui = await user_ui(harness.components.users, harness.components.i18n, user_id, language)
    return ui._("Too many wrong codes: that line is locked until {time} ({left}). No code "
                "works before then; ask for a new one after that.").format(
        time=ui.when(locked_until), left=ui.age(locked_until))


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
        assert (f"{tries_left} tries left" if tries_left != 1 else "1 try left") in \
            harness.api.texts()[-1]
    await harness.send(text_update(wrong))
    assert "locked until" in harness.api.texts()[-1]
    assert DRAFT not in harness.app.user_data.get(555, {})
    locked_until = harness.components.clock.now() + timedelta(minutes=15)

    await harness.send(text_update(right))  # the flow is over, but the lock is not
    assert harness.api.texts()[-1] == await lockout_text(harness, 555, "en", locked_until)
    assert "(in 15 minutes)" in harness.api.texts()[-1]
    assert await lines_of(harness, 555) == []


async def test_the_sixth_code_is_answered_with_the_lockout_in_the_users_language_and_zone(
        harness: BotHarness, clock: ManualClock) -> None:
    locked_until = await lock_out(harness, language="zh-hans")
    assert await harness.components.users.set_timezone(555, "America/New_York") is not None
    clock.advance(timedelta(minutes=4))

    await harness.send(text_update("123 456", language="zh-hans"))

    reply = harness.api.texts()[-1]
    assert reply == await lockout_text(harness, 555, "zh-hans", locked_until)
    assert "验证码错误次数过多" in reply
    # 15 minutes after 02:00 UTC, less the 4 just waited: 21:15 the day before in New York
    assert "21:15" in reply and "11分钟后" in reply
    assert await lines_of(harness, 555) == []


async def test_a_code_after_the_lockout_ended_is_answered_with_where_codes_go(
        harness: BotHarness, clock: ManualClock) -> None:
    clock.set(await lock_out(harness))

    await harness.send(text_update("123456"))

    assert harness.api.texts()[-1].startswith("That looks like a code from an SMS. A code is "
                                              "typed while adding a line (/bind)")


async def test_a_number_or_a_code_outside_any_flow_is_answered_with_what_to_do(
        harness: BotHarness) -> None:
    await harness.send(text_update("012 345 678"))
    assert harness.api.texts()[-1] == ("That looks like a phone number. To add this line, "
                                       "send /bind; to see your lines, /lines.")
    await harness.send(text_update("+855 12 345 678"))
    assert "To add this line, send /bind" in harness.api.texts()[-1]
    await harness.send(text_update("654321"))
    assert "That looks like a code from an SMS" in harness.api.texts()[-1]
    for other in ("+1 202 555 0100", "12345", "hello", "9" * 4000):
        await harness.send(text_update(other))
        assert harness.api.texts()[-1] == ("I did not understand that. /help lists what I "
                                           "can do.")
    assert await lines_of(harness, 555) == []


async def test_text_that_is_not_a_code_after_a_lockout_is_not_understood(
        harness: BotHarness) -> None:
    await lock_out(harness)

    await harness.send(text_update("hello 123456"))

    assert harness.api.texts()[-1] == "I did not understand that. /help lists what I can do."


async def test_an_edited_message_after_a_lockout_is_not_taken_as_a_code(
        harness: BotHarness) -> None:
    await lock_out(harness)
    before = len(harness.api.texts())
    edited = text_update("123456")
    edited["edited_message"] = {**edited.pop("message"), "edit_date": 1}

    await harness.send(edited)

    # Only the chat gate's note, as for any edited text: no lockout notice, no code check.
    assert harness.api.texts()[before:] == [
        "I only read new messages, not edits. Please send it again as a new message."]


async def test_a_number_locked_out_for_one_account_gets_no_sms_for_another(
        harness: BotHarness) -> None:
    await lock_out(harness, user_id=111)
    await begin(harness, user_id=111)
    await harness.send(text_update("012345678", user_id=111))
    told_the_locker = harness.api.texts(chat_id=111)[-1]
    assert "Too many wrong codes for this line" in told_the_locker
    sent = len(harness.sms.sent)

    await begin(harness, user_id=222)
    await harness.send(text_update("012 345 678", user_id=222))

    assert len(harness.sms.sent) == sent == 1
    assert harness.api.texts(chat_id=222)[-1] == told_the_locker  # nothing says who locked it
    for user_id in (111, 222):
        assert DRAFT not in harness.app.user_data.get(user_id, {})
    await harness.send(text_update("/lines", user_id=222))  # the binding flow is over
    assert "middle of something" not in harness.api.texts(chat_id=222)[-1]


async def test_a_new_code_asked_for_after_another_account_locked_the_number_is_refused(
        harness: BotHarness, clock: ManualClock) -> None:
    await begin(harness, user_id=222)
    await harness.send(text_update("012345678", user_id=222))
    assert harness.app.user_data[222][DRAFT] == CELLCARD
    await lock_out(harness, user_id=111)
    sent = len(harness.sms.sent)
    clock.advance(timedelta(seconds=61))  # 222's own cooldown is over; the lock is not

    await harness.send(callback_update("v1:bnd:resend", user_id=222))

    assert len(harness.sms.sent) == sent
    assert "Too many wrong codes for this line" in harness.api.texts(chat_id=222)[-1]
    assert DRAFT not in harness.app.user_data.get(222, {})


async def test_the_hourly_cap_counts_every_account_and_forgets_the_refused_draft(
        harness: BotHarness) -> None:
    for user_id in range(301, 306):
        await begin(harness, user_id=user_id)
        await harness.send(text_update("012345678", user_id=user_id))
    assert len(harness.sms.sent) == 5

    await begin(harness, user_id=306)
    await harness.send(text_update("012345678", user_id=306))

    assert len(harness.sms.sent) == 5
    assert "Too many codes were sent to this number this hour" in (
        harness.api.texts(chat_id=306)[-1])
    assert DRAFT not in harness.app.user_data.get(306, {})
    assert harness.app.user_data[305][DRAFT] == CELLCARD  # a code on its way keeps its draft


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


async def test_resend_too_soon_is_refused_and_says_how_long_to_wait(
        harness: BotHarness, clock: ManualClock) -> None:
    await begin(harness)
    await harness.send(text_update("012345678"))
    clock.advance(timedelta(seconds=20))
    await harness.send(callback_update("v1:bnd:resend"))

    assert len(harness.sms.sent) == 1
    # Under a minute to wait reads as a wait, not as a date.
    assert harness.api.texts()[-1] == ("A code was sent moments ago. Type it, or ask for a "
                                       "new one in 40 seconds.")


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
