"""An eSIM end to end: the `topup-bot run` process with ESIM_BACKEND=airalo, pointed at our
Airalo fake (real HTTP on 127.0.0.1), and a user on our Bot API test server. The user with
no line opens the shop from /start, the operator credits the wallet, the user buys the
cheapest Cambodian eSIM (tapping Confirm twice); Airalo makes exactly one order under the
charge's reference, and the QR code the user receives decodes to that eSIM's install code."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import zxingcpp
from PIL import Image

from tests.e2e.deployment import UNTHROTTLED, Chat, Deployment
from tests.fakes import airalo

USER_ID = 2201


@pytest.fixture
def fake() -> Iterator[airalo.FakeAiralo]:
    with airalo.FakeAiralo() as server:
        yield server


def esim_env(fake: airalo.FakeAiralo) -> dict[str, str]:
    return {"ESIM_BACKEND": "airalo", "AIRALO_CLIENT_ID": fake.client_id,
            "AIRALO_CLIENT_SECRET": fake.client_secret, "AIRALO_API_URL": fake.api_url}


@UNTHROTTLED
def test_buy_an_esim_and_scan_its_qr_code(deployment: Deployment,
                                          fake: airalo.FakeAiralo) -> None:
    deployment.start(env=esim_env(fake))
    chat = Chat(deployment, deployment.server.user(USER_ID, "Sokha"))
    welcome = chat.say("/start", "Hello, Sokha!")
    credited = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 1")
    assert credited.returncode == 0, credited.stderr
    chat.next("Receipt: $10.00 added to your wallet")

    shop = chat.tap(welcome, "🌐 Buy a Cambodian eSIM", "eSIMs for Cambodia", edits=True)
    assert shop.button_texts[0] == "1.0 GB · 7 days · $5.00"
    offer = chat.tap(shop, shop.button_texts[0], "Your wallet: $10.00", edits=True)
    assert "Network in Cambodia: Smart" in offer.content
    first = chat.user.press(offer, button_text="✅ Buy for $5.00")
    second = chat.user.press(offer, button_text="✅ Buy for $5.00")  # a double tap
    chat.user.wait_for_answer(first)
    chat.user.wait_for_answer(second)

    ready = chat.next("Your eSIM is ready", timeout=30)
    [(state, reference)] = deployment.query("SELECT state, reference FROM charges")
    assert state == "succeeded"
    [order] = fake.orders_with_description(reference)
    assert len(fake.orders) == 1  # two taps, one eSIM
    [iccid] = order.iccids
    sim = fake.sim(iccid)
    assert ready.data is not None
    decoded = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(ready.data)))]
    assert decoded == [sim.qrcode]
    assert sim.matching_id in ready.content and airalo.SMDP_ADDRESS in ready.content
    assert "Wallet: $5.00" in ready.content
    # The ICCID is stored encrypted, on a line of the user's with no number.
    [(kind, phone_enc, iccid_enc)] = deployment.query(
        "SELECT kind, phone_enc, iccid_enc FROM lines")
    assert (kind, phone_enc) == ("esim", None)
    assert iccid not in iccid_enc and deployment.cipher().decrypt(iccid_enc) == iccid
    assert fake.issued_tokens == 1
    deployment.assert_healthy()
