"""/privacy and /forget through the real Application.

The main test leaves everything a user can leave (a line bound with its SMS code and
renamed after the user, a balance report, an auto-recharge rule, an eSIM bought, a top-up,
a support request, a /bind stopped half-way), forgets them, and then looks for their
numbers in every shape, their name and the ICCID in every column of every table and in the
SQLite file (checkpointed and vacuumed), and for the ciphertexts and blind indexes that
held them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.privacy import number_shapes
from bot.services.charging import Approved, Requested
from bot.services.esims import package_token
from handlers import callback_data as cb
from handlers.autorecharge import DRAFT as RULE_DRAFT
from handlers.esim import BUY_KIND
from handlers.start import COMMANDS
from storage.lines import FORGOTTEN_LABEL, LinesRepository
from storage.payments import PaymentsRepository
from storage.tables import (
    lines,
    otp_challenges,
    ptb_conversations,
    ptb_user_data,
    recharge_rules,
    support_messages,
    users,
)
from storage.users import UsersRepository
from tests.flow.conftest import BotHarness, open_harness
from tests.flow.helpers import deliver, keyboard
from tests.flow.recording import callback_update, text_update
from tests.privacy_scan import count_rows, found_in_bytes, scan, sqlite_file_bytes

USER, ADMIN = 555, 4343
NAME = "Chanthavy-Sokunthea"  # the user's Telegram first name
NICKNAME = f"{NAME}'s Smart"
NUMBER = parse_cambodian_mobile("+85512345678")  # bound, renamed, read, ruled, topped up
DRAFT = parse_cambodian_mobile("+85592345670")  # /bind stopped after the code was sent
SIMULATOR = ("sim_lines", "sim_topups", "sim_esims", "sim_esim_orders")


@pytest.fixture
async def harness(tmp_path: Path, clock: ManualClock,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    async with open_harness(tmp_path, clock, monkeypatch,
                            {"ADMIN_CHAT_IDS": str(ADMIN)}) as opened:
        yield opened


def named(update: dict[str, Any]) -> dict[str, Any]:
    """The update as the user sends it: every first name in it is theirs."""
    update = copy.deepcopy(update)

    def rename(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "first_name" and inner == "Dara":
                    value[key] = NAME
                else:
                    rename(inner)

    rename(update)
    return update


async def say(harness: BotHarness, text: str) -> None:
    await harness.send(named(text_update(text, user_id=USER)))


async def tap(harness: BotHarness, data: str, message_id: int = 1) -> None:
    await harness.send(named(callback_update(data, user_id=USER, message_id=message_id)))


def last_text(harness: BotHarness) -> str:
    for call in reversed(harness.api.calls):
        if call.method in ("sendMessage", "editMessageText") \
                and int(call.params["chat_id"]) == USER:
            return str(call.params["text"])
    raise AssertionError("nothing shown")


async def bind_with_code(harness: BotHarness) -> int:
    await say(harness, "/start")
    await say(harness, "/bind")
    await say(harness, number_shapes(NUMBER)[3])  # 012 345 678
    await say(harness, harness.sms.last_code(NUMBER.e164))
    assert "is bound to you" in last_text(harness)
    (line,) = await harness.components.lines.for_user(USER)
    return line.id


async def a_monthly_rule(harness: BotHarness) -> None:
    def wizard() -> int:
        message_id = harness.app.user_data[USER][RULE_DRAFT]["message_id"]
        assert isinstance(message_id, int)
        return message_id

    await say(harness, "/autorecharge")
    await tap(harness, "v1:arn:new")
    await tap(harness, "v1:arb:amount", wizard())
    await say(harness, "5")
    await tap(harness, "v1:arw:monthly", wizard())
    await say(harness, "28")
    await say(harness, "20")
    await tap(harness, "v1:arp:ask", wizard())
    await tap(harness, "v1:arc:ok", wizard())
    await say(harness, harness.sms.last_code(NUMBER.e164))
    async with harness.components.db.read() as conn:
        status = (await conn.execute(select(recharge_rules.c.status))).scalar_one()
    assert status == "active"


async def credit(harness: BotHarness, cents: int, reference: str) -> None:
    c = harness.components
    async with c.db.write() as conn:
        await UsersRepository(conn).ensure(USER, language="en", now=c.clock.now())
        await PaymentsRepository(conn, c.cipher).record_payment(
            user_id=USER, source="operator", external_id=f"operator:{reference}",
            amount=Money(cents, "USD"), now=c.clock.now(), actor="cli")


async def a_top_up(harness: BotHarness, line_id: int) -> int:
    c = harness.components
    requested = await c.charging.request_manual(USER, line_id, Money(500, "USD"), None, "n1")
    assert isinstance(requested, Requested)
    approved = await c.charging.approve(USER, requested.charge.id)
    assert isinstance(approved, Approved) and approved.charge.state is ChargeState.SUCCEEDED
    return requested.charge.id


async def ask_to_forget(harness: BotHarness) -> tuple[str, str]:
    """/forget; the data of its Yes and Cancel buttons."""
    await say(harness, "/forget")
    (yes, yes_data), (_cancel, no_data) = keyboard(harness.api.sent()[-1])
    assert "Yes" in yes and yes_data.startswith("v1:fg:ok:")
    return yes_data, no_data


async def stored(harness: BotHarness) -> dict[str, int]:
    return await count_rows(harness.components.db)


def timeouts(harness: BotHarness) -> list[object]:
    """The conversation timeouts waiting in the job queue."""
    assert harness.app.job_queue is not None
    return [job for job in harness.app.job_queue.jobs()
            if "timeout" in (job.name or "").lower()]


async def test_forget_leaves_nothing_of_the_user_in_any_table_nor_in_the_file(
        harness: BotHarness, clock: ManualClock) -> None:
    c = harness.components
    line_id = await bind_with_code(harness)
    await tap(harness, f"v1:ln:{line_id}:ren")
    await say(harness, NICKNAME)
    await say(harness, "/balance")
    await say(harness, "1.25")
    await a_monthly_rule(harness)
    # $10 in: a $5 eSIM and a $5 top-up; the wallet ends at zero.
    await credit(harness, 1000, "cash-1")
    await tap(harness, cb.encode(BUY_KIND, package_token("kh-7d-1gb"), "e1"))
    charge_id = await a_top_up(harness, line_id)
    lines_now = await c.lines.for_user(USER)
    iccid = next(line.iccid for line in lines_now if line.iccid)
    assert iccid and len(lines_now) == 2
    await say(harness, "/support")
    await tap(harness, f"v1:sp:c:{charge_id}")
    await tap(harness, "v1:spk:charged_twice")
    await say(harness, f"This is {NAME}: {NUMBER.e164} was charged twice, and {iccid}")
    await deliver(harness, rounds=10)  # receipts, the eSIM's QR, the request to the admins
    # A second /bind stopped once its code was sent: the draft holds the number.
    await say(harness, "/bind")
    await say(harness, number_shapes(DRAFT)[2])
    draft_code = harness.sms.last_code(DRAFT.e164)
    await harness.app.update_persistence()
    needles = [*number_shapes(NUMBER), *number_shapes(DRAFT), NAME, NICKNAME, iccid]

    db = c.db
    async with db.read() as conn:
        ciphertexts = [value for row in (await conn.execute(
            select(lines.c.phone_enc, lines.c.iccid_enc).where(lines.c.owner_id == USER))).all()
            for value in row if value]
        indexes = [value for row in (await conn.execute(
            select(lines.c.phone_index, lines.c.iccid_index).where(lines.c.owner_id == USER))
            ).all() for value in row if value]
        ciphertexts += list((await conn.execute(select(support_messages.c.text_enc)))
                            .scalars())
        ciphertexts += list((await conn.execute(select(ptb_user_data.c.data_enc).where(
            ptb_user_data.c.user_id == USER))).scalars())
    assert (len(ciphertexts), len(indexes)) == (4, 2)  # number, ICCID, request, draft
    assert await scan(db, needles)  # the scan finds what is there (the nickname, labels...)
    assert await scan(db, [*ciphertexts, *indexes])
    assert set(found_in_bytes(await sqlite_file_bytes(db), [NICKNAME, *ciphertexts])) == {
        NICKNAME, *ciphertexts}  # and so does the file's

    clock.advance(timedelta(hours=2))  # every SMS code is past counting against its number
    assert timeouts(harness)  # the /bind in progress would time out
    yes, _no = await ask_to_forget(harness)
    asked = last_text(harness)
    assert "Lines (numbers, ICCIDs and their names): 2" in asked
    # The typed balance, and what the top-ups left (the simulated carrier tells).
    assert re.search(r"Balance readings: [1-9]", asked) and "Auto-recharge rules: 1" in asked
    assert "Support requests: 1 (messages: 1)" in asked
    assert "top-ups: 2" in asked and "payments: 1" in asked
    await tap(harness, yes)

    done = str(harness.api.sent("editMessageText")[-1]["text"])
    assert done.startswith("Done: I forgot you.")
    assert "Lines (numbers, ICCIDs and their names): 2" in done
    assert "Support requests: 1 (messages: 1)" in done
    assert "Kept, for our accounts" in done and "top-ups: 2" in done
    await harness.app.update_persistence()

    # Every table, every column: no number in any shape, no name, no ICCID; and none of
    # the ciphertexts or blind indexes that held them (the simulated carrier and eSIM
    # provider keep their own records of the line, keyed by the same index, as a real
    # provider would: they are not ours to delete).
    assert await scan(db, needles) == []
    assert await scan(db, ciphertexts) == []
    assert await scan(db, indexes, skip=SIMULATOR) == []
    content = await sqlite_file_bytes(db)
    assert found_in_bytes(content, [*needles, *ciphertexts]) == []
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(ptb_conversations))
                ).scalar_one() == 0
        draft = (await conn.execute(select(ptb_user_data.c.data_enc).where(
            ptb_user_data.c.user_id == USER))).scalar()
        assert draft is None or c.cipher.decrypt(draft) == "{}"
        row = (await conn.execute(select(users).where(users.c.id == USER))).mappings().one()
        assert row["forgotten_at"] is not None and row["language"] is None
        assert await LinesRepository(conn, c.cipher).by_number(NUMBER.e164) is None
    assert await c.lines.for_user(USER) == []

    # The flow she was in is over, its timeout gone: the code she types now is nobody's.
    assert timeouts(harness) == []
    await say(harness, draft_code)
    assert "looks like a code from an SMS" in last_text(harness)
    # Coming back, she is new: the first greeting, no lines.
    await say(harness, "/start")
    assert "I keep your Cambodian prepaid and eSIM lines alive" in last_text(harness)
    # What was kept is hers to see: the top-ups and movements, on lines that are only
    # tombstones; nothing shown names the old number, the eSIM or her lines' name.
    shown_from = len(harness.api.calls)
    await say(harness, "/history")
    history = last_text(harness)
    assert FORGOTTEN_LABEL in history and "eSIM" in history and "$5.00" in history
    await say(harness, "/wallet")
    assert "$0.00" in last_text(harness)
    shown = " ".join(str(call.params.get("text", "")) + str(call.params.get("caption", ""))
                     for call in harness.api.calls[shown_from:])
    assert [needle for needle in [*number_shapes(NUMBER), NICKNAME, iccid, iccid[-4:]]
            if needle in shown] == []
    # Her number binds again, as a new line.
    await say(harness, "/bind")
    await say(harness, number_shapes(NUMBER)[2])
    await say(harness, harness.sms.last_code(NUMBER.e164))
    assert "is bound to you" in last_text(harness)
    (again,) = await c.lines.for_user(USER)
    assert again.id != line_id and again.nickname is None


async def test_privacy_answers_in_the_middle_of_a_flow_and_the_flow_goes_on(
        harness: BotHarness) -> None:
    await say(harness, "/bind")
    await say(harness, "/privacy")
    text = last_text(harness)
    for part in ("What I store", "Why:", "How long:", "Who sees it:", "/forget",
                 "only a keyed fingerprint", "Our team (the admins)"):
        assert part in text
    assert len(text) <= 4096
    await say(harness, number_shapes(NUMBER)[2])
    assert "I sent a 6-digit code" in last_text(harness)


async def test_cancel_deletes_nothing(harness: BotHarness) -> None:
    await bind_with_code(harness)
    before = await stored(harness)
    _yes, no = await ask_to_forget(harness)
    await tap(harness, no)
    assert harness.api.sent("editMessageText")[-1]["text"] == "Cancelled. Nothing was deleted."
    assert await stored(harness) == before
    assert len(await harness.components.lines.for_user(USER)) == 1


async def test_a_user_with_money_is_told_how_to_get_it_first(harness: BotHarness) -> None:
    c = harness.components
    await bind_with_code(harness)
    await credit(harness, 300, "cash-2")
    before = await stored(harness)

    await say(harness, "/forget")

    sent = harness.api.sent()[-1]
    text = str(sent["text"])
    # What becomes of the money, and only ways that exist to have it first: a top-up from
    # /lines, an eSIM from /esim, a Stars refund asked through /support.
    assert "Your wallet holds $3.00" in text and "stays in the ledger" in text
    for way in ("/lines", "/esim", "/support", "Telegram Stars",
                "cannot be paid back through the bot"):
        assert way in text
    assert "Forget you?" in text
    (go_on, go_on_data), (_cancel, _no_data) = keyboard(sent)
    assert "anyway" in go_on and go_on_data.startswith("v1:fg:ok:")
    assert not go_on_data.endswith(":-")  # it carries the money it showed
    assert await stored(harness) == before
    for command in ("/lines", "/esim", "/support"):  # each is a real command here
        assert command.removeprefix("/") in {cmd for cmd, _ in COMMANDS}

    await tap(harness, go_on_data)

    done = str(harness.api.sent("editMessageText")[-1]["text"])
    assert done.startswith("Done: I forgot you.") and "$3.00 stays in the ledger" in done
    assert await c.lines.for_user(USER) == []
    assert (await c.wallet.available(USER)).minor == 300  # still hers, under her id
    await say(harness, "/wallet")
    assert "$3.00" in last_text(harness)


async def test_money_that_arrives_after_the_question_is_asked_about_again(
        harness: BotHarness) -> None:
    await bind_with_code(harness)
    await credit(harness, 300, "cash-4")
    await say(harness, "/forget")
    (_go_on, go_on_data), _cancel = keyboard(harness.api.sent()[-1])
    await credit(harness, 200, "cash-5")  # the question showed $3.00; $5.00 would be left
    before = await stored(harness)

    await tap(harness, go_on_data)

    assert "changed since I asked" in str(harness.api.sent("answerCallbackQuery")[-1]["text"])
    edit = harness.api.sent("editMessageText")[-1]
    assert "Your wallet holds $5.00" in str(edit["text"])
    (_again, again_data), _cancel = keyboard(edit)
    assert again_data.startswith("v1:fg:ok:")
    assert again_data.rsplit(":", 1)[1] != go_on_data.rsplit(":", 1)[1]
    assert await stored(harness) == before


async def test_a_confirm_button_that_went_stale_changes_nothing(
        harness: BotHarness, clock: ManualClock) -> None:
    await bind_with_code(harness)
    yes, _no = await ask_to_forget(harness)
    # Money arrived after the question: the press re-checks and asks again, showing it.
    await credit(harness, 300, "cash-3")
    before = await stored(harness)
    await tap(harness, yes)
    assert "Your wallet holds $3.00" in str(harness.api.sent("editMessageText")[-1]["text"])
    assert await stored(harness) == before

    # Forged or garbled tokens, and a button past its time: answered, nothing changes.
    # 18 nines: a moment past the year 9999.
    for data in ("v1:fg:ok:abc:-", "v1:fg:zz:1:-", f"v1:fg:ok:{'9' * 16}:-",
                 f"v1:fg:ok:{'9' * 18}:-", "v1:fg:ok:1"):
        await tap(harness, data)
        assert "no longer active" in str(harness.api.sent("answerCallbackQuery")[-1]["text"])
    clock.advance(timedelta(minutes=16))
    await tap(harness, yes)
    assert "no longer active" in str(harness.api.sent("answerCallbackQuery")[-1]["text"])
    assert await stored(harness) == before


async def test_a_confirm_from_before_a_forget_does_not_forget_the_user_who_came_back(
        harness: BotHarness, clock: ManualClock) -> None:
    await bind_with_code(harness)
    yes, _no = await ask_to_forget(harness)
    clock.advance(timedelta(seconds=5))
    await tap(harness, yes)
    assert "Done: I forgot you." in str(harness.api.sent("editMessageText")[-1]["text"])

    clock.advance(timedelta(seconds=5))
    await bind_with_code(harness)  # back, with the line again
    before = await stored(harness)
    await tap(harness, yes)  # the old button, pressed again

    assert "no longer active" in str(harness.api.sent("answerCallbackQuery")[-1]["text"])
    assert await stored(harness) == before
    assert len(await harness.components.lines.for_user(USER)) == 1


async def test_expired_sms_codes_are_purged_by_a_scheduled_job(
        harness: BotHarness, clock: ManualClock) -> None:
    await bind_with_code(harness)
    assert harness.app.job_queue is not None
    (job,) = harness.app.job_queue.get_jobs_by_name("otp_purge")  # the repeating one
    async with harness.components.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(otp_challenges))
                ).scalar_one() == 1
    clock.advance(timedelta(hours=1))
    await job.run(harness.app)  # what the scheduler does every 15 minutes
    async with harness.components.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(otp_challenges))
                ).scalar_one() == 0
