"""KHQR end to end: the `topup-bot run` process with Bakong KHQR on, pointed at our Bakong
fake (real HTTP on 127.0.0.1), and a user on our Bot API test server. The user asks for a
$5 KHQR in /wallet, gets the QR as a picture, taps "I have paid" too early, then pays it
from a bank app (the fake, given the payload the picture decodes to); the poller finds the
payment, the wallet is credited once, the receipt arrives and the picture is marked paid."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import zxingcpp
from PIL import Image

from tests.e2e.deployment import UNTHROTTLED, Chat, Deployment
from tests.fakes.bakong import FakeBakong

USER_ID = 2301


@pytest.fixture
def fake() -> Iterator[FakeBakong]:
    with FakeBakong() as server:
        yield server


@UNTHROTTLED
def test_pay_a_khqr_from_a_bank_app_and_get_the_receipt(deployment: Deployment,
                                                         fake: FakeBakong) -> None:
    deployment.start(env={"BAKONG_ACCOUNT_ID": "topupbot@aclb", "BAKONG_TOKEN": fake.token,
                          "BAKONG_MERCHANT_NAME": "TopUp Bot", "BAKONG_API_URL": fake.api_url,
                          "KHQR_POLL_SECONDS": "1"})
    chat = Chat(deployment, deployment.server.user(USER_ID, "Sokha"))
    wallet = chat.say("/wallet", "Your wallet")
    amounts = chat.tap(wallet, "🏦 Pay with KHQR (any Cambodian bank app)",
                       "How much do you want to add?", edits=True)
    chat.tap(amounts, "+ $5.00", "Your KHQR for $5.00 is on its way", edits=True)
    qr = chat.next("KHQR: pay $5.00 to TopUp Bot", timeout=15)
    assert "Expires in 15 minutes" in qr.content
    assert qr.data is not None
    [payload] = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.data)))]

    early = chat.tap_answer(qr, "✅ I have paid")
    assert early is not None and early.startswith("Not arrived yet")

    paid = fake.pay(payload, from_account="sokha@abaa")  # scanned and paid in a bank app
    receipt = chat.next("Receipt: $5.00 added to your wallet", timeout=20)
    assert "from ABAA" in receipt.content and paid.hash[:8] in receipt.content
    marked = chat.next("is paid", edits=True, timeout=10)
    assert marked.message_id == qr.message_id
    assert fake.calls("/v1/check_transaction_by_md5_list") >= 1

    [(source, amount)] = deployment.query("SELECT source, amount_minor FROM wallet_payments")
    assert (source, amount) == ("khqr", 500)
    [(state, differs)] = deployment.query("SELECT state, amount_differs FROM khqr_invoices")
    assert state == "paid" and not differs
    deployment.assert_healthy()
