"""Money end to end: the real `topup-bot run` process, an operator's CLI beside it, and a user
on our Bot API test server. The wallet is credited from the command line, the line is topped
up now from its card, the request approved with its button (twice, quickly), and the
receipts arrive in the chat once each."""

from __future__ import annotations

import threading

from tests.e2e.botapi import BotMessage
from tests.e2e.deployment import CELLCARD, UNTHROTTLED, Chat, Deployment, bind_cellcard

USER_ID = 2001


def wallet_balance_minor(deployment: Deployment, user_id: int) -> int:
    (total,), = deployment.query(
        "SELECT COALESCE(SUM(amount_minor), 0) FROM ledger_entries WHERE user_id = ? "
        "AND currency = 'USD'", user_id)
    return int(total)


def open_card(chat: Chat) -> BotMessage:
    listing = chat.say("/lines", "Your lines")
    return chat.tap(listing, listing.button_texts[0], "Plan:", edits=True)


@UNTHROTTLED
def test_credit_top_up_now_approve_twice_and_one_receipt(deployment: Deployment) -> None:
    deployment.start()
    chat = Chat(deployment, deployment.server.user(USER_ID, "Sreymom"))
    bind_cellcard(chat)

    # The operator credits a cash payment; running it again changes nothing.
    first = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 77")
    again = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 77")
    assert first.returncode == 0, first.stderr
    assert "Credited 10.00 USD" in first.stdout
    assert again.returncode == 0 and "Already credited" in again.stdout
    receipt = chat.next("Receipt: $10.00 added to your wallet")
    # Only the reference's end: the outbox keeps no payment reference in plain text.
    assert "reference …77" in receipt.content and "cash 77" not in receipt.content
    assert wallet_balance_minor(deployment, USER_ID) == 1000

    # Top up now from the line card: the request to approve arrives through the outbox.
    card = open_card(chat)
    assert "⚡ Top up $5.00" in card.button_texts
    answer = chat.tap_answer(card, "⚡ Top up $5.00")
    assert answer == "I sent you a request to approve: tap Approve on it."
    request = chat.next("Top up ")
    assert "Amount: $5.00" in request.content and "Wallet: $10.00" in request.content
    assert request.button_texts == ["✅ Approve", "✖️ Decline"]

    # Two taps on Approve before the first is answered: one top-up, one hold, one receipt.
    presses: list[str] = []
    tappers = [threading.Thread(target=lambda: presses.append(
        chat.user.press(request, button_text="✅ Approve"))) for _ in range(2)]
    for tapper in tappers:
        tapper.start()
    for tapper in tappers:
        tapper.join(10)
    for query_id in presses:
        chat.user.wait_for_answer(query_id)
    topped_up = chat.next("✅ Topped up", timeout=15)
    assert "$5.00" in topped_up.content and "Line balance now:" in topped_up.content
    assert "Wallet: $5.00" in topped_up.content

    charges = deployment.query("SELECT state, reference FROM charges")
    assert [state for state, _ in charges] == ["succeeded"]
    reference = charges[0][1]
    assert deployment.query("SELECT COUNT(*) FROM sim_topups WHERE reference = ?",
                            reference) == [(1,)]
    assert deployment.query("SELECT status FROM holds") == [("captured",)]
    assert wallet_balance_minor(deployment, USER_ID) == 500
    edited = chat.user.message(request.message_id)
    assert "Approved" in edited.content or "Already" in edited.content
    assert edited.button_texts == []

    # Nothing more arrives: one receipt per credit and per top-up, sent once each.
    deployment.server.wait_until(
        lambda: not deployment.query(
            "SELECT 1 FROM notifications WHERE status = 'pending'") or None, timeout=10)
    texts = [m.content for m in chat.user.messages()]
    assert sum("Receipt: $10.00" in t for t in texts) == 1
    assert sum(t.startswith("✅ Topped up") for t in texts) == 1
    assert deployment.query(
        "SELECT kind, status FROM notifications ORDER BY id") == [
        ("wallet_credit", "sent"), ("approval_request", "sent"), ("receipt", "sent")]

    # /wallet shows what is left and the movements; the operator sees the charge.
    chat.say("/wallet", "$5.00")
    listed = deployment.cli("charges", "succeeded")
    assert listed.returncode == 0 and reference in listed.stdout
    deployment.assert_healthy()


@UNTHROTTLED
def test_without_funds_nothing_is_submitted_and_the_user_is_told(
        deployment: Deployment) -> None:
    deployment.start()
    chat = Chat(deployment, deployment.server.user(USER_ID + 1, "Vanna"))
    bind_cellcard(chat)

    card = open_card(chat)
    chat.tap_answer(card, "⚡ Top up $2.00")
    request = chat.next("Top up ")
    assert "short" in request.content  # the wallet is empty: the request says so
    chat.user.wait_for_answer(chat.user.press(request, button_text="✅ Approve"))
    chat.next("/wallet")

    assert deployment.query("SELECT state FROM charges") == [("awaiting_approval",)]
    assert deployment.query("SELECT COUNT(*) FROM sim_topups") == [(0,)]
    assert deployment.query("SELECT COUNT(*) FROM holds") == [(0,)]
    deployment.assert_healthy()


def test_a_restart_sends_what_was_queued_and_settles_what_was_submitted(
        deployment: Deployment) -> None:
    """Kill the bot after the credit was written but before its receipt could be sent (the
    bot is down while the operator credits): the next process sends it, once."""
    deployment.start()
    chat = Chat(deployment, deployment.server.user(USER_ID + 2, "Chenda"))
    chat.say("/start", "Hello, Chenda!")
    deployment.bot.kill()

    credited = deployment.cli("wallet", "credit", str(USER_ID + 2), "3", "--reference", "tx 9")
    assert credited.returncode == 0, credited.stderr
    assert deployment.query("SELECT status FROM notifications") == [("pending",)]

    deployment.start()
    chat.next("Receipt: $3.00 added to your wallet")
    deployment.server.wait_until(
        lambda: deployment.query("SELECT status FROM notifications") == [("sent",)] or None)
    assert sum("Receipt" in m.content for m in chat.user.messages()) == 1
    assert CELLCARD not in " ".join(m.content for m in chat.user.messages())
    deployment.assert_healthy()
