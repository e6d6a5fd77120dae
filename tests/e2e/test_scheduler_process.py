"""The scheduler end to end: the real `topup-bot run` process sweeping every second, an
operator's `topup-bot sim set-balance` dropping the line under its thresholds, and the user
on our Bot API test server receiving the warning, the approval request and the receipt."""

from __future__ import annotations

from tests.e2e.deployment import CELLCARD, MASKED, UNTHROTTLED, Chat, Deployment, bind_cellcard

USER_ID = 3001
EVERY_SECOND = {"SWEEP_INTERVAL_SECONDS": "1"}


def set_up_watch(chat: Chat) -> None:
    """A $1.00 low-balance warning, and a rule: below $1.00, buy $5.00, ask me first."""
    bot = chat.deployment.bot
    settings = chat.say("/settings", "Your settings:")
    which = chat.tap(settings, "⚠️ Low-balance warning", "Which line?")
    chat.tap(which, MASKED, f"Warn me when {MASKED} falls below which balance?")
    chat.say("1", "I will warn you when the balance falls below $1.00.")

    rules = chat.say("/autorecharge", "No auto-recharge rules yet.")
    # The wizard is the list's message, edited step by step.
    buy = chat.tap(rules, "➕ New rule", "What should I buy each time?", edits=True)
    chat.tap(buy, "A fixed amount of airtime", "How much each time?", edits=True)
    when = chat.say("5", "When?", edits=True)
    chat.tap(when, "When the balance is low", "Top up when the balance falls below how much?",
             edits=True)
    chat.say("1", "At most how much in one month? (like 20)", edits=True)
    approval = chat.say("20", "Should I ask before each charge?", edits=True)
    summary = chat.tap(approval, "Ask me every time", "when the balance falls below $1.00",
                       edits=True)
    mark = bot.mark()
    chat.tap(summary, "✅ Confirm", "I sent a 6-digit code by SMS to the line.", edits=True)
    chat.say(bot.sms_code(CELLCARD, after=mark), "Auto-recharge is on.", edits=True)


def start_with_a_watched_line(deployment: Deployment, env: dict[str, str]) -> Chat:
    """The bot started with ``env``; a user with a healthy $5.00 Cellcard line (valid 30
    days), its warning and rule set up, and $10.00 in the wallet."""
    for command in (("migrate",), ("sim", "set-balance", "012345678", "5"),
                    ("sim", "set-validity", "012345678", "30")):
        assert deployment.cli(*command).returncode == 0
    deployment.start(env=env)
    chat = Chat(deployment, deployment.server.user(USER_ID, "Bopha"))
    bind_cellcard(chat)
    set_up_watch(chat)
    credit = deployment.cli("wallet", "credit", str(USER_ID), "10", "--reference", "cash 1")
    assert credit.returncode == 0, credit.stderr
    chat.next("Receipt: $10.00 added to your wallet")
    return chat


@UNTHROTTLED
def test_a_balance_dropped_by_the_operator_warns_asks_and_tops_up(
        deployment: Deployment) -> None:
    chat = start_with_a_watched_line(deployment, EVERY_SECOND)
    # The sweep has read the healthy line by now: no warning, no charge.
    deployment.wait_for(lambda: deployment.query(
        "SELECT COUNT(*) FROM line_readings WHERE source = 'provider'")[0][0] >= 1,
        "the healthy line was read")
    assert deployment.query("SELECT COUNT(*) FROM charges") == [(0,)]

    dropped = deployment.cli("sim", "set-balance", "012345678", "0.50")
    assert dropped.returncode == 0, dropped.stderr

    warning = chat.next(f"⚠️ {MASKED}: the balance is below $1.00.", timeout=15)
    assert "Balance: $0.50" in warning.content and "read from the carrier" in warning.content
    assert "💤 Remind me later" in warning.button_texts
    request = chat.next("Your auto-recharge wants to top up", timeout=15)
    assert "Amount: $5.00" in request.content
    assert request.button_texts == ["✅ Approve", "✖️ Decline"]

    chat.user.wait_for_answer(chat.user.press(request, button_text="✅ Approve"))
    receipt = chat.next("✅ Topped up", timeout=15)
    assert "$5.00" in receipt.content and "Wallet: $5.00" in receipt.content

    # Later sweeps find the line topped up: no second warning, no second charge.
    deployment.wait_for(lambda: deployment.query(
        "SELECT COUNT(*) FROM line_readings WHERE balance_minor >= 550")[0][0] >= 1,
        "the topped-up balance was read")
    assert deployment.query("SELECT state, idempotency_key FROM charges") == [
        ("succeeded", "rule:1:episode:1")]
    assert deployment.query(
        "SELECT COUNT(*) FROM notifications WHERE kind = 'line_warning'") == [(1,)]
    status = deployment.cli("status")
    assert status.returncode == 0, status.stderr
    assert "line_checks" in status.stdout and "calendar_runs" in status.stdout
    deployment.assert_healthy()


@UNTHROTTLED
def test_a_worker_beside_the_bot_sweeps_and_sends(deployment: Deployment) -> None:
    """The bot sweeps only at start-up (hourly after); `topup-bot worker` sweeps every
    second and sends through the outbox too: each message still arrives once."""
    chat = start_with_a_watched_line(deployment, {"SWEEP_INTERVAL_SECONDS": "3600"})
    worker = deployment.start_worker("w1", env=EVERY_SECOND)

    assert deployment.cli("sim", "set-balance", "012345678", "0.50").returncode == 0
    chat.next(f"⚠️ {MASKED}: the balance is below $1.00.", timeout=15)
    request = chat.next("Your auto-recharge wants to top up", timeout=15)
    chat.user.wait_for_answer(chat.user.press(request, button_text="✅ Approve"))
    chat.next("✅ Topped up", timeout=15)

    runs = deployment.query("SELECT job, worker FROM scheduler_runs ORDER BY job, worker")
    assert ("line_checks", "bot") in runs and ("line_checks", "w1") in runs, (
        runs, deployment.bot.output_tail())
    assert deployment.query("SELECT COUNT(*) FROM charges") == [(1,)]
    queued = dict(deployment.query("SELECT kind, COUNT(*) FROM notifications GROUP BY kind"))
    assert (queued["line_warning"], queued["approval_request"], queued["receipt"]) == (1, 1, 1)
    # The dispatcher records "sent" just after Telegram took the message: wait for that.
    deployment.wait_for(lambda: deployment.query(
        "SELECT COUNT(*) FROM notifications WHERE status != 'sent'") == [(0,)],
        "every queued message recorded as sent")
    assert worker.stop() == 0
    deployment.assert_healthy()
