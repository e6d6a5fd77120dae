"""Which reading made a rule charge, through the real Application: a low-balance rule's
approval request (and, once approved, its receipt) names the balance it fired on and where
that came from, as the warnings say it ("Why now: balance $0.50 (read from the carrier, 3
minutes ago)."), in the user's language and zone; a balance the user reported is named as
theirs; a calendar rule's request and receipt name no reading at all."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.readings import LineReading, ReadingSource
from bot.domain.rules import Approval, CalendarKind, RuleSpec, RuleStatus, Trigger, first_run_at
from bot.services.charging import ChargeView
from handlers.common import Ui, user_ui
from handlers.render import trigger_text
from storage.rules import RuleRecord, RulesRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, deliver, keyboard
from tests.flow.recording import callback_update, text_update

OWNER = 555
CELLCARD = "+85512345678"
ZONE = ZoneInfo("Asia/Phnom_Penh")
LANGUAGES = ["en", "km", "zh_Hans"]
SOURCES = ("read from the carrier", "reported by you", "estimated from the last top-up")


async def add_rule(harness: BotHarness, line_id: int, spec: RuleSpec) -> RuleRecord:
    """An active rule, as if its code had been confirmed."""
    c = harness.components
    now = c.clock.now()
    async with c.db.write() as conn:
        return await RulesRepository(conn).add(
            line_id=line_id, owner_id=OWNER, spec=spec, now=now, status=RuleStatus.ACTIVE,
            next_run_at=first_run_at(spec, now, ZONE))


def low_balance_rule() -> RuleSpec:
    return RuleSpec(trigger=Trigger.BALANCE_BELOW, monthly_cap=Money(2000, "USD"),
                    approval=Approval.ASK, amount=Money(500, "USD"),
                    threshold=Money(100, "USD"))


async def owner_ui(harness: BotHarness) -> Ui:
    c = harness.components
    return await user_ui(c.users, c.i18n, OWNER, None)


async def the_charge(harness: BotHarness) -> ChargeView:
    [charge] = await harness.components.charging.list_by_state(None)
    return ChargeView.of(charge)


def request_sent(harness: BotHarness, charge_id: int) -> dict[str, Any]:
    """The approval request as the chat got it: the message with its Approve button."""
    approve = f"v1:ap:{charge_id}:ok"
    [sent] = [p for p in harness.api.sent() if int(p["chat_id"]) == OWNER
              and approve in [data for _label, data in keyboard(p)]]
    return sent


def receipt_text(harness: BotHarness) -> str:
    [receipt] = [text for text in harness.api.texts(OWNER) if text.startswith("✅ Topped up")]
    return receipt


async def approve(harness: BotHarness, charge_id: int) -> None:
    await harness.components.wallet.credit_operator(OWNER, Money(2000, "USD"), "cash-1",
                                                    actor="cli")
    await harness.send(callback_update(f"v1:ap:{charge_id}:ok", user_id=OWNER,
                                       message_id=77))
    [charge] = await harness.components.charging.list_by_state(None)
    assert charge.state is ChargeState.SUCCEEDED


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_low_balance_rules_request_and_receipt_name_the_carriers_reading(
        harness: BotHarness, clock: ManualClock, language: str) -> None:
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    assert await c.users.set_language(OWNER, language)
    await add_rule(harness, line_id, low_balance_rule())
    await c.simulator.set_balance(CELLCARD, Operator.CELLCARD, Money(50, "USD"))
    read_at = c.clock.now()
    await c.scheduler.check_lines()  # reads $0.50 from the carrier: the rule asks
    charge = await the_charge(harness)
    assert charge.state is ChargeState.AWAITING_APPROVAL

    clock.advance(timedelta(minutes=3))
    await deliver(harness, rounds=3)

    sent = request_sent(harness, charge.id)
    text = str(sent["text"])
    ui = await owner_ui(harness)
    assert ui.language == language
    reading = LineReading(ReadingSource.PROVIDER, read_at, balance=Money(50, "USD"))
    why = trigger_text(ui, reading)
    assert why is not None and why in text
    assert ui._("read from the carrier") in why and ui.money(Money(50, "USD")) in why
    if language == "en":
        assert "Why now: balance $0.50 (read from the carrier, 3 minutes ago)." in text
    else:  # the reading's origin is the warnings' own, translated
        assert "read from the carrier" not in why

    clock.advance(timedelta(minutes=2))
    before = len(harness.api.texts(OWNER))
    await approve(harness, charge.id)
    await deliver(harness, rounds=3)

    [receipt] = [t for t in harness.api.texts(OWNER)[before:] if "v1:ap" not in t
                 and ui.money(Money(500, "USD")) in t and t != text]
    why = trigger_text(await owner_ui(harness), reading)
    assert why is not None and why in receipt
    if language == "en":
        assert receipt.startswith("✅ Topped up 012 ••• 678 with $5.00 of airtime.\n"
                                  "Why now: balance $0.50 (read from the carrier, 5 minutes "
                                  "ago).\n")


async def test_a_reported_balance_is_named_as_the_users(
        harness: BotHarness, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line nobody can read (a physical prepaid line with a real provider): the rule fires
    on the balance the user reported."""
    c = harness.components
    monkeypatch.setattr(c.line_readings, "can_read", lambda operator: False)
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await add_rule(harness, line_id, low_balance_rule())
    await harness.send(text_update("/balance", user_id=OWNER))
    await harness.send(text_update("0.50", user_id=OWNER))
    assert "Saved" in harness.api.texts(OWNER)[-1]
    reported_at = c.clock.now()

    clock.advance(timedelta(minutes=12))
    await c.scheduler.check_lines()
    charge = await the_charge(harness)
    await deliver(harness, rounds=3)

    text = str(request_sent(harness, charge.id)["text"])
    assert "Why now: balance $0.50 (reported by you, 12 minutes ago)." in text
    assert "read from the carrier" not in text
    why = trigger_text(await owner_ui(harness), LineReading(ReadingSource.USER, reported_at,
                                                            balance=Money(50, "USD")))
    assert why is not None and why in text


async def test_a_keep_alive_rules_request_names_the_validity_in_the_users_zone(
        harness: BotHarness) -> None:
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    valid_until = c.clock.now() + timedelta(days=2)
    await c.simulator.set_validity(CELLCARD, Operator.CELLCARD, valid_until)
    await add_rule(harness, line_id, RuleSpec(
        trigger=Trigger.KEEP_ALIVE, monthly_cap=Money(2000, "USD"), approval=Approval.ASK,
        amount=Money(100, "USD"), days_before=3))

    await c.scheduler.check_lines()
    charge = await the_charge(harness)
    await deliver(harness, rounds=3)

    text = str(request_sent(harness, charge.id)["text"])
    local = valid_until.astimezone(ZONE)  # the user's zone: Phnom Penh by default
    assert f"Why now: valid until {local:%-d %b %Y, %H:%M} (read from the carrier, " in text


async def test_a_calendar_rules_request_and_receipt_name_no_reading(
        harness: BotHarness, clock: ManualClock) -> None:
    c = harness.components
    line_id = await bind(harness, CELLCARD, user_id=OWNER)
    await c.simulator.set_balance(CELLCARD, Operator.CELLCARD, Money(50, "USD"))
    await c.scheduler.check_lines()  # a fresh reading is stored: the run must not cite it
    rule = await add_rule(harness, line_id, RuleSpec(
        trigger=Trigger.CALENDAR, monthly_cap=Money(2000, "USD"), approval=Approval.ASK,
        amount=Money(500, "USD"), calendar=CalendarKind.MONTHLY, calendar_value=26))
    run_at: datetime | None = rule.next_run_at
    assert run_at is not None
    clock.set(run_at + timedelta(minutes=1))

    await c.scheduler.run_calendar()
    charge = await the_charge(harness)
    assert charge.state is ChargeState.AWAITING_APPROVAL
    await deliver(harness, rounds=3)

    sent = request_sent(harness, charge.id)
    text = str(sent["text"])
    assert "Your auto-recharge wants to top up 012 ••• 678" in text
    assert "Why now" not in text and not any(source in text for source in SOURCES)
    assert "$0.50" not in text

    await approve(harness, charge.id)
    await deliver(harness, rounds=3)
    receipt = receipt_text(harness)
    assert "Why now" not in receipt and not any(source in receipt for source in SOURCES)
