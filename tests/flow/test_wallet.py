"""/wallet through the real Application: offer amounts, send a Stars invoice, answer the
pre-checkout query, credit a successful payment once; forged payloads refused; the admins'
/credit and /refund, and nobody else's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.domain.money import Money
from bot.services.wallet import WalletService
from handlers import callback_data as cb
from handlers.common import Ui
from handlers.outbox import render
from handlers.wallet import PAYMENT_GROUP, WalletFlow
from storage.tables import ledger_entries, notifications
from storage.wallet import WalletRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import deliver
from tests.flow.recording import (
    callback_update,
    pre_checkout_update,
    refunded_payment_update,
    serve_invoices,
    successful_payment_update,
    text_update,
)
from tests.flow.test_drafts_at_rest import database_bytes

USER = 555
ADMIN = 900
STRANGER = 777
UNKNOWN_COMMAND = "I don't know that command"


@pytest.fixture(autouse=True)
def _payment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the harness reads settings: Stars at 50 per dollar, one admin chat."""
    monkeypatch.setenv("ADMIN_CHAT_IDS", str(ADMIN))
    monkeypatch.setenv("STARS_PER_USD", "50")
    for name in ("PAYMENTS_PROVIDER_TOKEN", "PAYMENTS_CURRENCY", "DEFAULT_CURRENCY"):
        monkeypatch.delenv(name, raising=False)


def _registered(app: Any) -> WalletFlow | None:
    for handlers in app.handlers.values():
        for handler in handlers:
            owner = getattr(getattr(handler, "callback", None), "__self__", None)
            if isinstance(owner, WalletFlow):
                return owner
    return None


@pytest.fixture
async def wallet(harness: BotHarness) -> WalletService:
    """The wallet flow as bot/app.py registers it: payments in their own group ahead of the
    conversations, the rest in group 0 before the last-resort handlers. Until app.py does
    that itself, it is added here the same way."""
    serve_invoices(harness.api)
    app = harness.app
    flow = _registered(app)
    if flow is None:
        components = harness.components
        service = WalletService(components.db, components.clock,
                                components.settings.payments, components.cipher,
                                currency=components.settings.locale.default_currency)
        flow = WalletFlow(components.users, components.i18n, service,
                          admin_chat_ids=components.settings.telegram.admin_chat_ids)
        last_resort = app.handlers[0][-4:]  # StartHandlers.last_resort(), added last
        assert [h.callback.__name__ for h in last_resort] == [  # type: ignore[attr-defined]
            "nothing_to_cancel", "unknown", "stray", "stale_button"]
        for handler in last_resort:
            app.remove_handler(handler)
        app.add_handlers(flow.payment_handlers(), group=PAYMENT_GROUP)
        app.add_handlers(flow.handlers())
        app.add_handlers(last_resort)
    flow._retry_delays = (0, 0)  # faults are retried at once in tests
    return flow._wallet


async def entries(harness: BotHarness, kind: str | None = None) -> int:
    query = select(func.count()).select_from(ledger_entries)
    if kind is not None:
        query = query.where(ledger_entries.c.kind == kind)
    async with harness.components.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def outbox(harness: BotHarness) -> list[dict[str, Any]]:
    async with harness.components.db.read() as conn:
        rows = await conn.execute(select(notifications).order_by(notifications.c.id))
        return [dict(row) for row in rows.mappings()]


async def balance(harness: BotHarness, user_id: int = USER) -> Money:
    async with harness.components.db.read() as conn:
        return await WalletRepository(conn).available(user_id, "USD")


def invoice_of(harness: BotHarness) -> dict[str, Any]:
    [invoice] = harness.api.sent("sendInvoice")
    return invoice


def prices_of(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    prices = invoice["prices"]
    return list(json.loads(prices) if isinstance(prices, str) else prices)


def pre_checkout_answers(harness: BotHarness) -> list[dict[str, Any]]:
    return harness.api.sent("answerPreCheckoutQuery")


async def buy(harness: BotHarness, dollars: int = 10) -> dict[str, Any]:
    """/wallet, press an amount: the invoice sent."""
    await harness.send(text_update("/wallet"))
    await harness.send(callback_update(cb.encode("wf", dollars * 100)))
    return invoice_of(harness)


async def test_wallet_shows_an_empty_balance_and_the_amounts(harness: BotHarness,
                                                             wallet: WalletService) -> None:
    await harness.send(text_update("/wallet"))

    [shown] = harness.api.sent()
    assert "Available: $0.00" in shown["text"]
    assert "No movements yet" in shown["text"]
    assert "Telegram Stars" in shown["text"]
    markup = shown["reply_markup"]
    markup = json.loads(markup) if isinstance(markup, str) else markup
    buttons = [b for row in markup["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["+ $5.00", "+ $10.00", "+ $20.00", "+ $50.00",
                                            "🧾 History"]
    assert [b["callback_data"] for b in buttons] == [
        "v1:wf:500", "v1:wf:1000", "v1:wf:2000", "v1:wf:5000", "v1:hi:all:0"]


async def test_an_amount_sends_a_stars_invoice(harness: BotHarness,
                                               wallet: WalletService) -> None:
    invoice = await buy(harness, 10)

    assert invoice["currency"] == "XTR"
    assert [int(p["amount"]) for p in prices_of(invoice)] == [500]  # $10 x 50 Stars
    assert re.fullmatch(r"w2:[0-9]+:[0-9a-f]{16}", str(invoice["payload"]))
    assert not invoice.get("provider_token")
    assert int(invoice["chat_id"]) == USER
    assert harness.api.sent("answerCallbackQuery")


async def test_paying_credits_once_and_a_replay_credits_nothing(
        harness: BotHarness, wallet: WalletService) -> None:
    invoice = await buy(harness, 10)
    payload = str(invoice["payload"])

    await harness.send(pre_checkout_update(payload, total_amount=500))
    [answer] = pre_checkout_answers(harness)
    assert answer["ok"] is True

    before = len(harness.api.texts())
    paid = successful_payment_update(payload, total_amount=500, charge_id="stxTEST-1")
    await harness.send(paid)
    await deliver(harness)
    texts = harness.api.texts()[before:]
    # One message: the receipt (no "payment received" beside it, no "I did not understand").
    assert len(texts) == 1
    assert "Receipt: $10.00 added to your wallet" in texts[0]
    assert await balance(harness) == Money(1000, "USD")

    await harness.send(paid)  # Telegram delivers the same update again
    await harness.send(successful_payment_update(payload, total_amount=500,
                                                 charge_id="stxTEST-1"))
    await deliver(harness)
    assert len(harness.api.texts()) == before + 1  # said nothing more
    assert await balance(harness) == Money(1000, "USD")
    assert await entries(harness) == 1
    [receipt] = await outbox(harness)
    assert receipt["kind"] == "wallet_credit"

    await harness.send(text_update("/wallet"))
    shown = harness.api.texts()[-1]
    assert "Available: $10.00" in shown
    assert "+$10.00" in shown
    assert "Paid through Telegram" in shown


async def test_the_receipt_renders_from_its_plain_params(harness: BotHarness,
                                                         wallet: WalletService) -> None:
    payload = str((await buy(harness, 5))["payload"])
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxTEST-r"))
    [receipt] = await outbox(harness)
    i18n = harness.components.i18n
    ui = Ui(language="en", _=i18n.gettext("en"), locale="en",
            zone=harness.components.settings.locale.zone, now=datetime.now(UTC))

    text, markup = render(receipt["kind"], ui, json.loads(json.dumps(receipt["params"])))

    assert "$5.00 added to your wallet" in text
    assert "250 ⭐" in text
    assert "Telegram payment: …ST-r" in text  # its end only: the outbox is not encrypted
    assert "Available after this: $5.00" in text
    assert markup is None


@pytest.mark.parametrize("change", ["invoice", "mac", "old_format", "junk"])
async def test_a_forged_payload_is_refused_at_pre_checkout(
        harness: BotHarness, wallet: WalletService, change: str) -> None:
    payload = str((await buy(harness, 5))["payload"])
    version, invoice_id, mac = payload.split(":")
    forged = {
        "invoice": f"{version}:{int(invoice_id) + 1}:{mac}",  # another invoice, same mac
        "mac": f"{version}:{invoice_id}:{'f' * 16}",
        "old_format": f"w1:{USER}:100000:USD:{mac}",
        "junk": "wallet:555:5000",
    }[change]

    await harness.send(pre_checkout_update(forged, total_amount=250))

    [answer] = pre_checkout_answers(harness)
    assert answer["ok"] is False
    assert "not issued by this bot" in answer["error_message"]


async def test_someone_elses_invoice_is_refused_at_pre_checkout(
        harness: BotHarness, wallet: WalletService) -> None:
    payload = str((await buy(harness, 5))["payload"])

    await harness.send(pre_checkout_update(payload, total_amount=250, user_id=STRANGER))
    await harness.send(pre_checkout_update(payload, total_amount=1))

    refused, cheap = pre_checkout_answers(harness)
    assert refused["ok"] is False and "someone else" in refused["error_message"]
    assert cheap["ok"] is False and "price has changed" in cheap["error_message"]


async def test_the_pre_checkout_refusal_speaks_the_users_language(
        harness: BotHarness, wallet: WalletService) -> None:
    await harness.send(pre_checkout_update("forged", total_amount=250, language="km"))

    [answer] = pre_checkout_answers(harness)
    assert answer["ok"] is False
    assert answer["error_message"]


async def test_a_forged_successful_payment_credits_nothing(
        harness: BotHarness, wallet: WalletService) -> None:
    await harness.send(successful_payment_update("w1:555:5000:USD:0123456789abcdef",
                                                 total_amount=2500, charge_id="stxFORGED"))

    said = harness.api.texts()[-1]
    assert "does not match the invoice" in said and "returning it to you" in said
    [refund] = harness.api.sent("refundStarPayment")
    assert refund["telegram_payment_charge_id"] == "stxFORGED"
    assert int(refund["user_id"]) == USER
    assert await entries(harness) == 0
    # Nothing for the payer's wallet; the admins are told of the dispute.
    assert {(n["kind"], n["chat_id"]) for n in await outbox(harness)} == {
        ("payment_disputed", ADMIN)}


@pytest.mark.parametrize(("currency", "total", "refunded"),
                         [("XTR", 1, True), ("EUR", 250, False), ("XTR", -5, False)])
async def test_a_payment_that_is_not_the_invoices_price_is_disputed_not_credited(
        harness: BotHarness, wallet: WalletService, currency: str, total: int,
        refunded: bool) -> None:
    payload = str((await buy(harness, 5))["payload"])

    await harness.send(successful_payment_update(payload, total_amount=total,
                                                 currency=currency, charge_id="stxCHEAP"))

    said = harness.api.texts()[-1]
    assert "does not match the invoice" in said
    assert await balance(harness) == Money(0, "USD")
    refunds = [r["telegram_payment_charge_id"] for r in harness.api.sent("refundStarPayment")]
    [alert] = await outbox(harness)
    assert (alert["kind"], alert["chat_id"]) == ("payment_disputed", ADMIN)
    if refunded:  # Stars go back at once
        assert refunds == ["stxCHEAP"] and "returning it to you" in said
    else:  # not Stars, or not a refundable amount: held, and the admin is told so
        assert refunds == [] and "stxCHEAP" in said
    assert alert["params"]["refunding"] is refunded


async def test_a_second_charge_for_a_paid_invoice_is_refunded(
        harness: BotHarness, wallet: WalletService) -> None:
    payload = str((await buy(harness, 5))["payload"])
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxFIRST"))
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxSECOND"))

    assert await balance(harness) == Money(500, "USD")
    assert [r["telegram_payment_charge_id"]
            for r in harness.api.sent("refundStarPayment")] == ["stxSECOND"]
    assert [n["kind"] for n in await outbox(harness)] == ["wallet_credit", "payment_disputed"]


async def test_a_passing_fault_while_crediting_is_retried(
        harness: BotHarness, wallet: WalletService, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = str((await buy(harness, 5))["payload"])
    credit = wallet.credit_telegram_payment
    faults = [ConnectionResetError("database restarted")]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if faults:
            raise faults.pop()
        return await credit(*args, **kwargs)

    monkeypatch.setattr(wallet, "credit_telegram_payment", flaky)
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxFLAKY"))
    await deliver(harness)

    assert "Receipt: $5.00 added to your wallet" in harness.api.texts()[-1]
    assert await balance(harness) == Money(500, "USD")


async def test_a_payment_that_cannot_be_recorded_is_reported_not_lost_silently(
        harness: BotHarness, wallet: WalletService, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    payload = str((await buy(harness, 5))["payload"])

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("database gone")

    monkeypatch.setattr(wallet, "credit_telegram_payment", broken)
    before = len(harness.api.texts())
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxBROKEN"))

    [said] = harness.api.texts()[before:]
    assert "could not add it to your wallet yet" in said and "stxBROKEN" in said
    assert any(r.levelname == "CRITICAL" and "stxBROKEN" in r.getMessage()
               for r in caplog.records)
    assert await entries(harness) == 0


async def test_a_payment_in_the_middle_of_a_flow_is_credited_and_the_flow_goes_on(
        harness: BotHarness, wallet: WalletService) -> None:
    payload = str((await buy(harness, 5))["payload"])
    await harness.send(text_update("/bind"))  # now waiting for a phone number
    before = len(harness.api.texts())

    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxMID"))
    await deliver(harness)

    assert len(harness.api.texts()) == before + 1  # the receipt only
    assert "Receipt: $5.00 added to your wallet" in harness.api.texts()[-1]
    assert await balance(harness) == Money(500, "USD")
    await harness.send(text_update("012345678"))  # the binding flow still waits for it
    assert "SMS" in harness.api.texts()[-1]


async def test_a_stale_or_forged_amount_button_sends_no_invoice(
        harness: BotHarness, wallet: WalletService) -> None:
    await harness.send(callback_update(cb.encode("wf", 123)))
    await harness.send(callback_update("v1:wf:99999999"))

    assert harness.api.sent("sendInvoice") == []
    answers = harness.api.sent("answerCallbackQuery")
    assert len(answers) == 2
    assert all("no longer active" in str(a.get("text")) for a in answers)


# --- admins -------------------------------------------------------------------------------


async def test_an_admin_credits_cash_once_per_reference(harness: BotHarness,
                                                        wallet: WalletService) -> None:
    await harness.send(text_update("/credit 555 12.50 cash receipt 17", user_id=ADMIN))

    assert "Credited $12.50 to user 555 (reference cash receipt 17)" in harness.api.texts()[-1]
    assert await balance(harness) == Money(1250, "USD")
    [receipt] = await outbox(harness)
    assert (receipt["kind"], receipt["user_id"], receipt["chat_id"]) == (
        "wallet_credit", USER, USER)

    await harness.send(text_update("/credit 555 12.50 cash receipt 17", user_id=ADMIN))
    assert "Already done" in harness.api.texts()[-1]
    await harness.send(text_update("/credit 777 3 cash receipt 17", user_id=ADMIN))
    assert "was already used" in harness.api.texts()[-1]
    assert await balance(harness) == Money(1250, "USD")
    assert await balance(harness, STRANGER) == Money(0, "USD")
    assert len(await outbox(harness)) == 1


@pytest.mark.parametrize(("command", "expected"), [
    ("/credit", "Usage: /credit"),
    ("/credit 555", "Usage: /credit"),
    ("/credit abc 10 ref", "Usage: /credit"),
    ("/credit 555 ten ref", "is not an amount"),
    ("/credit 555 -5 ref", "is not an amount"),
    ("/credit 555 0 ref", "is not an amount"),
    ("/credit 555 5000 ref", "is not an amount"),  # above the $1,000 limit
    ("/credit 555 10 " + "x" * 80, "1 to 64 ordinary characters"),
])
async def test_bad_admin_credits_are_explained(harness: BotHarness, wallet: WalletService,
                                               command: str, expected: str) -> None:
    await harness.send(text_update(command, user_id=ADMIN))

    assert expected in harness.api.texts()[-1]
    assert await entries(harness) == 0


async def test_only_admins_can_credit(harness: BotHarness, wallet: WalletService) -> None:
    await harness.send(text_update("/credit 555 50 my-own-money", user_id=USER))
    await harness.send(text_update("/credit 777 50 for-a-friend", user_id=STRANGER))

    texts = harness.api.texts()
    assert len(texts) == 2
    assert all(UNKNOWN_COMMAND in text for text in texts)
    assert await entries(harness) == 0
    assert await outbox(harness) == []


async def test_an_admin_refunds_stars_once(harness: BotHarness, wallet: WalletService) -> None:
    payload = str((await buy(harness, 10))["payload"])
    await harness.send(successful_payment_update(payload, total_amount=500,
                                                 charge_id="stxREFUND"))

    await harness.send(text_update("/refund stxREFUND", user_id=STRANGER))
    assert UNKNOWN_COMMAND in harness.api.texts()[-1]
    assert harness.api.sent("refundStarPayment") == []

    await harness.send(text_update("/refund stxREFUND", user_id=ADMIN))
    assert "Refunded 500 ⭐ to user 555" in harness.api.texts()[-1]
    [call] = harness.api.sent("refundStarPayment")
    assert (int(call["user_id"]), call["telegram_payment_charge_id"]) == (USER, "stxREFUND")
    assert await balance(harness) == Money(0, "USD")

    await harness.send(text_update("/refund stxREFUND", user_id=ADMIN))
    assert "refunded before" in harness.api.texts()[-1]
    # Telegram's own notice of the refund changes nothing more and gets no reply
    before = len(harness.api.texts())
    await harness.send(refunded_payment_update(payload, total_amount=500,
                                               charge_id="stxREFUND"))
    assert len(harness.api.texts()) == before
    assert len(harness.api.sent("refundStarPayment")) == 1
    assert await entries(harness, "refund") == 1
    assert [n["kind"] for n in await outbox(harness)] == ["wallet_credit", "wallet_refund"]


async def test_no_refund_of_money_already_spent(harness: BotHarness,
                                                wallet: WalletService) -> None:
    payload = str((await buy(harness, 10))["payload"])
    await harness.send(successful_payment_update(payload, total_amount=500,
                                                 charge_id="stxSPENT"))
    async with harness.components.db.write() as conn:  # as if $6 were held for a top-up
        await conn.execute(ledger_entries.insert().values(
            user_id=USER, currency="USD", amount_minor=-600, kind="hold",
            created_at=harness.components.clock.now()))

    await harness.send(text_update("/refund stxSPENT", user_id=ADMIN))

    assert "Not refunded" in harness.api.texts()[-1]
    assert harness.api.sent("refundStarPayment") == []


async def test_telegrams_refund_notice_is_recorded(harness: BotHarness,
                                                   wallet: WalletService) -> None:
    payload = str((await buy(harness, 5))["payload"])
    await harness.send(successful_payment_update(payload, total_amount=250,
                                                 charge_id="stxOUTSIDE"))
    before = len(harness.api.texts())

    await harness.send(refunded_payment_update(payload, total_amount=250,
                                               charge_id="stxOUTSIDE"))

    assert len(harness.api.texts()) == before  # no "I did not understand that"
    assert await balance(harness) == Money(0, "USD")
    assert await entries(harness, "refund") == 1


async def test_payment_references_are_not_readable_in_the_database_files(
        harness: BotHarness, wallet: WalletService) -> None:
    """Issue 12: charge ids, provider charge ids and operators' references are payment
    references; the raw SQLite file and its WAL must not hold them in plain text."""
    payload = str((await buy(harness, 5))["payload"])
    await harness.send(successful_payment_update(
        payload, total_amount=250, charge_id="stxPAIDREF8812", provider_charge_id="PRV-55017"))
    await harness.send(successful_payment_update(
        payload, total_amount=250, charge_id="stxDISPUTED4471", provider_charge_id="PRV-66028"))
    await harness.send(text_update("/credit 555 3 BANKTX-90210", user_id=ADMIN))
    assert await balance(harness) == Money(800, "USD")

    await harness.send(text_update("/wallet"))  # the user still sees their own reference
    assert "BANKTX-90210" in harness.api.texts()[-1]
    await harness.app.update_persistence()

    files = database_bytes(harness)
    assert "topup.db-wal" in files
    for name, content in files.items():
        for secret in ("stxPAIDREF8812", "PRV-55017", "stxDISPUTED4471", "PRV-66028",
                       "BANKTX-90210"):
            assert secret.encode() not in content, f"{secret!r} readable in {name}"
