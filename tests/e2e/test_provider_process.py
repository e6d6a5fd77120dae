"""A real provider end to end: the `topup-bot run` process with CARRIER_BACKEND=reloadly,
pointed at our Reloadly fake (real HTTP on 127.0.0.1), and a user on our Bot API test
server. The user binds a line, the operator credits the wallet, the user tops the line up
from its card and approves; Reloadly makes exactly one top-up under the charge's reference
and the receipt names its transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.domain.references import masked_reference
from tests.e2e.deployment import UNTHROTTLED, Chat, Deployment, bind_cellcard
from tests.fakes import reloadly

USER_ID = 2101


@pytest.fixture
def fake() -> Iterator[reloadly.FakeReloadly]:
    with reloadly.FakeReloadly() as server:
        yield server


def provider_env(fake: reloadly.FakeReloadly) -> dict[str, str]:
    return {"CARRIER_BACKEND": "reloadly", "RELOADLY_CLIENT_ID": fake.client_id,
            "RELOADLY_CLIENT_SECRET": fake.client_secret, "RELOADLY_SANDBOX": "true",
            "RELOADLY_AUTH_URL": fake.base_url, "RELOADLY_API_URL": fake.base_url}


@UNTHROTTLED
def test_bind_approve_and_a_receipt_with_reloadlys_transaction(
        deployment: Deployment, fake: reloadly.FakeReloadly) -> None:
    deployment.start(env=provider_env(fake))
    chat = Chat(deployment, deployment.server.user(USER_ID, "Sokha"))
    bind_cellcard(chat)
    credited = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 9")
    assert credited.returncode == 0, credited.stderr
    chat.next("Receipt: $10.00 added to your wallet")

    listing = chat.say("/lines", "Your lines")
    card = chat.tap(listing, listing.button_texts[0], "Plan:", edits=True)
    assert chat.tap_answer(card, "⚡ Top up $5.00") == \
        "I sent you a request to approve: tap Approve on it."
    request = chat.next("Top up ")
    chat.user.wait_for_answer(chat.user.press(request, button_text="✅ Approve"))
    receipt = chat.next("✅ Topped up", timeout=30)

    [(state, reference, tx_enc)] = deployment.query(
        "SELECT state, reference, provider_tx_enc FROM charges")
    assert state == "succeeded"
    [made] = [t for t in fake.transactions() if t.custom_identifier == reference]
    assert made.status == "SUCCESSFUL" and made.phone.endswith("12345678")
    assert deployment.cipher().decrypt(tx_enc) == str(made.id)
    assert f"Carrier's transaction: {masked_reference(str(made.id))}" in receipt.content
    assert "$5.00" in receipt.content and "Wallet: $5.00" in receipt.content
    # One token for the whole run; every top-ups call carried the versioned Accept header.
    assert fake.issued_tokens == 1
    assert all(r.headers.get("accept") == reloadly.TOPUPS_MEDIA_TYPE
               for r in fake.requests if r.path != "/oauth/token")
    deployment.assert_healthy()
