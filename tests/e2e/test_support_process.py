"""/support end to end: the real `topup-bot run` process, a user in a private chat and the
admins in a supergroup of their own, on our Bot API test server. The user's $5.00 top-up
went through; they report it as not received. The admin group gets the request with the
line (masked), wallet and that top-up; an admin answers by replying to it in the group, the
answer reaches the user, the user writes back with "Reply", and the admin lists the flagged
request and resolves it. The conversation is stored encrypted and audited."""

from __future__ import annotations

from tests.e2e.botapi import BotMessage
from tests.e2e.deployment import MASKED, UNTHROTTLED, Chat, Deployment, bind_cellcard

USER_ID, ADMIN_ID = 2401, 2402
ADMINS = -1002000000001


def open_card(chat: Chat) -> BotMessage:
    listing = chat.say("/lines", "Your lines")
    return chat.tap(listing, listing.button_texts[0], "Plan:", edits=True)


def a_paid_top_up(deployment: Deployment, chat: Chat) -> str:
    """$10.00 credited and a $5.00 top-up approved and done; its reference."""
    credited = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 1")
    assert credited.returncode == 0, credited.stderr
    chat.next("Receipt: $10.00 added to your wallet")
    assert chat.tap_answer(open_card(chat), "⚡ Top up $5.00") == (
        "I sent you a request to approve: tap Approve on it.")
    request = chat.next("Top up ")
    chat.user.wait_for_answer(chat.user.press(request, button_text="✅ Approve"))
    chat.next("✅ Topped up", timeout=15)
    [(reference,)] = deployment.query("SELECT reference FROM charges WHERE state = 'succeeded'")
    return str(reference)


@UNTHROTTLED
def test_support_round_trip_between_a_user_and_the_admin_group(
        deployment: Deployment) -> None:
    deployment.start(env={"ADMIN_CHAT_IDS": str(ADMINS)})
    server = deployment.server
    admin = server.user(ADMIN_ID, "Vanna")
    group = server.group(ADMINS, "TopUp operators", members=(admin,))
    chat = Chat(deployment, server.user(USER_ID, "Sreymom"))
    bind_cellcard(chat)
    reference = a_paid_top_up(deployment, chat)

    # The user reports the top-up as not received.
    menu = chat.say("/support", "What is it about?")
    [top_up] = [label for label in menu.button_texts if "$5.00" in label]
    kinds = chat.tap(menu, top_up, "What went wrong with this top-up?", edits=True)
    chat.tap(kinds, "The line did not receive it", "Write what is wrong", edits=True)
    report = "My line never got the $5 top-up from this morning."
    chat.say(report, "✅ Sent to our support team as request #1.")

    # The admin group gets it, with what an admin needs to answer.
    ticket = group.wait_for_message("Support request #1", timeout=15)
    for expected in (f"from user {USER_ID}", "⚑ Flagged: The line did not receive it",
                     f"Lines: {MASKED} (Cellcard)", "Wallet: $5.00",
                     f"succeeded, $5.00, {MASKED} (Cellcard)", f"reference {reference}",
                     report, "/resolve 1"):
        assert expected in ticket.content, (expected, ticket.content)

    # An admin answers by replying to it; the answer reaches the user.
    answer = "Sorry! The carrier confirms it now: check your balance again."
    group.send_text(admin, answer, reply_to=ticket.message_id)
    group.wait_for_message(f"Sent to user {USER_ID} (request #1).")
    answered = chat.next("💬 Support answered your request #1:", timeout=15)
    assert answer in answered.content
    assert answered.button_texts == ["✍️ Reply"]

    # The user writes back; the admins get it.
    chat.tap(answered, "✍️ Reply", "Write what you want to add to request #1")
    chat.say("It is there now, thank you!", "✅ Added to request #1.")
    follow_up = group.wait_for_message(f"User {USER_ID} added to flagged request #1:",
                                       timeout=15)
    assert "It is there now, thank you!" in follow_up.content

    # The flagged request is on the admins' list until an admin resolves it.
    group.send_command(admin, "/tickets")
    listing = group.wait_for_message("Open support requests: 1")
    assert f"⚑ #1 · user {USER_ID} · The line did not receive it" in listing.content
    group.send_command(admin, "/resolve 1")
    group.wait_for_message(f"Request #1 is resolved; user {USER_ID} is told.")
    chat.next("✅ Your support request #1 is resolved.", timeout=15)
    group.send_command(admin, "/tickets")
    group.wait_for_message("No open support requests.")

    # Stored, the texts encrypted, and audited.
    rows = deployment.query("SELECT direction, author, text_enc FROM support_messages "
                            "ORDER BY id")
    assert [(direction, author) for direction, author, _ in rows] == [
        ("user", f"user:{USER_ID}"), ("admin", f"admin:{ADMIN_ID}"),
        ("user", f"user:{USER_ID}")]
    cipher = deployment.cipher()
    assert [cipher.decrypt(text) for _, _, text in rows] == [
        report, answer, "It is there now, thank you!"]
    assert all("thank you" not in str(text) for _, _, text in rows)
    assert deployment.query("SELECT status, flagged, resolved_by FROM support_tickets") == [
        ("resolved", 1, f"admin:{ADMIN_ID}")]
    actions = [action for (action,) in deployment.query(
        "SELECT action FROM audit_log WHERE action LIKE 'support.%' ORDER BY id")]
    assert actions == ["support.opened", "support.admin_reply", "support.user_message",
                       "support.resolved"]
    deployment.assert_healthy()
