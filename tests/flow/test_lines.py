"""/lines through the real Application: the list, the card, rename, unbind, plans, and
buttons that are forged, stale or pressed twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from telegram.request import RequestData

from bot.domain.operators import Operator
from bot.gateways.simulated_catalog import CATALOG
from storage.audit import AuditRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard, last_answer, last_edit, line_row
from tests.flow.recording import RecordedCall, callback_update, text_update

CELLCARD = "+85512345678"  # 012 345 678
SMART = "+85510345678"  # 010 345 678
CELLCARD_FORMS = ("+85512345678", "85512345678", "012 345 678", "012345678", "012 ••• 678",
                  "12345678")
NOT_YOURS = "not yours"
NOT_AVAILABLE = "not available"
WENT_WRONG = "went wrong"
INACTIVE = "no longer active"


# --- helpers ---------------------------------------------------------------------------------


async def audit_actions(harness: BotHarness, action: str) -> list[str | None]:
    async with harness.components.db.read() as conn:
        entries = await AuditRepository(conn).latest(500, action=action)
    return [entry.subject for entry in entries]


def everything_sent_since(harness: BotHarness, start: int) -> str:
    return "\n".join(json.dumps(call.params, ensure_ascii=False, default=str)
                     for call in harness.api.calls[start:])


def refuse_identical_edits(harness: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers an edit that changes nothing as Telegram does: 400 "message is not modified"."""
    original = harness.api.do_request
    shown: dict[tuple[Any, Any], str] = {}

    async def do_request(url: str, method: str, request_data: RequestData | None = None,
                         *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        if api_method == "editMessageText" and request_data is not None:
            params = request_data.parameters
            key = (params.get("chat_id"), params.get("message_id"))
            content = json.dumps([params.get("text"), params.get("reply_markup")],
                                 sort_keys=True, default=str)
            if shown.get(key) == content:
                harness.api.calls.append(RecordedCall(api_method, dict(params)))
                return 400, json.dumps({
                    "ok": False, "error_code": 400,
                    "description": "Bad Request: message is not modified: specified new "
                                   "message content and reply markup are exactly the same as "
                                   "a current content and reply markup of the message"}).encode()
            shown[key] = content
        return await original(url, method, request_data, *args, **kwargs)

    monkeypatch.setattr(harness.api, "do_request", do_request)


# --- the list and the card -------------------------------------------------------------------


async def test_lines_without_lines_says_so(harness: BotHarness) -> None:
    await harness.send(text_update("/lines"))

    (text,) = harness.api.texts()
    assert "no lines yet" in text
    assert "/bind" in text


async def test_lines_lists_both_lines_with_a_button_each(harness: BotHarness) -> None:
    first = await bind(harness, CELLCARD)
    second = await bind(harness, SMART)
    await harness.send(text_update("/lines"))

    reply = harness.api.sent()[-1]
    assert "Your lines" in reply["text"]
    buttons = keyboard(reply)
    assert [data for _, data in buttons] == [f"v1:ln:{first}:show", f"v1:ln:{second}:show"]
    assert "012 ••• 678" in buttons[0][0] and "Cellcard" in buttons[0][0]
    assert "010 ••• 678" in buttons[1][0] and "Smart" in buttons[1][0]


async def test_tapping_a_line_shows_its_card(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:show"))

    card = last_edit(harness)
    assert "012 345 678" in card["text"]
    assert "Cellcard" in card["text"]
    assert "Plan: none chosen" in card["text"]
    assert "No balance known yet" in card["text"]
    assert {data for _, data in keyboard(card)} == {
        f"v1:tn:{line_id}:a100", f"v1:tn:{line_id}:a200", f"v1:tn:{line_id}:a500",
        f"v1:pl:{line_id}:0", f"v1:bl:{line_id}", f"v1:arv:{line_id}",
        f"v1:cht:{line_id}:auto:30",
        f"v1:hi:{line_id}:0", f"v1:ln:{line_id}:ren", f"v1:ln:{line_id}:unb",
        "v1:ln:0:list"}
    assert "text" not in last_answer(harness)  # a silent answer: the card is the reply

    # « All lines: the card becomes the list again, in place.
    await harness.send(callback_update("v1:ln:0:list"))
    listed = last_edit(harness)
    assert listed["text"] == "Your lines. Tap one to see it and change it:"
    assert keyboard(listed) == [("012 ••• 678 · Cellcard", f"v1:ln:{line_id}:show")]


async def test_a_card_offers_to_buy_its_plan_now(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:pc:{line_id}:cellcard-air-200"))

    after_choice = {data for _, data in keyboard(last_edit(harness))}
    await harness.send(callback_update(f"v1:ln:{line_id}:show"))
    on_card = {data for _, data in keyboard(last_edit(harness))}
    assert f"v1:tn:{line_id}:cellcard-air-200" in after_choice
    assert f"v1:tn:{line_id}:cellcard-air-200" in on_card


# --- rename ----------------------------------------------------------------------------------


async def test_rename_stores_the_new_name(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:ren"))
    assert "new name" in harness.api.texts()[-1]

    await harness.send(text_update("  Mum's   phone "))

    assert "Renamed" in harness.api.texts()[-1]
    assert "Mum's phone" in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).nickname == "Mum's phone"
    assert await audit_actions(harness, "line.renamed") == [str(line_id)]
    await harness.send(text_update("/lines"))
    assert keyboard(harness.api.sent()[-1])[0][0].startswith("Mum's phone")


@pytest.mark.parametrize("name", ["x" * 4000, "y" * 33, "   "],
                         ids=["4000-chars", "33-chars", "blank"])
async def test_a_bad_name_is_refused_and_the_flow_stays(harness: BotHarness, name: str) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:ren"))

    await harness.send(text_update(name))

    assert "1 to 32 characters" in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).nickname is None
    assert await audit_actions(harness, "line.renamed") == []
    # still waiting for a name
    await harness.send(text_update("Work"))
    assert "Renamed" in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).nickname == "Work"


async def test_cancel_during_rename_leaves_the_name(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:ren"))

    await harness.send(text_update("/cancel"))
    assert "Cancelled" in harness.api.texts()[-1]
    await harness.send(text_update("Work"))  # plain text now, not a name

    assert "Renamed" not in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).nickname is None
    assert await audit_actions(harness, "line.renamed") == []


# --- unbind ----------------------------------------------------------------------------------


async def test_unbind_asks_first_and_no_goes_back_to_the_card(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:unb"))

    confirm = last_edit(harness)
    assert "Unbind 012 ••• 678?" in confirm["text"]
    assert keyboard(confirm) == [("Yes, unbind", f"v1:ln:{line_id}:unbok"),
                                 ("No, keep it", f"v1:ln:{line_id}:show")]
    assert (await line_row(harness, line_id)).is_bound

    await harness.send(callback_update(f"v1:ln:{line_id}:show"))  # "No, keep it"

    assert "Plan: none chosen" in last_edit(harness)["text"]
    assert (await line_row(harness, line_id)).is_bound
    assert await audit_actions(harness, "line.unbound") == []


async def test_yes_unbinds_the_line(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:unb"))
    await harness.send(callback_update(f"v1:ln:{line_id}:unbok"))

    assert "is unbound" in last_edit(harness)["text"]
    assert not (await line_row(harness, line_id)).is_bound
    assert await audit_actions(harness, "line.unbound") == [str(line_id)]
    await harness.send(text_update("/lines"))
    assert "no lines yet" in harness.api.texts()[-1]


# --- plans -----------------------------------------------------------------------------------


async def test_plans_are_the_operators_catalog_page_by_page(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    catalog = [p.id for p in CATALOG[Operator.CELLCARD]]
    assert len(catalog) > 5  # two pages

    await harness.send(callback_update(f"v1:pl:{line_id}:0"))
    first = last_edit(harness)
    assert "Cellcard plans" in first["text"] and "page 1 of 2" in first["text"]
    data = [d for _, d in keyboard(first)]
    assert [d for d in data if d.startswith("v1:pc:")] == [
        f"v1:pc:{line_id}:{product}" for product in catalog[:5]]
    assert f"v1:pl:{line_id}:1" in data  # next page
    assert f"v1:ln:{line_id}:show" in data  # back

    await harness.send(callback_update(f"v1:pl:{line_id}:1"))
    second = last_edit(harness)
    assert "page 2 of 2" in second["text"]
    data = [d for _, d in keyboard(second)]
    assert [d for d in data if d.startswith("v1:pc:")] == [
        f"v1:pc:{line_id}:{product}" for product in catalog[5:]]
    assert f"v1:pl:{line_id}:0" in data  # previous page
    assert f"v1:pl:{line_id}:2" not in data


@pytest.mark.parametrize("page", ["2", "999999", "99999999999999999"])
async def test_a_page_past_the_end_shows_the_last_page(harness: BotHarness, page: str) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:pl:{line_id}:{page}"))

    shown = last_edit(harness)
    assert "page 2 of 2" in shown["text"]
    assert [d for _, d in keyboard(shown) if d.startswith("v1:pc:")] == [
        f"v1:pc:{line_id}:{p.id}" for p in CATALOG[Operator.CELLCARD][5:]]


async def test_picking_a_plan_stores_it_and_the_card_shows_it(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:pl:{line_id}:0"))
    label, data = next((text, d) for text, d in keyboard(last_edit(harness))
                       if d.startswith("v1:pc:"))
    product_id = data.rsplit(":", 1)[1]

    await harness.send(callback_update(data))

    assert last_answer(harness)["text"] == "Plan saved."
    assert label in last_edit(harness)["text"]
    assert (await line_row(harness, line_id)).plan_product_id == product_id
    assert await audit_actions(harness, "line.plan_chosen") == [str(line_id)]
    await harness.send(callback_update(f"v1:ln:{line_id}:show"))
    assert f"Plan: {label}" in last_edit(harness)["text"]


@pytest.mark.parametrize("plan", [CATALOG[Operator.SMART][0].id, "no-such-plan",
                                  "cellcard-air-99999"])
async def test_a_plan_of_another_operator_or_garbage_is_not_available(
        harness: BotHarness, plan: str) -> None:
    line_id = await bind(harness, CELLCARD)
    edits_before = len(harness.api.sent("editMessageText"))

    await harness.send(callback_update(f"v1:pc:{line_id}:{plan}"))

    answer = last_answer(harness)
    assert NOT_AVAILABLE in answer["text"]
    assert answer.get("show_alert") is True
    assert (await line_row(harness, line_id)).plan_product_id is None
    assert await audit_actions(harness, "line.plan_chosen") == []
    assert len(harness.api.sent("editMessageText")) == edits_before


# --- forged and stale buttons ----------------------------------------------------------------


@pytest.mark.parametrize("action", ["show", "ren", "unb", "unbok"])
async def test_another_users_line_is_refused_and_its_number_never_shown(
        harness: BotHarness, action: str) -> None:
    victim = await bind(harness, CELLCARD, user_id=111)
    start = len(harness.api.calls)

    await harness.send(callback_update(f"v1:ln:{victim}:{action}", user_id=222))
    await harness.send(text_update("Hacked", user_id=222))  # in case a rename had started

    answer = last_answer(harness)
    assert NOT_YOURS in answer["text"]
    assert answer.get("show_alert") is True
    assert harness.api.sent("editMessageText") == []
    line = await line_row(harness, victim)
    assert line.owner_id == 111 and line.is_bound and line.nickname is None
    assert await audit_actions(harness, "line.unbound") == []
    assert await audit_actions(harness, "line.renamed") == []
    sent_to_b = everything_sent_since(harness, start)
    for form in CELLCARD_FORMS:
        assert form not in sent_to_b


async def test_another_users_plans_and_plan_choice_are_refused(harness: BotHarness) -> None:
    victim = await bind(harness, CELLCARD, user_id=111)
    plan = CATALOG[Operator.CELLCARD][0].id
    start = len(harness.api.calls)

    await harness.send(callback_update(f"v1:pl:{victim}:0", user_id=222))
    assert NOT_YOURS in last_answer(harness)["text"]
    assert last_answer(harness).get("show_alert") is True

    await harness.send(callback_update(f"v1:pc:{victim}:{plan}", user_id=222))
    assert NOT_AVAILABLE in last_answer(harness)["text"]
    assert last_answer(harness).get("show_alert") is True

    assert harness.api.sent("editMessageText") == []
    assert (await line_row(harness, victim)).plan_product_id is None
    assert await audit_actions(harness, "line.plan_chosen") == []
    sent_to_b = everything_sent_since(harness, start)
    for form in CELLCARD_FORMS:
        assert form not in sent_to_b
    assert "Cellcard" not in sent_to_b  # not even the operator


@pytest.mark.parametrize(("data", "answer"), [
    ("v1:ln:abc:show", NOT_YOURS), ("v1:ln:99999:show", NOT_YOURS),
    ("v1:ln:99999:unbok", NOT_YOURS), ("v1:pl:99999:0", NOT_YOURS), ("v1:pl:abc:x", NOT_YOURS),
    ("v1:pc:99999:smart-air-100", NOT_AVAILABLE),
    ("v1:ln:1", INACTIVE), ("v1:pc", INACTIVE),  # they do not decode
])
async def test_garbage_line_buttons_are_answered_and_change_nothing(
        harness: BotHarness, data: str, answer: str) -> None:
    line_id = await bind(harness, CELLCARD)

    await harness.send(callback_update(data))

    assert answer in last_answer(harness)["text"]
    assert harness.api.sent("editMessageText") == []
    assert WENT_WRONG not in " ".join(harness.api.texts())
    line = await line_row(harness, line_id)
    assert line.is_bound and line.nickname is None and line.plan_product_id is None


@pytest.mark.parametrize("data", ["v1:ln:{id}:show", "v1:ln:{id}:unb", "v1:pl:{id}:0",
                                  "v1:pl:{id}:1", "v1:pc:{id}:cellcard-air-100"])
async def test_a_second_tap_on_the_same_button_is_quiet(
        harness: BotHarness, monkeypatch: pytest.MonkeyPatch, data: str) -> None:
    line_id = await bind(harness, CELLCARD)
    refuse_identical_edits(harness, monkeypatch)
    texts_before = len(harness.api.texts())

    await harness.send(callback_update(data.format(id=line_id)))
    await harness.send(callback_update(data.format(id=line_id)))

    edits = harness.api.sent("editMessageText")
    assert len(edits) == 2 and edits[0]["text"] == edits[1]["text"]  # the second was refused
    assert len(harness.api.sent("answerCallbackQuery")) == 2
    assert harness.api.texts()[texts_before:] == []  # no "something went wrong"
    assert (await line_row(harness, line_id)).is_bound


async def test_a_second_tap_on_yes_unbind_is_answered_quietly(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:ln:{line_id}:unbok"))
    await harness.send(callback_update(f"v1:ln:{line_id}:unbok"))

    assert "no longer bound" in last_answer(harness)["text"]
    assert await audit_actions(harness, "line.unbound") == [str(line_id)]
    assert WENT_WRONG not in " ".join(harness.api.texts())


async def test_a_page_token_too_long_to_be_a_number_still_shows_a_page(
        harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:pl:{line_id}:{'9' * 24}"))

    assert "Cellcard plans" in last_edit(harness)["text"]  # int_arg gives up: the first page
    assert WENT_WRONG not in " ".join(harness.api.texts())


async def test_rename_of_another_line_mid_rename_renames_the_line_tapped_last(
        harness: BotHarness) -> None:
    first = await bind(harness, CELLCARD)
    second = await bind(harness, SMART)
    await harness.send(callback_update(f"v1:ln:{first}:ren"))
    await harness.send(callback_update(f"v1:ln:{second}:ren"))  # changed their mind

    await harness.send(text_update("Work"))

    assert (await line_row(harness, first)).nickname is None
    assert (await line_row(harness, second)).nickname == "Work"
    assert "no longer active" not in last_answer(harness).get("text", "")
