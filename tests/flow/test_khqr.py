"""Paying into the wallet with a Bakong KHQR, through the real Application: the QR sent and
decoded, paid once, paid twice, paid late, paid the wrong amount, expired, cancelled, and a
restart in the middle of polling. Bakong is the fake on 127.0.0.1; the adapter is real."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.khqr import parse_payload, payload_md5
from bot.domain.money import Money
from bot.domain.wallet import KhqrState
from bot.services.khqr import KhqrService
from handlers import callback_data as cb
from storage.khqr import KhqrRecord, KhqrRepository
from storage.tables import khqr_invoices, ledger_entries, notifications, wallet_payments
from storage.wallet import WalletRepository
from tests.fakes.bakong import FakeBakong
from tests.flow.conftest import BotHarness, open_harness
from tests.flow.helpers import deliver
from tests.flow.recording import callback_update, text_update

USER, OTHER, ADMIN = 555, 666, 4242
ACCOUNT = "topupbot@aclb"


@pytest.fixture
def bakong(clock: ManualClock) -> Iterator[FakeBakong]:
    with FakeBakong(clock=clock.now) as fake:
        yield fake


def khqr_env(fake: FakeBakong, **extra: str) -> dict[str, str]:
    return {"BAKONG_ACCOUNT_ID": ACCOUNT, "BAKONG_TOKEN": fake.token,
            "BAKONG_MERCHANT_NAME": "TopUp Bot", "BAKONG_API_URL": fake.api_url,
            "ADMIN_CHAT_IDS": str(ADMIN), **extra}


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
                  bakong: FakeBakong) -> AsyncIterator[BotHarness]:
    async with open_harness(tmp_path, clock, monkeypatch, khqr_env(bakong)) as opened:
        yield opened


def service(harness: BotHarness) -> KhqrService:
    assert harness.components.khqr is not None
    return harness.components.khqr


def buttons(params: dict[str, Any]) -> list[tuple[str, str]]:
    markup = params.get("reply_markup")
    if markup is None:
        return []
    rows = markup.inline_keyboard if hasattr(markup, "inline_keyboard") \
        else markup["inline_keyboard"]
    return [(b.text, b.callback_data) if hasattr(b, "text") else (b["text"], b["callback_data"])
            for row in rows for b in row]


def decoded(params: dict[str, Any]) -> str:
    [png] = params["_files"].values()
    [found] = zxingcpp.read_barcodes(Image.open(io.BytesIO(bytes(png))))
    return str(found.text)


async def wallet(harness: BotHarness, currency: str = "USD") -> Money:
    async with harness.components.db.read() as conn:
        return await WalletRepository(conn).available(USER, currency)


async def record(harness: BotHarness, khqr_id: int) -> KhqrRecord:
    async with harness.components.db.read() as conn:
        found = await KhqrRepository(conn, harness.components.cipher).get(khqr_id)
    assert found is not None
    return found


async def count(harness: BotHarness, table: Any) -> int:
    async with harness.components.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def issue(harness: BotHarness, minor: int = 500, user_id: int = USER
                ) -> tuple[int, dict[str, Any]]:
    """The user opens /wallet, taps Pay with KHQR and an amount; the QR is delivered."""
    await harness.send(text_update("/wallet", user_id=user_id))
    assert ("🏦 Pay with KHQR (any Cambodian bank app)", cb.encode("kq")) in \
        buttons(harness.api.sent()[-1])
    await harness.send(callback_update(cb.encode("kq"), user_id=user_id))
    await harness.send(callback_update(cb.encode("ka", minor), user_id=user_id))
    await deliver(harness, rounds=10)
    photo = harness.api.sent("sendPhoto")[-1]
    [(_, paid_data), _cancel] = buttons(photo)
    data = cb.decode(paid_data)
    assert data is not None
    khqr_id = data.int_arg("khqr")
    assert khqr_id is not None
    return khqr_id, photo


async def poll(harness: BotHarness, clock: ManualClock, seconds: float = 6) -> None:
    clock.advance(timedelta(seconds=seconds))
    await service(harness).poll()
    await deliver(harness, rounds=10)


async def test_the_qr_is_a_png_of_the_khqr_with_its_amount_recipient_and_expiry(
        harness: BotHarness) -> None:
    await harness.send(text_update("/wallet"))
    await harness.send(callback_update(cb.encode("kq")))
    amounts = harness.api.sent("editMessageText")[-1]
    assert "Paid to TopUp Bot" in amounts["text"]
    assert ("+ $5.00", cb.encode("ka", 500)) in buttons(amounts)

    khqr_id, photo = await issue(harness)
    payload = decoded(photo)  # a real decoder reads back exactly the KHQR we made
    stored = await record(harness, khqr_id)
    assert payload == stored.payload and payload_md5(payload) == stored.md5
    parsed = parse_payload(payload)
    assert parsed.account_id == ACCOUNT and parsed.amount == Money(500, "USD")
    assert parsed.bill_number == stored.bill_number and parsed.merchant_name == "TopUp Bot"
    assert parsed.expires_at is not None and parsed.created_at is not None
    assert parsed.expires_at - parsed.created_at == timedelta(minutes=15)
    caption = photo["caption"]
    assert "pay <b>$5.00</b> to TopUp Bot" in caption
    assert "Expires in 15 minutes" in caption
    assert photo["parse_mode"] == "HTML"
    assert [text for text, _ in buttons(photo)] == ["✅ I have paid", "✖ Cancel"]


async def test_a_payment_is_found_by_the_poller_and_credited_once_with_a_receipt(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    khqr_id, photo = await issue(harness)
    await poll(harness, clock)
    assert await wallet(harness) == Money(0, "USD")

    paid = bakong.pay(decoded(photo), from_account="sokha@abaa")
    await poll(harness, clock)
    assert await wallet(harness) == Money(500, "USD")
    receipt = harness.api.texts(USER)[-1]
    assert "Receipt: $5.00 added to your wallet" in receipt
    assert "from ABAA" in receipt and f"Bakong transaction: {paid.hash[:8]}" in receipt
    assert "Available after this: $5.00" in receipt
    [edit] = harness.api.sent("editMessageCaption")
    assert edit["message_id"] is not None and "is paid" in edit["caption"]
    assert edit.get("reply_markup") is None  # the buttons are gone

    for _ in range(3):  # later rounds ask nothing more of a paid QR, and credit nothing
        await poll(harness, clock, seconds=60)
    assert await wallet(harness) == Money(500, "USD")
    assert await count(harness, wallet_payments) == 1
    stored = await record(harness, khqr_id)
    assert stored.state is KhqrState.PAID and not stored.polled


async def test_i_have_paid_checks_at_once_and_a_second_tap_credits_nothing_more(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    khqr_id, photo = await issue(harness)
    await harness.send(callback_update(cb.encode("kp", khqr_id)))
    answer = harness.api.sent("answerCallbackQuery")[-1]
    assert answer["text"].startswith("Not arrived yet. I keep checking until")

    bakong.pay(decoded(photo))
    clock.advance(timedelta(seconds=4))
    asked_before = bakong.calls("/v1/check_transaction_by_md5")
    await harness.send(callback_update(cb.encode("kp", khqr_id)))
    assert bakong.calls("/v1/check_transaction_by_md5") == asked_before + 1
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == \
        "✅ Paid: $5.00 added to your wallet."
    assert await wallet(harness) == Money(500, "USD")

    await harness.send(callback_update(cb.encode("kp", khqr_id)))
    assert "paid already" in harness.api.sent("answerCallbackQuery")[-1]["text"]
    await poll(harness, clock)
    assert await wallet(harness) == Money(500, "USD")
    assert await count(harness, ledger_entries) == 1


async def test_a_qr_paid_twice_is_credited_once(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    _, photo = await issue(harness)
    payload = decoded(photo)
    bakong.pay(payload)
    bakong.pay(payload)  # the payer's app sent it again: Bakong finds one by md5
    await poll(harness, clock)
    await poll(harness, clock)
    assert await wallet(harness) == Money(500, "USD")
    assert await count(harness, wallet_payments) == 1
    assert sum("Receipt:" in text for text in harness.api.texts(USER)) == 1


async def test_a_qr_expires_its_message_says_so_and_a_late_payment_is_still_credited(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    khqr_id, photo = await issue(harness)
    await poll(harness, clock, seconds=15 * 60 + 1)
    [expired] = harness.api.sent("editMessageCaption")
    assert "expired at" in expired["caption"] and "make a new one in /wallet" in \
        expired["caption"]
    assert (await record(harness, khqr_id)).state is KhqrState.EXPIRED

    bakong.pay(decoded(photo))  # the bank took its time: the money arrived anyway
    await poll(harness, clock, seconds=61)
    assert await wallet(harness) == Money(500, "USD")
    receipt = harness.api.texts(USER)[-1]
    assert "This KHQR had expired, but the money arrived, so it was added." in receipt
    assert "is paid" in harness.api.sent("editMessageCaption")[-1]["caption"]


async def test_polling_stops_after_the_grace_period(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    khqr_id, _ = await issue(harness)
    clock.advance(timedelta(minutes=15 + 30 + 1))
    for _ in range(3):
        await poll(harness, clock, seconds=60)
    assert not (await record(harness, khqr_id)).polled
    asked = bakong.calls()
    await poll(harness, clock, seconds=600)
    assert bakong.calls() == asked  # no longer asked about
    await harness.send(callback_update(cb.encode("kp", khqr_id)))
    assert "no payment arrived. Make a new one in /wallet." in \
        harness.api.sent("answerCallbackQuery")[-1]["text"]
    assert bakong.calls() == asked


async def test_a_different_amount_is_credited_as_it_arrived_and_the_admins_are_told(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    _, photo = await issue(harness, minor=1000)
    bakong.pay(decoded(photo), amount="7.5")
    await poll(harness, clock)
    assert await wallet(harness) == Money(750, "USD")
    receipt = harness.api.texts(USER)[-1]
    assert "Receipt: $7.50 added to your wallet" in receipt
    assert "The KHQR asked for $10.00; what arrived was added." in receipt
    [admin] = harness.api.texts(ADMIN)
    assert f"of user {USER} asked for $10.00 and was paid $7.50" in admin
    async with harness.components.db.read() as conn:
        assert (await conn.execute(select(khqr_invoices.c.amount_differs))).scalar_one()


async def test_cancel_edits_the_qr_and_a_payment_made_anyway_is_still_credited(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    khqr_id, photo = await issue(harness)
    await harness.send(callback_update(cb.encode("kc", khqr_id)))
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == \
        "Cancelled. Do not pay this KHQR."
    await deliver(harness, rounds=10)
    assert "is cancelled" in harness.api.sent("editMessageCaption")[-1]["caption"]
    await harness.send(callback_update(cb.encode("kc", khqr_id)))  # a second tap: no change
    assert await count(harness, khqr_invoices) == 1

    bakong.pay(decoded(photo))
    await poll(harness, clock)
    assert await wallet(harness) == Money(500, "USD")
    assert "had been cancelled, but the money arrived, so it was added" in \
        harness.api.texts(USER)[-1]


async def test_tampered_and_foreign_buttons_change_nothing(
        harness: BotHarness, bakong: FakeBakong) -> None:
    khqr_id, _ = await issue(harness)
    for data in (cb.encode("kp", 999_999), cb.encode("kc", 999_999), cb.encode("ka", 12_345),
                 "v1:kp:abc"):
        await harness.send(callback_update(data))
        assert harness.api.sent("answerCallbackQuery")[-1]["text"] == \
            "That button is no longer active."
    asked = bakong.calls()
    await harness.send(callback_update(cb.encode("kp", khqr_id), user_id=OTHER))
    await harness.send(callback_update(cb.encode("kc", khqr_id), user_id=OTHER))
    assert harness.api.sent("answerCallbackQuery")[-1]["text"] == \
        "That button is no longer active."
    assert bakong.calls() == asked
    assert (await record(harness, khqr_id)).state is KhqrState.OPEN
    assert await count(harness, khqr_invoices) == 1


async def test_at_most_three_open_qrs_per_user(harness: BotHarness) -> None:
    for _ in range(3):
        await issue(harness)
    await harness.send(callback_update(cb.encode("ka", 500)))
    answer = harness.api.sent("answerCallbackQuery")[-1]
    assert "already have KHQRs waiting to be paid" in answer["text"] and answer["show_alert"]
    assert await count(harness, khqr_invoices) == 3


async def test_a_restart_in_the_middle_of_polling_goes_on_polling(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
        bakong: FakeBakong) -> None:
    async with open_harness(tmp_path, clock, monkeypatch, khqr_env(bakong)) as first:
        khqr_id, photo = await issue(first)
        await poll(first, clock)
        assert (await record(first, khqr_id)).checks >= 1
    bakong.pay(decoded(photo))  # paid while the bot was down
    async with open_harness(tmp_path, clock, monkeypatch, khqr_env(bakong)) as second:
        await poll(second, clock, seconds=10)
        assert await wallet(second) == Money(500, "USD")
        assert "Receipt: $5.00 added to your wallet" in second.api.texts(USER)[-1]
        # The QR's message, sent before the restart, is the one edited.
        [edit] = second.api.sent("editMessageCaption")
        async with second.components.db.read() as conn:
            photo_message = (await conn.execute(select(notifications.c.message_id).where(
                notifications.c.dedupe_key == f"khqr_issued:{khqr_id}"))).scalar_one()
        assert photo_message is not None and int(edit["message_id"]) == photo_message


async def test_riel_qr_for_a_dollar_wallet_shows_the_rate_and_credits_the_dollars(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
        bakong: FakeBakong) -> None:
    env = khqr_env(bakong, KHQR_CURRENCY="KHR", KHR_PER_USD="4100")
    async with open_harness(tmp_path, clock, monkeypatch, env) as harness:
        await harness.send(text_update("/wallet"))
        await harness.send(callback_update(cb.encode("kq")))
        amounts = harness.api.sent("editMessageText")[-1]
        assert "Rate: 4,100៛ for $1.00" in amounts["text"]
        assert ("+ $5.00 (pay 20,500៛)", cb.encode("ka", 500)) in buttons(amounts)
        khqr_id, photo = await issue(harness)
        parsed = parse_payload(decoded(photo))
        assert parsed.amount == Money.of_major(20_500, "KHR")
        assert "$5.00 will be added to your wallet. Rate: 4,100៛ for $1.00." in \
            photo["caption"]
        stored = await record(harness, khqr_id)
        assert stored.khr_per_usd == 4100 and stored.credit == Money(500, "USD")

        bakong.pay(decoded(photo))
        await poll(harness, clock)
        assert await wallet(harness) == Money(500, "USD")
        receipt = harness.api.texts(USER)[-1]
        assert "Paid by KHQR: 20,500៛" in receipt and "Rate: 4,100៛ for $1.00" in receipt


async def test_a_refused_token_tells_the_admins_and_polling_resumes_when_it_is_fixed(
        harness: BotHarness, clock: ManualClock, bakong: FakeBakong) -> None:
    _, photo = await issue(harness)
    bakong.expire_token()
    bakong.pay(decoded(photo))
    await poll(harness, clock)
    assert await wallet(harness) == Money(0, "USD")
    [alert] = harness.api.texts(ADMIN)
    assert "Bakong refuses the KHQR payment checks" in alert and "BAKONG_TOKEN" in alert
    await poll(harness, clock)  # paused: not asked again at once, not told again
    assert len(harness.api.texts(ADMIN)) == 1
