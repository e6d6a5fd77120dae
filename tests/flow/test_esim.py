"""Buying an eSIM through the real Application (the embedded simulated eSIM provider): the
shop, an offer against the wallet, Confirm (tapped twice: one eSIM), the QR code delivered
through the outbox and read back with a real decoder, an order whose answer was lost, a
sold-out package, and "Show install code again" before and after installation."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.lines import LineKind
from bot.domain.money import Money
from bot.domain.rules import Approval, RuleSpec, Trigger
from bot.gateways.simulated_esim import SimulatedEsimProvider
from bot.gateways.topup import GatewayTimeout
from bot.services.esims import package_token
from bot.services.rules import Proposed
from handlers import callback_data as cb
from handlers.esim import BUY_KIND, INSTALL_KIND, OFFER_KIND, SHOP_KIND
from storage.charges import ChargesRepository
from storage.lines import LineRecord, LinesRepository
from storage.payments import PaymentsRepository
from storage.readings import ReadingsRepository
from storage.tables import charges, lines
from storage.users import UsersRepository
from storage.wallet import WalletRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import deliver
from tests.flow.recording import callback_update, text_update

OWNER, STRANGER = 555, 666
ONE_GB = "kh-7d-1gb"  # the simulated provider's cheapest Cambodian eSIM: $5.00


def provider(harness: BotHarness) -> SimulatedEsimProvider:
    chosen = harness.components.esim_provider
    assert isinstance(chosen, SimulatedEsimProvider)
    return chosen


async def fund(harness: BotHarness, cents: int) -> None:
    async with harness.components.db.write() as conn:
        await UsersRepository(conn).ensure(OWNER, language="en",
                                           now=harness.components.clock.now())
        await PaymentsRepository(conn, harness.components.cipher).record_payment(
            user_id=OWNER, source="operator", external_id="operator:esim-test",
            amount=Money(cents, "USD"), now=harness.components.clock.now(), actor="cli")


async def wallet(harness: BotHarness) -> Money:
    async with harness.components.db.read() as conn:
        return await WalletRepository(conn).available(OWNER, "USD")


async def esim_lines(harness: BotHarness, *, bound_only: bool = True) -> list[LineRecord]:
    async with harness.components.db.read() as conn:
        ids = (await conn.execute(select(lines.c.id).where(
            lines.c.kind == LineKind.ESIM.value))).scalars().all()
        repo = LinesRepository(conn, harness.components.cipher)
        found = [line for i in ids if (line := await repo.get(i)) is not None]
    return [line for line in found if line.is_bound or not bound_only]


async def charge_states(harness: BotHarness) -> list[ChargeState]:
    async with harness.components.db.read() as conn:
        rows = (await conn.execute(select(charges.c.state).order_by(charges.c.id))).all()
    return [ChargeState(row.state) for row in rows]


def buttons(params: dict[str, Any]) -> list[tuple[str, str]]:
    markup = params.get("reply_markup")
    if markup is None:
        return []
    rows = markup.inline_keyboard if hasattr(markup, "inline_keyboard") \
        else markup["inline_keyboard"]
    return [(b.text, b.callback_data or b.url or "") if hasattr(b, "text")
            else (b["text"], b.get("callback_data") or b.get("url") or "")
            for row in rows for b in row]


def decoded(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def photo_of(params: dict[str, Any]) -> bytes:
    files = params["_files"]
    [png] = files.values()
    return bytes(png)


async def buy(harness: BotHarness, nonce: str = "n1", package: str = ONE_GB,
              user_id: int = OWNER) -> None:
    await harness.send(callback_update(cb.encode(BUY_KIND, package_token(package), nonce),
                                       user_id=user_id))


async def test_the_shop_lists_esims_and_an_offer_weighs_the_wallet(
        harness: BotHarness) -> None:
    await harness.send(text_update("/esim"))
    shop = harness.api.sent()[-1]
    assert "eSIMs for Cambodia" in shop["text"]
    listed = buttons(shop)
    assert listed[0] == ("1.0 GB · 7 days · $5.00",
                         cb.encode(OFFER_KIND, package_token(ONE_GB)))
    assert ("▶", cb.encode(SHOP_KIND, 1)) in listed  # more than one page

    await harness.send(callback_update(cb.encode(OFFER_KIND, package_token(ONE_GB))))
    offer = harness.api.sent("editMessageText")[-1]
    assert "Your wallet: $0.00" in offer["text"] and "$5.00 short" in offer["text"]
    assert not any(data.startswith(f"v1:{BUY_KIND}:") for _, data in buttons(offer))

    await fund(harness, 700)
    await harness.send(callback_update(cb.encode(OFFER_KIND, package_token(ONE_GB))))
    offer = harness.api.sent("editMessageText")[-1]
    assert "Your wallet: $7.00" in offer["text"] and "short" not in offer["text"]
    [buy_button] = [b for b in buttons(offer) if b[1].startswith(f"v1:{BUY_KIND}:")]
    assert buy_button[0] == "✅ Buy for $5.00"


async def test_a_purchase_delivers_a_qr_code_that_decodes_to_the_install_code(
        harness: BotHarness) -> None:
    await fund(harness, 700)
    await buy(harness)

    assert "Buying your eSIM ($5.00)" in harness.api.sent("editMessageText")[-1]["text"]
    assert await charge_states(harness) == [ChargeState.SUCCEEDED]
    assert await wallet(harness) == Money(200, "USD")
    [line] = await esim_lines(harness)
    assert line.owner_id == OWNER and line.iccid is not None and line.verified_at is not None
    assert line.number is None and line.label == f"eSIM …{line.iccid[-4:]}"

    await deliver(harness)
    [photo] = harness.api.sent("sendPhoto")
    code = await provider(harness).install_code(line.iccid)
    assert decoded(photo_of(photo)) == [code.activation_code]
    caption = str(photo["caption"])
    assert "Your eSIM is ready: 1 GB - 7 Days ($5.00). Wallet: $2.00." in caption
    assert f"<code>{code.matching_id}</code>" in caption and code.smdp_address in caption
    assert "installs once" in caption and "iPhone:" in caption and "Android:" in caption
    assert photo["parse_mode"] == "HTML"


async def test_two_taps_on_one_confirm_buy_one_esim(harness: BotHarness) -> None:
    await fund(harness, 1500)
    await buy(harness, nonce="twice")
    await buy(harness, nonce="twice")

    assert await charge_states(harness) == [ChargeState.SUCCEEDED]
    assert len(await esim_lines(harness)) == 1
    assert await wallet(harness) == Money(1000, "USD")
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == (
        "This purchase is already on its way.")
    orders = await provider(harness).orders_between(
        harness.components.clock.now() - timedelta(days=1),
        harness.components.clock.now() + timedelta(seconds=1))
    assert len(orders) == 1


async def test_an_order_whose_answer_was_lost_is_found_not_bought_again(
        harness: BotHarness, clock: ManualClock) -> None:
    sim = provider(harness)
    normal = sim.knobs
    sim.knobs = dataclasses.replace(normal, lost_response_rate=1.0)
    await fund(harness, 700)
    await buy(harness)
    sim.knobs = normal

    assert await charge_states(harness) in ([ChargeState.SUBMITTED], [ChargeState.SUCCEEDED])
    clock.advance(timedelta(minutes=5))  # past the charge's lease and its look-up back-off
    await harness.components.charging.process_due()

    assert await charge_states(harness) == [ChargeState.SUCCEEDED]
    [line] = await esim_lines(harness)
    orders = await sim.orders_between(clock.now() - timedelta(days=1), clock.now())
    assert [o.iccid for o in orders] == [line.iccid]  # one order, the line's eSIM
    assert await wallet(harness) == Money(200, "USD")


async def test_a_sold_out_esim_gives_the_money_back_and_leaves_no_line(
        harness: BotHarness) -> None:
    await fund(harness, 700)
    await harness.send(text_update("/esim"))  # the shop is read while it is for sale
    sim = provider(harness)
    sim.knobs = dataclasses.replace(sim.knobs, out_of_stock=frozenset({ONE_GB}))
    await buy(harness)

    assert await charge_states(harness) == [ChargeState.FAILED]
    assert await wallet(harness) == Money(700, "USD")
    assert await esim_lines(harness) == []
    assert len(await esim_lines(harness, bound_only=False)) == 1  # kept, unbound: history
    await deliver(harness)
    assert any("The eSIM 1 GB - 7 Days ($5.00) could not be bought: that plan is no longer "
               "sold. Nothing was taken from your wallet." in text
               for text in harness.api.texts(OWNER))
    assert harness.api.sent("sendPhoto") == []


async def test_a_buy_button_without_the_money_or_the_package_changes_nothing(
        harness: BotHarness) -> None:
    await fund(harness, 300)
    await buy(harness)
    assert "Your wallet has $3.00; this eSIM costs $5.00" in str(
        harness.api.sent("answerCallbackQuery")[-1]["text"])
    await harness.send(callback_update(cb.encode(BUY_KIND, "0123456789", "n2")))  # forged
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == "That eSIM is no longer sold."
    await harness.send(callback_update(f"v1:{BUY_KIND}:0123456789"))  # does not decode
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == \
        "That button is no longer active."
    assert await charge_states(harness) == [] and await esim_lines(harness) == []
    assert await wallet(harness) == Money(300, "USD")


async def test_the_install_code_again_only_while_not_installed_and_only_for_its_owner(
        harness: BotHarness) -> None:
    await fund(harness, 700)
    await buy(harness)
    [line] = await esim_lines(harness)
    assert line.iccid is not None

    await harness.send(callback_update(cb.encode("ln", line.id, "show")))
    card = harness.api.sent("editMessageText")[-1]
    assert "eSIM" in card["text"] and "Not read from Simulated eSIM yet." in card["text"]
    labels = [text for text, _ in buttons(card)]
    assert "📲 Show install code again" in labels and "💬 Report balance" not in labels
    assert not any(label.startswith("⚡ Top up $") for label in labels)  # no airtime

    await harness.send(callback_update(cb.encode(INSTALL_KIND, line.id), user_id=STRANGER))
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == (
        "That line is not yours or no longer bound.")
    assert harness.api.sent("sendPhoto") == []

    await harness.send(callback_update(cb.encode(INSTALL_KIND, line.id)))
    [again] = harness.api.sent("sendPhoto")
    code = await provider(harness).install_code(line.iccid)
    assert decoded(photo_of(again)) == [code.activation_code]
    assert str(again["caption"]).startswith(f"The install code of {line.label} again:")

    await provider(harness).install(line.iccid)
    await harness.send(callback_update(cb.encode(INSTALL_KIND, line.id)))
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == (
        "This eSIM is already installed: its code cannot be used again.")
    assert len(harness.api.sent("sendPhoto")) == 1


@pytest.mark.parametrize("has_line", [False, True])
async def test_start_offers_the_shop_to_a_user_without_a_line(
        harness: BotHarness, has_line: bool) -> None:
    if has_line:
        await fund(harness, 700)
        await buy(harness)
    await harness.send(text_update("/start"))
    offered = (cb.encode(SHOP_KIND, 0) in
               [data for _, data in buttons(harness.api.sent()[-1])])
    assert offered is not has_line


async def test_a_stored_charge_of_an_esim_is_in_the_ledger_once(harness: BotHarness) -> None:
    await fund(harness, 700)
    await buy(harness)
    async with harness.components.db.read() as conn:
        [charge] = await ChargesRepository(conn, harness.components.cipher).latest()
        hold = await WalletRepository(conn).hold_of(charge.id)
    assert hold is not None and hold.status.value == "captured"
    assert hold.amount == Money(500, "USD")


async def test_esim_charges_are_reconciled_with_the_esim_provider_only(
        harness: BotHarness, clock: ManualClock) -> None:
    await fund(harness, 700)
    await buy(harness)
    await provider(harness).order(ONE_GB, "not-ours")  # someone else's use of our account
    carrier, esims = harness.components.reconciliations
    day = clock.now().astimezone(harness.components.settings.locale.zone).date()

    top_ups = await carrier.reconcile(day)
    assert (top_ups.ours, top_ups.differences) == (0, [])  # not looked for at the carrier
    orders = await esims.reconcile(day)
    assert (orders.backend, orders.ours, orders.theirs) == ("esim:simulated", 1, 2)
    assert [(d.kind, d.reference) for d in orders.differences] == [
        ("unknown_to_us", "not-ours")]


async def bought_line(harness: BotHarness, clock: ManualClock) -> LineRecord:
    await fund(harness, 2000)
    await buy(harness)
    await deliver(harness)  # the QR code
    [line] = await esim_lines(harness)
    assert line.iccid is not None
    await provider(harness).install(line.iccid)
    await provider(harness).use_data(line.iccid, 700)  # 324 MB of 1 GB left
    async with harness.components.db.write() as conn:
        await LinesRepository(conn, harness.components.cipher).set_warnings(
            line.id, balance_minor=None, data_mb=500, now=clock.now())
    return line


async def test_an_esim_is_read_from_its_provider_and_warned_about_low_data(
        harness: BotHarness, clock: ManualClock) -> None:
    line = await bought_line(harness, clock)
    clock.advance(timedelta(minutes=16))
    await harness.components.scheduler.check_lines()

    async with harness.components.db.read() as conn:
        reading = await ReadingsRepository(conn).latest(line.id)
    assert reading is not None and reading.source.value == "provider"
    assert reading.data_mb is not None and reading.data_mb <= 324
    assert reading.validity_end is not None and reading.balance is None
    await deliver(harness)
    [warning] = [p for p in harness.api.sent() if "Data left" in str(p["text"])]
    assert "read from Simulated eSIM" in str(warning["text"])
    labels = [text for text, _ in buttons(warning)]
    assert not any(label.startswith("⚡ Top up $") for label in labels)  # an eSIM: no airtime


async def test_an_esim_rule_needs_no_code_and_buys_its_top_up(
        harness: BotHarness, clock: ManualClock) -> None:
    line = await bought_line(harness, clock)
    rules = harness.components.rules
    await harness.components.catalog.warm()
    spec = RuleSpec(trigger=Trigger.DATA_BELOW, monthly_cap=Money(2000, "USD"),
                    approval=Approval.AUTO, product_id="kh-7d-1gb-topup", threshold_mb=500)
    airtime = dataclasses.replace(spec, product_id=None, amount=Money(500, "USD"))
    assert not isinstance(await rules.propose(OWNER, line.id, airtime, "code {code}"),
                          Proposed)  # an eSIM takes its own top-ups, not airtime
    proposed = await rules.propose(OWNER, line.id, spec, "code {code}")
    assert isinstance(proposed, Proposed) and proposed.code is None  # on at once
    assert proposed.rule.status.value == "active" and harness.sms.sent == []

    clock.advance(timedelta(minutes=16))
    await harness.components.scheduler.check_lines()
    await harness.components.charging.process_due()

    assert await charge_states(harness) == [ChargeState.SUCCEEDED, ChargeState.SUCCEEDED]
    assert line.iccid is not None
    usage = await provider(harness).usage(line.iccid)
    assert usage.total_mb == 2048  # the 1 GB top-up arrived on the eSIM
    assert await wallet(harness) == Money(1000, "USD")  # $5 eSIM + $5 top-up


async def test_keep_my_esim_alive_buys_its_plan_before_it_expires(
        harness: BotHarness, clock: ManualClock) -> None:
    line = await bought_line(harness, clock)
    assert line.iccid is not None
    c = harness.components
    await c.catalog.warm()
    assert await c.lines.choose_plan(OWNER, line.id, "kh-7d-1gb-topup") is not None
    spec = RuleSpec(trigger=Trigger.KEEP_ALIVE, monthly_cap=Money(2000, "USD"),
                    approval=Approval.AUTO, days_before=2)
    proposed = await c.rules.propose(OWNER, line.id, spec, "code {code}")
    assert isinstance(proposed, Proposed) and proposed.code is None
    expires = (await provider(harness).usage(line.iccid)).expires_at
    assert expires is not None

    clock.advance(timedelta(days=2))  # 5 days left: nothing yet
    await c.scheduler.check_lines()
    await c.charging.process_due()
    assert await charge_states(harness) == [ChargeState.SUCCEEDED]

    clock.set(expires - timedelta(days=1, hours=12))  # within the two days before
    await c.scheduler.check_lines()
    await c.charging.process_due()
    assert await charge_states(harness) == [ChargeState.SUCCEEDED, ChargeState.SUCCEEDED]
    after = await provider(harness).usage(line.iccid)
    assert after.expires_at == expires + timedelta(days=7)


async def test_a_shop_the_provider_cannot_fill_says_so(
        harness: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> list[object]:
        raise GatewayTimeout("packages timed out")

    monkeypatch.setattr(provider(harness), "catalog", down)
    await harness.send(text_update("/esim"))
    assert harness.api.texts(OWNER)[-1] == (
        "No eSIMs can be bought at the moment. Please try again later.")


async def test_autorecharge_for_an_esim_offers_its_plan_and_needs_no_code(
        harness: BotHarness) -> None:
    await fund(harness, 2000)
    await buy(harness)
    [line] = await esim_lines(harness)
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    # The wizard edits the list's message in place, from its first step to its end.
    assert "choose it first in /lines" in harness.api.sent("editMessageText")[-1]["text"]

    await harness.components.catalog.warm()
    assert await harness.components.lines.choose_plan(OWNER, line.id, "kh-7d-1gb-topup")
    await harness.send(text_update("/autorecharge"))
    await harness.send(callback_update("v1:arn:new"))
    asked = harness.api.sent("editMessageText")[-1]
    assert [text for text, _ in buttons(asked)] == ["My plan: 1 GB - 7 Days",  # no airtime
                                                    "✖️ Cancel"]
    await harness.send(callback_update("v1:arb:plan"))
    await harness.send(callback_update("v1:arw:alive"))
    await harness.send(text_update("3"))
    await harness.send(text_update("20"))
    await harness.send(callback_update("v1:arp:auto"))
    await harness.send(callback_update("v1:arc:ok"))

    assert harness.api.sent("editMessageText")[-1]["text"].endswith("Auto-recharge is on.")
    assert harness.sms.sent == []


async def test_an_esim_about_to_expire_is_warned_as_an_esim(
        harness: BotHarness, clock: ManualClock) -> None:
    line = await bought_line(harness, clock)
    assert line.iccid is not None
    expires = (await provider(harness).usage(line.iccid)).expires_at
    assert expires is not None
    clock.set(expires - timedelta(days=2))
    await harness.components.scheduler.check_lines()
    for _ in range(3):  # one message a chat at a time: the low-data warning goes first
        await deliver(harness)
        clock.advance(timedelta(seconds=5))

    [warned] = [t for t in harness.api.texts(OWNER) if "expires" in t]
    assert f"{line.label}: this eSIM expires" in warned
    assert "keep the number" not in warned and "read from Simulated eSIM" in warned
