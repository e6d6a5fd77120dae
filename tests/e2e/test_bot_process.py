"""The real `topup-bot run` process against our Bot API test server, used as a person would.

Each test starts the console script on a fresh data directory (its own SQLite database and
keys), talks to it through the server's user side (messages, button taps) and reads the SMS
codes from the bot's stderr, where the console SMS gateway writes them. Restart tests stop
or kill the process mid-flow and carry on with a new process on the same data directory.

Nothing here sleeps for a fixed time: every wait is for a condition, on the server's
condition variable or the bot's output, and (the one poll) until the persistence rows a
step should leave are in the database.
"""

from __future__ import annotations

import re
import signal
from datetime import date, datetime, timedelta

import pytest
from babel.dates import format_datetime

from bot.gateways.simulated_catalog import PRODUCTS
from bot.i18n import Translations
from tests.e2e.botapi import BotMessage
from tests.e2e.deployment import (
    ASK_NUMBER,
    BOUND,
    CELLCARD,
    CELLCARD_TYPED,
    CODE_SENT,
    GREETING,
    MASKED,
    UNTHROTTLED,
    ZONE,
    Chat,
    Deployment,
    bind_cellcard,
)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def monthly_run(day: int, now: datetime) -> datetime:
    """When a "monthly on ``day``" rule set up at ``now`` runs first: 09:00 local time."""
    local = now.astimezone(ZONE)
    month = date(local.year, local.month, 1)
    while True:
        last = ((month + timedelta(days=32)).replace(day=1) - timedelta(days=1)).day
        run = datetime(month.year, month.month, min(day, last), 9, 0, tzinfo=ZONE)
        if run > local:
            return run
        month = (month + timedelta(days=32)).replace(day=1)


def shown(moment: datetime, locale: str = "en") -> str:
    """A time as the bot shows it."""
    return str(format_datetime(moment.astimezone(ZONE), "d MMM y, HH:mm", locale=locale))


# -- 1. /start, /help, unknown commands ---------------------------------------------------------


def test_start_greets_with_the_main_menu_and_unknown_input_is_answered(
        deployment: Deployment) -> None:
    deployment.start()
    chat = Chat(deployment, deployment.server.user(1001, "Dara"))

    greeting = chat.say("/start", "Hello, Dara!")
    assert greeting.content == GREETING.format(name="Dara")
    # No line yet: the eSIM shop is offered beside binding one.
    assert greeting.button_texts == ["➕ Add a line", "🌐 Buy a Cambodian eSIM"]

    help_text = chat.say("/help", "Commands:").content
    for command in ("/start", "/bind", "/lines", "/autorecharge", "/settings", "/cancel"):
        assert f"\n{command} - " in help_text
    chat.say("/frobnicate", "I don't know that command. /help lists what I can do.")
    chat.say("what can you do?", "I did not understand that. /help lists what I can do.")
    chat.say("/cancel", "There is nothing to cancel.")

    # the command menu was registered at start-up, in every language
    assert [c["command"] for c in deployment.server.commands][:3] == ["start", "bind", "lines"]
    assert deployment.server.commands_for(language_code="km")
    assert deployment.server.commands_for(language_code="zh")
    assert deployment.query("SELECT id, language FROM users") == [(1001, "en")]
    deployment.assert_healthy()


# -- 2. binding a line with the SMS code ------------------------------------------------------


@UNTHROTTLED
def test_binding_a_typed_number_needs_the_right_sms_code(deployment: Deployment) -> None:
    bot = deployment.start()
    chat = Chat(deployment, deployment.server.user(1002, "Sokha"))
    menu = chat.say("/start", "Hello, Sokha!")

    chat.tap(menu, "➕ Add a line", ASK_NUMBER)
    assert [b["text"] for row in chat.user.reply_keyboard() for b in row] == \
        ["📱 Share my number"]
    chat.say("+44 20 7946 0958", "That is not a Cambodian number.")
    mark = bot.mark()
    sent = chat.say(CELLCARD_TYPED, CODE_SENT.format(line=MASKED, operator="Cellcard"))
    assert sent.button_texts == ["Send a new code"]
    code = bot.sms_code(CELLCARD, after=mark)
    assert f"Your top-up bot code is {code}." in bot.stderr

    chat.say(other_code(code), "That code is not right. 4 tries left.")
    chat.say("12345", "Type the 6 digits from the SMS, like 123456.")  # not a try
    chat.say(code, BOUND.format(line=MASKED, operator="Cellcard"))

    assert chat.user.reply_keyboard() == []  # the "Share my number" keyboard is gone
    assert bot.sms_count(CELLCARD) == 1  # a wrong code does not send another one
    lines = chat.say("/lines", "Your lines. Tap one to see it and change it:")
    assert lines.button_texts == [f"{MASKED} · Cellcard"]
    assert deployment.query("SELECT owner_id, operator, unbound_at FROM lines") == [
        (1002, "cellcard", None)]
    # the number is stored encrypted, and the chat only ever shows it masked
    assert not deployment.query("SELECT id FROM lines WHERE phone_enc LIKE '%12345678%'")
    assert not any(CELLCARD in m.content or "12345678" in m.content
                   for m in chat.user.messages())
    # The flow is over: a code now means nothing, and the bot says where codes go.
    chat.say(code, "That looks like a code from an SMS.")
    deployment.assert_healthy()


# -- 3. choosing a plan from the catalog --------------------------------------------------------


@UNTHROTTLED
def test_a_plan_chosen_from_the_paginated_catalog_is_stored_and_shown(
        deployment: Deployment) -> None:
    deployment.start()
    chat = Chat(deployment, deployment.server.user(1003, "Vanna"))
    bind_cellcard(chat)

    lines = chat.say("/lines", "Your lines.")
    card = chat.tap(lines, f"{MASKED} · Cellcard", "Plan: none chosen", edits=True)
    assert "📋 Choose plan" in card.button_texts
    page = chat.tap(card, "📋 Choose plan", f"Cellcard plans for {MASKED} (page 1 of ",
                    edits=True)
    pages = int(re.search(r"\(page 1 of (\d+)\)", page.content).group(1))  # type: ignore[union-attr]
    assert pages >= 2
    assert len([d for d in page.buttons if d["callback_data"].startswith("v1:pc:")]) == 5
    assert "‹" not in page.button_texts and "« Back" in page.button_texts
    for number in range(2, pages + 1):
        page = chat.tap(page, "›", f"(page {number} of {pages})", edits=True)
    assert "›" not in page.button_texts and "‹" in page.button_texts

    plan = next(b for b in page.buttons if b["callback_data"].startswith("v1:pc:"))
    product_id = plan["callback_data"].rsplit(":", 1)[1]
    assert chat.tap_answer(page, plan["text"]) == "Plan saved."
    chat.next(f"{MASKED} plan: {plan['text']}.", edits=True)
    assert deployment.query("SELECT plan_product_id FROM lines") == [(product_id,)]

    # /lines shows it, and the auto-recharge wizard offers it
    lines = chat.say("/lines", "Your lines.")
    chat.tap(lines, f"{MASKED} · Cellcard", f"Plan: {plan['text']}", edits=True)
    rules = chat.say("/autorecharge", "No auto-recharge rules yet.")
    buy = chat.tap(rules, "➕ New rule", "What should I buy each time?", edits=True)
    assert f"My plan: {PRODUCTS[product_id].name}" in buy.button_texts
    chat.say("/cancel", "Cancelled. Nothing was changed.", edits=True)
    deployment.assert_healthy()


# -- 4. an auto-recharge rule, confirmed by SMS code ----------------------------------------


def rule_until_approval(chat: Chat, day: int) -> BotMessage:
    """/autorecharge, a new rule: $5 on day ``day`` of every month, at most $20 a month;
    the message asking about approval. The wizard is one message, edited step by step; a
    refused answer is answered by a new one below it, which the steps after then edit."""
    rules = chat.say("/autorecharge", "No auto-recharge rules yet.")
    buy = chat.tap(rules, "➕ New rule", "What should I buy each time?", edits=True)
    chat.tap(buy, "A fixed amount of airtime", "How much each time?", edits=True)
    chat.say("five dollars", "Type an amount like 5 or $2.50.")
    when = chat.say("5", "When?", edits=True)
    chat.tap(when, "Every month", "On which day of the month (1-31)?", edits=True)
    chat.say("32", "Type a whole number from 1 to 31.")
    chat.say(str(day), "At most how much in one month? (like 20)", edits=True)
    approval = chat.say("20", "Should I ask before each charge?", edits=True)
    # Of the messages since the list, only the wizard's has a keyboard (the one shown).
    assert [m.message_id for m in chat.user.messages()
            if m.inline_keyboard and m.message_id >= rules.message_id] == [approval.message_id]
    return approval


def summary_for(day: int) -> str:
    return (f"{MASKED}: buy $5.00 of airtime, every month on day {day} (the last day in "
            f"shorter months). At most $20.00 a month; I ask you before every charge.\n\n"
            f"To turn it on I will send a code by SMS to the line.")


@UNTHROTTLED
def test_an_auto_recharge_rule_is_turned_on_with_the_sms_code(deployment: Deployment) -> None:
    bot = deployment.start()
    chat = Chat(deployment, deployment.server.user(1004, "Chenda"))
    bind_cellcard(chat)
    day = 15

    approval = rule_until_approval(chat, day)
    summary = chat.tap(approval, "Ask me every time", summary_for(day), edits=True)
    assert summary.content == summary_for(day)
    assert summary.button_texts == ["✅ Confirm", "« Back", "✖️ Cancel"]
    mark = bot.mark()
    chat.tap(summary, "✅ Confirm", "I sent a 6-digit code by SMS to the line.", edits=True)
    code = bot.sms_code(CELLCARD, after=mark)
    sms = bot.wait_for_stderr(rf"^SMS to {re.escape(CELLCARD)}: (.*)$", after=mark).group(1)
    assert sms == (f"Your code to turn on auto-recharge is {code}. It expires in 5 minutes. "
                   f"Never share it.")
    assert deployment.query("SELECT status, amount_minor, monthly_cap_minor, calendar, "
                            "calendar_value FROM recharge_rules") == [
        ("awaiting_otp", 500, 2000, "monthly", day)]

    # Refused: said below the typed code, in a new wizard message (the old one loses its keys)
    refused = chat.say(other_code(code), "That code is not right. 4 tries left.")
    assert chat.user.message(summary.message_id).reply_markup is None
    assert deployment.query("SELECT status FROM recharge_rules") == [("awaiting_otp",)]
    before = monthly_run(day, datetime.now(ZONE))
    enabled = chat.say(code, "Auto-recharge is on. Next run: ", edits=True)
    after = monthly_run(day, datetime.now(ZONE))
    assert summary.message_id == approval.message_id
    assert enabled.message_id == refused.message_id  # the wizard message, edited
    assert enabled.reply_markup is None
    described, on = enabled.content.split("\n\n")
    assert described == summary_for(day).split("\n")[0]
    assert on in {f"Auto-recharge is on. Next run: {shown(run)}" for run in (before, after)}
    assert deployment.query("SELECT status FROM recharge_rules") == [("active",)]

    chat.user.send_command("/autorecharge")
    listed = chat.next("On · ")
    assert listed.content.startswith(f"On · {summary_for(day).split(chr(10))[0]}")
    assert listed.content.endswith(on.removeprefix("Auto-recharge is on. "))
    assert listed.button_texts == ["⏸ Pause", "✏️ Edit", "🗑 Delete"]
    chat.next("Add another rule?")
    deployment.assert_healthy()


@UNTHROTTLED
def test_a_rule_waiting_for_its_code_can_be_finished_from_the_list(
        deployment: Deployment) -> None:
    bot = deployment.start()
    chat = Chat(deployment, deployment.server.user(1011, "Kosal"))
    bind_cellcard(chat)
    summary = chat.tap(rule_until_approval(chat, 15), "Ask me every time", summary_for(15),
                       edits=True)
    chat.tap(summary, "✅ Confirm", "I sent a 6-digit code by SMS to the line.", edits=True)
    chat.say("/cancel", "Stopped here. The rule stays off until you type its SMS code",
             edits=True)
    assert deployment.query("SELECT status FROM recharge_rules") == [("awaiting_otp",)]

    chat.user.send_command("/autorecharge")
    waiting = chat.next("Waiting for the SMS code · ")
    chat.next("Add another rule?")
    turn_on = waiting.button_texts[0]
    assert turn_on == "🔑 Enter the code"
    # The code sent a moment ago still counts (a new one only after the resend cooldown).
    chat.tap(waiting, turn_on, "A code was sent moments ago. Type it", edits=True)
    code = bot.last_sms_code(CELLCARD)
    assert code is not None and bot.sms_count(CELLCARD) == 2  # the binding's, the rule's
    chat.say(code, "Auto-recharge is on.", edits=True)
    assert deployment.query("SELECT status FROM recharge_rules") == [("active",)]
    deployment.assert_healthy()


# -- 5. conversations survive a restart -------------------------------------------------------


def test_binding_continues_after_the_bot_was_killed_once_the_code_was_sent(
        deployment: Deployment) -> None:
    first = deployment.start()
    user_id = 1005
    chat = Chat(deployment, deployment.server.user(user_id, "Rithy"))
    chat.say("/bind", ASK_NUMBER)
    mark = first.mark()
    chat.say(CELLCARD_TYPED, CODE_SENT.format(line=MASKED, operator="Cellcard"))
    code = first.sms_code(CELLCARD, after=mark)
    # PTB writes conversations and user_data once a second: wait until this step is stored,
    # and until getUpdates confirmed the update (else the new process would get it again).
    deployment.wait_until_persisted("binding", user_id, "bind:code",
                                    lambda data: data.get("bind") == CELLCARD)
    deployment.server.wait_until(lambda: not deployment.server.state.pending)

    assert first.kill() == -signal.SIGKILL
    assert deployment.query("SELECT COUNT(*) FROM lines") == [(0,)]
    second = deployment.start()

    chat.say(code, BOUND.format(line=MASKED, operator="Cellcard"))
    assert second.sms_count() == 0  # the code sent before the kill was the one that counted
    assert deployment.query("SELECT owner_id FROM lines") == [(user_id,)]
    deployment.wait_until_persisted("binding", user_id, None, lambda data: "bind" not in data)
    deployment.assert_healthy()


@UNTHROTTLED
def test_the_rule_wizard_survives_a_clean_stop_and_then_a_kill(deployment: Deployment) -> None:
    first = deployment.start()
    user_id = 1006
    chat = Chat(deployment, deployment.server.user(user_id, "Bopha"))
    bind_cellcard(chat)
    day = 28
    approval = rule_until_approval(chat, day)

    # SIGTERM: PTB stops cleanly and writes the conversations on the way out
    assert first.stop() == 0
    state, data = deployment.persisted("autorecharge", user_id)
    assert state == "ar:approval"
    (line_id,), = deployment.query("SELECT id FROM lines")
    assert data["rule_draft"] == {"line_id": line_id, "amount_minor": 500, "when": "monthly",
                                  "when_value": day, "cap_minor": 2000, "buy": "amount",
                                  "first": "buy", "message_id": approval.message_id}
    second = deployment.start()

    # the buttons of a message sent by the previous process still work
    summary = chat.tap(approval, "Ask me every time", summary_for(day), edits=True)
    mark = second.mark()
    chat.tap(summary, "✅ Confirm", "I sent a 6-digit code by SMS to the line.", edits=True)
    code = second.sms_code(CELLCARD, after=mark)
    (rule_id, status), = deployment.query("SELECT id, status FROM recharge_rules")
    assert status == "awaiting_otp"
    deployment.wait_until_persisted("autorecharge", user_id, "ar:code",
                                    lambda data: data.get("rule_draft", {}).get("rule_id")
                                    == rule_id)
    deployment.server.wait_until(lambda: not deployment.server.state.pending)

    # SIGKILL: nothing is flushed on the way out, but the state was already written
    assert second.kill() == -signal.SIGKILL
    third = deployment.start()
    chat.say(code, "Auto-recharge is on. Next run: ", edits=True)  # the wizard kept its id
    assert third.sms_count() == 0
    assert deployment.query("SELECT id, status FROM recharge_rules") == [(rule_id, "active")]
    deployment.assert_healthy()


# -- 6. other languages ------------------------------------------------------------------------


def test_start_and_binding_follow_the_users_telegram_language(deployment: Deployment) -> None:
    """Every text is the user's catalog entry for it (the English text where a string has no
    translation yet)."""
    catalogs = Translations()  # as the bot reads them at start-up (they are being translated)
    km, zh = catalogs.gettext("km"), catalogs.gettext("zh_Hans")
    bot = deployment.start()
    khmer = Chat(deployment, deployment.server.user(1007, "Sreymom", language_code="km"))
    chinese = Chat(deployment, deployment.server.user(1008, "Li Wei",
                                                      language_code="zh-hans"))

    greeting = khmer.say("/start", km(GREETING).format(name="Sreymom").split("\n")[0])
    assert greeting.content == km(GREETING).format(name="Sreymom")
    assert greeting.button_texts == [km("➕ Add a line"), km("🌐 Buy a Cambodian eSIM")]
    menu = deployment.server.commands_for(language_code="km")
    assert [c["description"] for c in menu][:2] == [km("What this bot does"),
                                                    km("Add a line (proven by SMS code)")]

    chinese.say("/start", zh(GREETING).format(name="Li Wei").split("\n")[0])
    bind_cellcard(chinese, zh)
    sms = bot.wait_for_stderr(rf"^SMS to {re.escape(CELLCARD)}: (.*)$").group(1)
    code = re.search(r"\d{6}", sms)
    assert code is not None, sms
    assert sms == " ".join(zh("Your top-up bot code is {code}. It expires in 5 minutes. "
                              "Never share it.").format(code=code.group()).split())
    assert deployment.query("SELECT id, language FROM users ORDER BY id") == [
        (1007, "km"), (1008, "zh_Hans")]
    deployment.assert_healthy()


SCRIPTS = {"km": re.compile("[\u1780-\u17ff]"), "zh_Hans": re.compile("[\u4e00-\u9fff]")}


@pytest.mark.parametrize(("telegram_code", "language"), [
    pytest.param("km", "km", id="km"),
    pytest.param("zh-hans", "zh_Hans", id="zh"),
])
def test_the_greeting_is_in_the_users_script(deployment: Deployment, telegram_code: str,
                                             language: str) -> None:
    deployment.start()
    chat = Chat(deployment, deployment.server.user(1009, "Dara", language_code=telegram_code))

    greeting = chat.say("/start", "Dara")

    assert SCRIPTS[language].search(greeting.content), greeting.content
    assert SCRIPTS[language].search(greeting.button_texts[0]), greeting.button_texts
