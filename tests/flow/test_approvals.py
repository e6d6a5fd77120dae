"""Approving a charge through the real Application: the approval request's buttons, pressed
by the owner and by a stranger; "Top up now" from a line card, tapped twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.services.charging import ChargingService, Requested
from handlers.approvals import ApprovalsFlow, top_up_now_buttons
from handlers.common import Ui
from handlers.outbox import render
from storage.charges import ChargesRepository
from storage.payments import PaymentsRepository
from storage.tables import notifications
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind
from tests.flow.recording import callback_update, text_update

OWNER, STRANGER = 555, 666
CELLCARD = "+85512345678"


@pytest.fixture
def charging(harness: BotHarness, clock: ManualClock) -> ChargingService:
    c = harness.components
    service = ChargingService(c.db, c.cipher, c.simulator, clock, admin_chat_ids=[4242],
                              approval_timeout=timedelta(hours=1))
    harness.app.add_handlers(ApprovalsFlow(c.users, c.i18n, service).handlers(), group=-1)
    return service


def ui(clock: ManualClock) -> Ui:
    return Ui(language="en", _=lambda message: message, locale="en",
              zone=ZoneInfo("Asia/Phnom_Penh"), now=clock.now())


async def fund(harness: BotHarness, cents: int, ref: str = "1") -> None:
    async with harness.components.db.write() as conn:
        await PaymentsRepository(conn, harness.components.cipher).record_payment(
            user_id=OWNER, source="operator", external_id=f"operator:{ref}",
            amount=Money(cents, "USD"), now=harness.components.clock.now(), actor="cli")


async def ask(charging: ChargingService, line_id: int, nonce: str = "n") -> int:
    result = await charging.request_manual(OWNER, line_id, Money(500, "USD"), None, nonce)
    assert isinstance(result, Requested)
    return result.charge.id


async def state_of(harness: BotHarness, charge_id: int) -> ChargeState:
    async with harness.components.db.read() as conn:
        charge = await ChargesRepository(conn, harness.components.cipher).get(charge_id)
    assert charge is not None
    return charge.state


def answers(harness: BotHarness) -> list[dict[str, Any]]:
    return harness.api.sent("answerCallbackQuery")


def edits(harness: BotHarness) -> list[str]:
    return [str(p["text"]) for p in harness.api.sent("editMessageText")]


def buttons(markup: Any) -> list[str]:
    data = json.loads(markup) if isinstance(markup, str) else markup
    return [b["callback_data"] for row in data["inline_keyboard"] for b in row]


async def test_the_owner_approves_and_the_request_becomes_the_outcome(
        harness: BotHarness, charging: ChargingService, clock: ManualClock) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)
    async with harness.components.db.read() as conn:
        [row] = (await conn.execute(notifications.select().where(
            notifications.c.kind == "approval_request"))).mappings().all()
    text, markup = render("approval_request", ui(clock), row["params"])
    assert "$5.00" in text and "012 ••• 678" in text and "Wallet: $20.00" in text
    assert markup is not None
    assert [b.callback_data for r in markup.inline_keyboard for b in r] == [
        f"v1:ap:{charge_id}:ok", f"v1:ap:{charge_id}:no"]
    calls_before = len(harness.api.calls)

    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER, message_id=50))

    methods = [call.method for call in harness.api.calls[calls_before:]]
    assert methods.index("answerCallbackQuery") < methods.index("editMessageText")
    assert answers(harness)[-1].get("text") is None  # answered at once, before the carrier
    assert "Approved" in edits(harness)[-1] and "$5.00" in edits(harness)[-1]
    assert await state_of(harness, charge_id) is ChargeState.SUCCEEDED

    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER, message_id=50))
    assert "Already done" in edits(harness)[-1]
    assert await harness.components.simulator.times_paid(
        (await charging.get(charge_id)).reference) == 1  # type: ignore[union-attr]


async def test_fifty_taps_on_approve_edit_the_message_only_when_its_text_changes(
        harness: BotHarness, charging: ChargingService) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)
    shown = "Top up 012 ••• 678 with $5.00?"  # what the chat shows under the first tap
    for _ in range(50):
        # Telegram sends the message as it reads now: the last edit, if there was one.
        await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER,
                                           message_id=50, text=shown))
        shown = edits(harness)[-1] if edits(harness) else shown
    # The outcome once, then "already done" once; 48 taps that would change nothing edit
    # nothing (each is still answered).
    assert len(edits(harness)) == 2
    assert "Approved" in edits(harness)[0] and "Already done" in edits(harness)[1]
    assert len(answers(harness)) == 50
    assert await harness.components.simulator.times_paid(
        (await charging.get(charge_id)).reference) == 1  # type: ignore[union-attr]


async def test_a_stranger_pressing_approve_changes_nothing_and_learns_nothing(
        harness: BotHarness, charging: ChargingService) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)
    await harness.send(text_update("/start", user_id=STRANGER))
    edits_before = len(edits(harness))

    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=STRANGER))
    forged = answers(harness)[-1]
    await harness.send(callback_update(f"v1:ap:{charge_id + 99}:ok", user_id=STRANGER))
    unknown = answers(harness)[-1]

    assert forged["show_alert"] is True
    assert forged["text"] == unknown["text"] == "This button is not for you."
    assert len(edits(harness)) == edits_before
    assert await state_of(harness, charge_id) is ChargeState.AWAITING_APPROVAL
    assert "$5.00" not in " ".join(harness.api.texts(STRANGER))


async def test_declining_then_approving(harness: BotHarness, charging: ChargingService) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)

    await harness.send(callback_update(f"v1:ap:{charge_id}:no", user_id=OWNER))
    assert edits(harness)[-1].startswith("Declined")
    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER))

    assert "You declined" in edits(harness)[-1]
    assert await state_of(harness, charge_id) is ChargeState.DECLINED


async def test_approve_with_an_empty_wallet_keeps_the_request_and_says_what_is_missing(
        harness: BotHarness, charging: ChargingService) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 200)
    charge_id = await ask(charging, line_id)

    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER))

    edit = harness.api.sent("editMessageText")[-1]
    assert "$3.00 short" in str(edit["text"])
    assert buttons(edit["reply_markup"]) == [f"v1:ap:{charge_id}:ok", f"v1:ap:{charge_id}:no"]
    assert "/wallet" in harness.api.texts(OWNER)[-1]
    assert await state_of(harness, charge_id) is ChargeState.AWAITING_APPROVAL


async def test_an_expired_request_says_so(harness: BotHarness, charging: ChargingService,
                                          clock: ManualClock) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)
    clock.advance(timedelta(hours=2))

    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER))

    assert "expired" in edits(harness)[-1]
    assert await state_of(harness, charge_id) is ChargeState.EXPIRED


async def test_top_up_now_tapped_twice_asks_once(harness: BotHarness,
                                                 charging: ChargingService,
                                                 clock: ManualClock) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    rows = top_up_now_buttons(ui(clock), line_id)
    data = [b.callback_data for row in rows for b in row]
    assert f"v1:tn:{line_id}:a500" in data

    await harness.send(callback_update(f"v1:tn:{line_id}:a500", user_id=OWNER, message_id=77))
    first = answers(harness)[-1]
    await harness.send(callback_update(f"v1:tn:{line_id}:a500", user_id=OWNER, message_id=77))
    second = answers(harness)[-1]

    assert "request to approve" in first["text"]
    assert "Already asked" in second["text"]
    pending = await charging.list_by_state(ChargeState.AWAITING_APPROVAL)
    assert len(pending) == 1
    assert pending[0].idempotency_key == f"manual:{OWNER}:77:{line_id}:a500"
    async with harness.components.db.read() as conn:
        rows_ = (await conn.execute(notifications.select().where(
            notifications.c.kind == "approval_request"))).all()
    assert len(rows_) == 1

    # Another card (another message) while that request waits asks nothing: the answer
    # points at the open request, posted again with its buttons.
    await harness.send(callback_update(f"v1:tn:{line_id}:a200", user_id=OWNER, message_id=78))
    assert "already waits for your approval" in answers(harness)[-1]["text"]
    assert buttons(harness.api.sent()[-1]["reply_markup"]) == [
        f"v1:ap:{pending[0].id}:ok", f"v1:ap:{pending[0].id}:no"]
    assert await charging.list_by_state(ChargeState.AWAITING_APPROVAL) == pending

    # Once it is answered, another card is another request.
    await harness.send(callback_update(f"v1:ap:{pending[0].id}:no", user_id=OWNER))
    await harness.send(callback_update(f"v1:tn:{line_id}:a200", user_id=OWNER, message_id=78))
    assert "request to approve" in answers(harness)[-1]["text"]
    [again] = await charging.list_by_state(ChargeState.AWAITING_APPROVAL)
    assert again.idempotency_key == f"manual:{OWNER}:78:{line_id}:a200"


async def test_top_up_now_for_someone_elses_line_is_refused(
        harness: BotHarness, charging: ChargingService) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await harness.send(callback_update(f"v1:tn:{line_id}:a500", user_id=STRANGER))
    answer = answers(harness)[-1]
    assert answer["show_alert"] is True
    assert "not yours" in answer["text"]
    assert await charging.list_by_state(None) == []


@pytest.mark.parametrize("data", ["v1:ap:abc:ok", "v1:ap:1:maybe", "v1:tn:x:a500"])
async def test_malformed_buttons_are_answered(harness: BotHarness, charging: ChargingService,
                                              data: str) -> None:
    await bind(harness, CELLCARD, user_id=OWNER)
    before = len(answers(harness))
    await harness.send(callback_update(data, user_id=OWNER))
    assert len(answers(harness)) == before + 1  # answered once, by our handler
    assert answers(harness)[-1]["text"] == "That button is no longer active."


async def test_the_tap_is_answered_before_the_carrier_is_called(
        harness: BotHarness, charging: ChargingService,
        monkeypatch: pytest.MonkeyPatch) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)
    carrier = harness.components.simulator
    top_up = carrier.top_up
    seen_when_called: list[list[str]] = []

    async def recording_top_up(request: Any) -> Any:
        seen_when_called.append(edits(harness))
        return await top_up(request)

    monkeypatch.setattr(carrier, "top_up", recording_top_up)
    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER, message_id=50))

    [edits_then] = seen_when_called
    assert edits_then and "Approved: topping up" in edits_then[-1]  # answered first
    assert await state_of(harness, charge_id) is ChargeState.SUCCEEDED


async def test_an_approval_whose_submission_dies_is_submitted_by_the_sweep(
        harness: BotHarness, charging: ChargingService, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await fund(harness, 2000)
    charge_id = await ask(charging, line_id)

    async def dies(charge: int) -> None:
        raise ConnectionResetError("the process went away mid-submission")

    for service in (charging, harness.components.charging):  # whichever flow answers
        monkeypatch.setattr(service, "submit", dies)
    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER, message_id=50))
    assert await state_of(harness, charge_id) is ChargeState.APPROVED  # held, in the database
    monkeypatch.undo()

    clock.advance(charging.retry.lease + timedelta(seconds=1))
    await charging.process_due()

    assert await state_of(harness, charge_id) is ChargeState.SUCCEEDED
    async with harness.components.db.read() as conn:
        receipts = (await conn.execute(notifications.select().where(
            notifications.c.kind == "receipt"))).all()
    assert len(receipts) == 1
