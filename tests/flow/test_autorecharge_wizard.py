"""The auto-recharge wizard is one message: each step edits it, every step has Back (but the
first) and Cancel, no finished step keeps a live keyboard, and stale buttons and refused
input change nothing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bot.domain.rules import RuleStatus
from handlers.autorecharge import DRAFT
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard
from tests.flow.recording import RecordingRequest, callback_update, text_update
from tests.flow.test_autorecharge import CELLCARD, press, rules_of, shown, wizard_id

SECOND = "+85592345678"
# The wizard's steps in order, with what each asks (a part of its text).
STEPS = ["line", "buy", "amount", "when", "value", "cap", "approval", "confirm", "code"]
ASKS = {"line": "Which line should I top up automatically?",
        "buy": "What should I buy each time?", "amount": "How much each time?",
        "when": "When?", "value": "On which day of the month (1-31)?",
        "cap": "At most how much in one month?", "approval": "Should I ask before each charge?",
        "confirm": "To turn it on I will send a code by SMS to the line.",
        "code": "Type it"}  # "I sent a 6-digit code ... Type it here", or "... Type it, or"
CANCELLED = "Cancelled. Nothing was changed."
NO_LONGER_ACTIVE = "That button is no longer active."


@pytest.fixture(autouse=True)
def message_ids(harness: BotHarness) -> None:
    """Each sendMessage's recorded params also hold the id the message got (``_id``)."""
    api: RecordingRequest = harness.api
    answer = api._result

    def result(method: str, params: dict[str, Any]) -> Any:
        sent = answer(method, params)
        if method == "sendMessage":
            params["_id"] = sent["message_id"]
        return sent

    api._result = result  # type: ignore[method-assign]


def live_keyboards(harness: BotHarness, since: int, user_id: int = 555) -> dict[int, list[str]]:
    """The chat's messages that have inline buttons now (as the sends and edits from call
    ``since`` on left them; binding's and /start's come before): their buttons, by id."""
    buttons: dict[int, list[str]] = {}
    for call in harness.api.calls[since:]:
        params = call.params
        if int(params.get("chat_id", 0)) != user_id:
            continue
        if call.method == "sendMessage":
            buttons[int(params["_id"])] = [text for text, _ in keyboard(params)]
        elif call.method in ("editMessageText", "editMessageReplyMarkup"):
            buttons[int(params["message_id"])] = [text for text, _ in keyboard(params)]
    return {message_id: texts for message_id, texts in buttons.items() if texts}


def last_shown(harness: BotHarness, user_id: int = 555) -> dict[str, Any]:
    """The params of the last message sent or edited into the chat."""
    for call in reversed(harness.api.calls):
        if (call.method in ("sendMessage", "editMessageText")
                and int(call.params["chat_id"]) == user_id):
            return call.params
    raise AssertionError("the bot showed nothing")


def buttons(harness: BotHarness) -> list[str]:
    return [text for text, _ in keyboard(last_shown(harness))]


def sent_count(harness: BotHarness, user_id: int = 555) -> int:
    return len([p for p in harness.api.sent() if int(p["chat_id"]) == user_id])


def answers(harness: BotHarness) -> list[str]:
    return [str(a.get("text", "")) for a in harness.api.sent("answerCallbackQuery")]


async def act(harness: BotHarness, step: str, line_id: int = 0) -> None:
    """Answers ``step`` as the happy path does: the first line, $5.00 of airtime on day 15
    of every month, at most $20.00, ask me first, confirm, the SMS code."""
    actions = {"line": f"v1:arl:{line_id}", "buy": "v1:arb:amount", "amount": "5",
               "when": "v1:arw:monthly", "value": "15", "cap": "20",
               "approval": "v1:arp:ask", "confirm": "v1:arc:ok"}
    action = actions.get(step) or harness.sms.last_code(CELLCARD)
    if action.startswith("v1:"):
        await press(harness, action)
    else:
        await harness.send(text_update(action))


async def run(harness: BotHarness, actions: list[str]) -> None:
    """Presses (``v1:...``) or types each; ``CODE`` types the last SMS code."""
    for action in actions:
        if action.startswith("v1:"):
            await press(harness, action)
        else:
            await harness.send(text_update(
                harness.sms.last_code(CELLCARD) if action == "CODE" else action))


async def two_lines(harness: BotHarness) -> int:
    """Binds CELLCARD and SECOND (so the wizard asks which line); CELLCARD's id."""
    first = await bind(harness, CELLCARD)
    await bind(harness, SECOND)
    return first


@pytest.mark.parametrize(("start", "new_messages"), [("/newrule", 1), ("➕ New rule", 0)])
async def test_a_whole_run_is_one_message_edited_step_by_step(
        harness: BotHarness, start: str, new_messages: int) -> None:
    """/newrule sends the wizard message: 1 new message. From /autorecharge's list, ➕ New
    rule turns the list's message into it: none. Every step after that, typed answers and
    the end included, edits it."""
    await bind(harness, CELLCARD)
    since = len(harness.api.calls)
    if start == "/newrule":
        before = sent_count(harness)
        await harness.send(text_update("/newrule"))
    else:
        await harness.send(text_update("/autorecharge"))
        listed = harness.api.sent()[-1]
        before = sent_count(harness)
        await harness.send(callback_update("v1:arn:new", message_id=listed["_id"],
                                           text=listed["text"]))
    wizard = wizard_id(harness)
    for index, step in enumerate(STEPS[1:]):
        assert ASKS[step] in shown(harness)
        # Only the step shown has buttons: its own, Back (not on the first) and Cancel.
        expected = ["✖️ Cancel"] if index == 0 else ["« Back", "✖️ Cancel"]
        assert live_keyboards(harness, since).keys() == {wizard}
        assert live_keyboards(harness, since)[wizard][-len(expected):] == expected
        await act(harness, step)

    assert sent_count(harness) - before == new_messages
    end = last_shown(harness)
    assert end["text"].endswith("Auto-recharge is on. Next run: 15 Dec 2026, 09:00")
    assert "every month on day 15" in end["text"]
    assert int(end["message_id"]) == wizard and "reply_markup" not in end
    assert {int(p["message_id"]) for p in harness.api.sent("editMessageText")} == {wizard}
    assert live_keyboards(harness, since) == {}
    (rule,) = await rules_of(harness)
    assert rule.status is RuleStatus.ACTIVE  # type: ignore[attr-defined]


async def test_back_on_every_step_shows_the_step_before_with_its_choice(
        harness: BotHarness) -> None:
    line_id = await two_lines(harness)
    since = len(harness.api.calls)
    label = (await harness.components.lines.own(555, line_id)).label  # type: ignore[union-attr]
    # How each step shows, when Back returns to it, what was chosen there.
    choices = {"line": f"✓ {label}", "buy": "✓ A fixed amount of airtime",
               "amount": "Buy: $5.00 of airtime", "when": "✓ Every month",
               "value": "Top up: every month on day 15 (the last day in shorter months)",
               "cap": "At most $20.00 a month", "approval": "✓ Ask me every time",
               "confirm": "At most $20.00 a month; I ask you before every charge."}
    await harness.send(text_update("/newrule"))
    assert ASKS["line"] in shown(harness)
    assert "« Back" not in buttons(harness) and "✖️ Cancel" in buttons(harness)

    for step, after in itertools.pairwise(STEPS):
        await act(harness, step, line_id)
        assert ASKS[after] in shown(harness)
        assert buttons(harness)[-2:] == ["« Back", "✖️ Cancel"]

        await press(harness, f"v1:arx:back:{after}")
        assert ASKS[step] in shown(harness)
        assert choices[step] in shown(harness) + "\n" + "\n".join(buttons(harness))
        await act(harness, step, line_id)  # and on again
        assert ASKS[after] in shown(harness)

    await act(harness, "code")
    assert "Auto-recharge is on." in shown(harness)
    (rule,) = await rules_of(harness)  # confirming again changed the rule waiting, no other
    assert rule.status is RuleStatus.ACTIVE  # type: ignore[attr-defined]
    assert rule.line_id == line_id  # type: ignore[attr-defined]
    assert live_keyboards(harness, since) == {}


@pytest.mark.parametrize("step", STEPS)
async def test_cancel_on_every_step_ends_the_wizard_in_its_message(
        harness: BotHarness, step: str) -> None:
    line_id = await two_lines(harness)
    since = len(harness.api.calls)
    await harness.send(text_update("/newrule"))
    for done in STEPS[:STEPS.index(step)]:
        await act(harness, done, line_id)
    assert ASKS[step] in shown(harness)
    wizard = wizard_id(harness)

    await press(harness, f"v1:arx:cancel:{step}")

    end = last_shown(harness)
    assert int(end["message_id"]) == wizard and "reply_markup" not in end
    assert live_keyboards(harness, since) == {}
    assert not harness.app.user_data[555].get(DRAFT)
    if step == "code":  # proposed already: it waits in /autorecharge for its code
        assert end["text"].startswith("Stopped here. The rule stays off until you type")
        (rule,) = await rules_of(harness)
        assert rule.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]
    else:
        assert end["text"] == CANCELLED
        assert await rules_of(harness) == []
    # The conversation is over: what the wizard would have taken goes elsewhere.
    edits = len(harness.api.sent("editMessageText"))
    await harness.send(text_update("15"))
    await harness.send(callback_update(f"v1:arx:back:{step}", message_id=wizard))
    assert len(harness.api.sent("editMessageText")) == edits
    assert answers(harness)[-1] == NO_LONGER_ACTIVE


async def test_a_typed_cancel_says_so_in_the_wizard_message(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    since = len(harness.api.calls)
    await harness.send(text_update("/newrule"))
    await run(harness, ["v1:arb:amount", "5", "v1:arw:weekly"])
    sent = sent_count(harness)

    await harness.send(text_update("/cancel"))

    assert sent_count(harness) == sent
    assert last_shown(harness)["text"] == CANCELLED
    assert live_keyboards(harness, since) == {}


async def test_stale_buttons_are_no_longer_active_and_change_nothing(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/newrule"))
    await run(harness, ["v1:arb:amount", "5"])
    assert ASKS["when"] in shown(harness)
    wizard = wizard_id(harness)
    draft = dict(harness.app.user_data[555][DRAFT])
    calls = len(harness.api.calls)

    # Earlier steps' buttons, Back and Cancel of an earlier step, this step's buttons on
    # another (an older wizard's) message, and forged data.
    for data, message_id in [("v1:arb:cheap", wizard), ("v1:arx:back:amount", wizard),
                             ("v1:arx:cancel:amount", wizard), ("v1:arw:weekly", wizard - 1),
                             ("v1:arx:back:when", 4242), ("v1:arw:sometimes", wizard),
                             ("v1:ard:3", wizard), ("v1:arw", wizard)]:
        await harness.send(callback_update(data, message_id=message_id))
        assert answers(harness)[-1] == NO_LONGER_ACTIVE, data
    # Another flow's button while the wizard is open: said so, and nothing done either.
    await harness.send(callback_update("v1:arn:new", message_id=wizard - 1))
    assert answers(harness)[-1].startswith("You are in the middle of something.")

    assert [call.method for call in harness.api.calls[calls:]] == ["answerCallbackQuery"] * 9
    assert harness.app.user_data[555][DRAFT] == draft
    await press(harness, "v1:arw:weekly")  # the step shown still works
    assert "On which day?" in shown(harness)


async def test_a_double_tap_on_back_goes_back_once(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    await harness.send(text_update("/newrule"))
    await run(harness, ["v1:arb:amount", "5"])
    edits = len(harness.api.sent("editMessageText"))

    await press(harness, "v1:arx:back:when")
    await press(harness, "v1:arx:back:when")  # the second tap left before the first's edit

    assert len(harness.api.sent("editMessageText")) == edits + 1
    assert ASKS["amount"] in shown(harness)
    assert answers(harness)[-1] == NO_LONGER_ACTIVE


@pytest.mark.parametrize(("steps", "typed", "refusal", "good", "then"), [
    (["v1:arb:amount"], "abc", "Type an amount like 5 or $2.50.", "5", "When?"),
    (["v1:arb:amount"], "x" * 4000, "Type an amount like 5 or $2.50.", "5", "When?"),
    (["v1:arb:cheap", "v1:arw:monthly"], "fifteen", "Type a whole number from 1 to 31.",
     "15", "At most how much"),
    (["v1:arb:cheap", "v1:arw:monthly"], "x" * 4000, "Type a whole number from 1 to 31.",
     "15", "At most how much"),
    (["v1:arb:cheap", "v1:arw:monthly"], "1²", "Type a whole number from 1 to 31.",
     "១៥", "At most how much"),  # a superscript is no digit; Khmer digits are
    (["v1:arb:cheap", "v1:arw:balance"], "x" * 4000, "Type an amount like 5 or $2.50.",
     "1", "At most how much"),
    (["v1:arb:cheap", "v1:arw:data"], "lots", "Type an amount of data like 500 MB or 1 GB.",
     "500 MB", "At most how much"),
    (["v1:arb:cheap", "v1:arw:alive", "3"], "x" * 4000, "Type an amount like 5 or $2.50.",
     "20", "Should I ask"),
    (["v1:arb:cheap", "v1:arw:alive", "3", "20", "v1:arp:ask", "v1:arc:ok"], "x" * 4000,
     "Type the 6 digits from the SMS, like 123456.", "CODE", "Auto-recharge is on."),
])
async def test_a_refused_typed_value_is_answered_below_and_the_step_stays(
        harness: BotHarness, steps: list[str], typed: str, refusal: str, good: str,
        then: str) -> None:
    await bind(harness, CELLCARD)
    since = len(harness.api.calls)
    await harness.send(text_update("/newrule"))
    await run(harness, steps)
    asked = shown(harness).rsplit("\n\n", 1)[-1]  # the step's question
    old = wizard_id(harness)

    await harness.send(text_update(typed))

    answer = harness.api.sent()[-1]  # a new message, below what was typed
    assert answer["text"].startswith(refusal) and answer["text"].endswith(asked)
    assert len(answer["text"]) < 1000  # what was typed is not repeated
    assert [text for text, _ in keyboard(answer)][-2:] == ["« Back", "✖️ Cancel"]
    assert wizard_id(harness) == answer["_id"] != old
    assert live_keyboards(harness, since).keys() == {answer["_id"]}  # the old one's are gone

    await run(harness, [good])
    assert then in shown(harness)
    assert int(last_shown(harness)["message_id"]) == answer["_id"]


async def test_an_idle_wizard_times_out_in_its_message(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    since = len(harness.api.calls)
    await harness.send(text_update("/newrule"))
    await run(harness, ["v1:arb:amount", "5", "v1:arw:every"])
    wizard = wizard_id(harness)
    assert harness.app.job_queue is not None
    (timeout_job,) = [job for job in harness.app.job_queue.jobs()
                      if "timeout" in (job.name or "").lower()]

    await timeout_job.run(harness.app)

    end = last_shown(harness)
    assert "took too long" in end["text"]
    assert int(end["message_id"]) == wizard and "reply_markup" not in end
    assert live_keyboards(harness, since) == {}


async def test_editing_a_rule_turns_its_card_into_the_wizard(harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    since = len(harness.api.calls)
    await harness.send(text_update("/newrule"))
    for step in STEPS[1:]:
        await act(harness, step)
    (rule,) = await rules_of(harness)
    await harness.send(text_update("/autorecharge"))
    card = next(p for p in harness.api.sent() if str(p["text"]).startswith("On · "))

    await harness.send(callback_update(f"v1:ru:{rule.id}:edit",  # type: ignore[attr-defined]
                                       message_id=card["_id"], text=card["text"]))
    assert wizard_id(harness) == card["_id"]
    assert ASKS["buy"] in shown(harness) and "« Back" not in buttons(harness)  # the first
    await run(harness, ["v1:arb:amount", "3", "v1:arw:monthly", "15", "20", "v1:arp:ask",
                        "v1:arc:ok"])  # less than confirmed: no new code

    end = last_shown(harness)
    assert end["text"].endswith("Updated. The rule stays on.")
    assert "buy $3.00 of airtime" in end["text"]
    assert int(end["message_id"]) == card["_id"] and "reply_markup" not in end
    # The list's "Add another rule?" keeps its ➕ New rule: it is no wizard step.
    assert list(live_keyboards(harness, since).values()) == [["➕ New rule"]]


async def test_a_line_cards_auto_recharge_starts_the_wizard_for_that_line_in_the_card(
        harness: BotHarness) -> None:
    """With two lines the wizard would ask which; from a card it knows: it starts at "what to
    buy", in the card's message. Once the line has a rule, the button lists it instead."""
    first = await two_lines(harness)
    await harness.send(text_update("/lines"))
    card = int(harness.api.sent()[-1]["_id"])
    await harness.send(callback_update(f"v1:ln:{first}:show", message_id=card))
    before = sent_count(harness)
    await harness.send(callback_update(f"v1:arv:{first}", message_id=card))
    assert ASKS["buy"] in shown(harness) and ASKS["line"] not in shown(harness)
    assert wizard_id(harness) == card and sent_count(harness) == before
    for step in STEPS[1:]:
        await act(harness, step)
    (rule,) = await rules_of(harness)
    assert rule.line_id == first  # type: ignore[attr-defined]

    await harness.send(callback_update(f"v1:arv:{first}", message_id=card))
    listed = [message["text"] for message in harness.api.sent("sendMessage")[-2:]]
    assert "every month on day 15" in listed[0] and listed[1] == "Add another rule?"


async def test_a_forged_line_on_the_auto_recharge_button_is_refused(
        harness: BotHarness) -> None:
    await bind(harness, CELLCARD)
    before = len(await rules_of(harness))
    for data in ("v1:arv:999999", "v1:arv:abc"):
        await harness.send(callback_update(data))
        assert "not yours or no longer bound" in answers(harness)[-1]
    assert len(await rules_of(harness)) == before


async def back_to_the_line_step(harness: BotHarness) -> None:
    """From the code step, Back on every step down to "which line"."""
    for step in reversed(STEPS[1:]):
        await press(harness, f"v1:arx:back:{step}")
    assert ASKS["line"] in shown(harness)


@pytest.mark.parametrize("found_waiting", [False, True])
async def test_another_line_after_the_code_step_drops_only_the_rule_this_wizard_made(
        harness: BotHarness, found_waiting: bool) -> None:
    """Back from the code step to another line: the rule the wizard proposed for the first
    line (never on) goes. One it found already waiting (the same rule, left unconfirmed by
    an earlier run) is not its own: it stays."""
    first = await two_lines(harness)
    second = next(line.id for line in await harness.components.lines.for_user(555)
                  if line.id != first)
    if found_waiting:
        await harness.send(text_update("/newrule"))
        for step in STEPS[:-1]:
            await act(harness, step, first)
        await harness.send(text_update("/cancel"))
    await harness.send(text_update("/newrule"))
    for step in STEPS[:-1]:
        await act(harness, step, first)
    (waiting,) = await rules_of(harness)
    assert waiting.status is RuleStatus.AWAITING_OTP  # type: ignore[attr-defined]

    await back_to_the_line_step(harness)
    await press(harness, f"v1:arl:{second}")
    assert ASKS["buy"] in shown(harness)
    left = await rules_of(harness)
    assert [rule.id for rule in left] == (  # type: ignore[attr-defined]
        [waiting.id] if found_waiting else [])  # type: ignore[attr-defined]
