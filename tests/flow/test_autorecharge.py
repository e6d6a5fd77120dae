"""Setting up auto-recharge through the real Application, with the SMS code to the line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.domain.rules import RuleStatus, Trigger
from handlers.autorecharge import DRAFT
from storage.rules import RulesRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind
from tests.flow.recording import callback_update, text_update

CELLCARD = "+85512345678"


def shown(harness: BotHarness, user_id: int = 555) -> str:
    """The text the bot last sent or edited into the chat: what the user reads last (the
    wizard edits its one message in place)."""
    for call in reversed(harness.api.calls):
        if (call.method in ("sendMessage", "editMessageText")
                and int(call.params["chat_id"]) == user_id):
            return str(call.params["text"])
    raise AssertionError("the bot showed nothing")


def wizard_id(harness: BotHarness, user_id: int = 555) -> int:
    """The id of the wizard message, as the conversation's draft keeps it."""
    message_id = harness.app.user_data[user_id][DRAFT]["message_id"]
    assert isinstance(message_id, int)
    return message_id


async def press(harness: BotHarness, data: str, user_id: int = 555) -> None:
    """Taps a button of the wizard message."""
    await harness.send(callback_update(data, user_id=user_id,
                                       message_id=wizard_id(harness, user_id)))


async def rules_of(harness: BotHarness, user_id: int = 555) -> list[object]:
    async with harness.components.db.read() as conn:
        return list(await RulesRepository(conn).for_owner(user_id))


async def monthly_rule_until_code(harness: BotHarness, *, day: str = "31",
                                  amount: str = "5", cap: str = "20") -> None:
    await harness.send(text_update("/autorecharge"))
    assert "No auto-recharge rules yet" in harness.api.texts()[-1]
    await harness.send(callback_update("v1:arn:new"))
    await press(harness, "v1:arb:amount")
    await harness.send(text_update(amount))
    await press(harness, "v1:arw:monthly")
    await harness.send(text_update(day))
    await harness.send(text_update(cap))
    await press(harness, "v1:arp:ask")
    summary = shown(harness)
    assert "$5.00" in summary
    assert "$20.00" in summary
    await press(harness, "v1:arc:ok")
    assert "code" in shown(harness)


async def test_a_monthly_rule_is_enabled_by_the_code_sent_to_the_line(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]

    await harness.send(text_update(harness.sms.last_code(CELLCARD)))

    assert "Auto-recharge is on" in shown(harness)
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.ACTIVE  # type: ignore[attr-defined]
    assert rule.trigger is Trigger.CALENDAR  # type: ignore[attr-defined]
    # day 31 in November (30 days) clamps to the 30th, 09:00 in Phnom Penh
    assert rule.next_run_at == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # type: ignore[attr-defined]

    await harness.send(text_update("/autorecharge"))
    assert any("Next run" in text for text in harness.api.texts()[-2:])


async def test_a_wrong_code_leaves_the_rule_off(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    right = harness.sms.last_code(CELLCARD)
    await harness.send(text_update("000000" if right != "000000" else "111111"))

    assert "tries left" in shown(harness)
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]


@pytest.mark.parametrize(("step_input", "expected"), [
    ("abc", "amount like 5"),
    ("-5", "amount like 5"),
    ("5 EUR", "amount like 5"),
    ("x" * 4000, "amount like 5"),
])
async def test_bad_amounts_are_refused_and_the_wizard_stays(
        harness: BotHarness, step_input: str, expected: str) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    await press(harness, "v1:arb:amount")
    await harness.send(text_update(step_input))

    assert expected in harness.api.texts()[-1]
    await harness.send(text_update("5"))
    assert "When?" in shown(harness)


async def test_a_day_out_of_range_and_a_cap_below_the_amount_are_refused(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    await press(harness, "v1:arb:amount")
    await harness.send(text_update("10"))
    await press(harness, "v1:arw:monthly")
    await harness.send(text_update("32"))
    assert "from 1 to 31" in shown(harness)
    await harness.send(text_update("15"))
    await harness.send(text_update("5"))  # cap below one top-up
    await press(harness, "v1:arp:auto")
    await press(harness, "v1:arc:ok")

    assert "monthly cap" in shown(harness)
    assert await rules_of(harness) == []
    assert harness.sms.sent == []
    # The summary stays, to be put right with Back: a higher cap, and it goes through.
    await press(harness, "v1:arx:back:confirm")
    await press(harness, "v1:arx:back:approval")
    assert "At most how much in one month?" in shown(harness)
    await harness.send(text_update("50"))
    await press(harness, "v1:arp:auto")
    await press(harness, "v1:arc:ok")
    assert "I sent a 6-digit code" in shown(harness)
    assert len(await rules_of(harness)) == 1


async def test_keep_alive_rule_buys_the_cheapest_extension(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    await press(harness, "v1:arb:cheap")
    await press(harness, "v1:arw:alive")
    await harness.send(text_update("3"))
    await harness.send(text_update("10"))
    await press(harness, "v1:arp:auto")
    assert "cheapest" in shown(harness)
    await press(harness, "v1:arc:ok")
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))

    (rule,) = await rules_of(harness)
    assert rule.trigger is Trigger.KEEP_ALIVE  # type: ignore[attr-defined]
    assert rule.status is RuleStatus.ACTIVE  # type: ignore[attr-defined]


async def test_pause_resume_and_delete_from_the_list(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    (rule,) = await rules_of(harness)
    rule_id = rule.id  # type: ignore[attr-defined]

    await harness.send(callback_update(f"v1:ru:{rule_id}:pause"))
    assert (await rules_of(harness))[0].status is RuleStatus.PAUSED  # type: ignore[attr-defined]
    await harness.send(callback_update(f"v1:ru:{rule_id}:resume"))
    assert (await rules_of(harness))[0].status is RuleStatus.ACTIVE  # type: ignore[attr-defined]
    await harness.send(callback_update(f"v1:ru:{rule_id}:delok"))
    assert await rules_of(harness) == []


async def test_someone_elses_rule_cannot_be_touched(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    (rule,) = await rules_of(harness)
    rule_id = rule.id  # type: ignore[attr-defined]

    for action in ("pause", "delok", "edit"):
        await harness.send(callback_update(f"v1:ru:{rule_id}:{action}", user_id=999))
    assert (await rules_of(harness))[0].status is RuleStatus.ACTIVE  # type: ignore[attr-defined]
    answers = [a["text"] for a in harness.api.sent("answerCallbackQuery")
               if "not yours" in str(a.get("text"))]
    assert len(answers) == 3
    assert not any("012" in text for text in harness.api.texts(chat_id=999))


async def test_a_rule_left_waiting_for_its_code_is_finished_from_the_list(
        harness: BotHarness, clock: ManualClock) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    await harness.send(text_update("/cancel"))
    assert "stays off until you type its SMS code" in shown(harness)
    (rule,) = await rules_of(harness)
    rule_id = rule.id  # type: ignore[attr-defined]
    assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]

    await harness.send(text_update("/autorecharge"))
    listed = [m for m in harness.api.sent("sendMessage") if "Waiting for the SMS code" in
              str(m.get("text"))][-1]
    assert f"v1:ru:{rule_id}:code" in str(listed["reply_markup"])
    clock.advance(timedelta(minutes=2))  # past the resend cooldown: a new code is sent
    sent_before = len(harness.sms.sent)
    await harness.send(callback_update(f"v1:ru:{rule_id}:code"))
    assert len(harness.sms.sent) == sent_before + 1
    assert "I sent a 6-digit code" in shown(harness)

    await harness.send(text_update(harness.sms.last_code(CELLCARD)))
    assert "Auto-recharge is on" in shown(harness)
    assert (await rules_of(harness))[0].status is RuleStatus.ACTIVE  # type: ignore[attr-defined]


async def test_cancel_before_a_rule_was_proposed_changes_nothing(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    await harness.send(text_update("/cancel"))
    assert shown(harness) == "Cancelled. Nothing was changed."
    assert await rules_of(harness) == []


async def lock_the_line_by_binding_attempts(harness: BotHarness, user_id: int) -> None:
    """Someone else tries to take CELLCARD over and types five wrong codes."""
    await harness.send(text_update("/bind", user_id=user_id))
    await harness.send(text_update("012345678", user_id=user_id))
    right = harness.sms.last_code(CELLCARD)
    for _ in range(5):
        await harness.send(text_update("000000" if right != "000000" else "111111",
                                       user_id=user_id))
    assert "locked until" in harness.api.texts(chat_id=user_id)[-1]


async def test_a_line_locked_by_someone_elses_wrong_codes_gets_no_rule_code_either(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await lock_the_line_by_binding_attempts(harness, user_id=999)
    sent = len(harness.sms.sent)

    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    await press(harness, "v1:arb:amount")
    await harness.send(text_update("5"))
    await press(harness, "v1:arw:monthly")
    await harness.send(text_update("31"))
    await harness.send(text_update("20"))
    await press(harness, "v1:arp:ask")
    await press(harness, "v1:arc:ok")

    assert len(harness.sms.sent) == sent  # the lockout is the number's, whatever the code is for
    assert "No more codes can be sent to this line for now" in shown(harness)
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]


async def test_a_rule_code_typed_after_the_lockout_is_answered_with_it(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await monthly_rule_until_code(harness)
    right = harness.sms.last_code(CELLCARD)
    for _ in range(5):
        await harness.send(text_update("000000" if right != "000000" else "111111"))
    assert "locked until" in shown(harness)

    await harness.send(text_update(right))

    assert "that line is locked until 25 Nov 2026, 09:15 (in 15 minutes)" in (
        harness.api.texts()[-1])
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]
