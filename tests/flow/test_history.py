"""/history through the real Application (issue 16, items 1-3):

1. the history: empty, then charges, wallet movements, refunds and warnings made the way the
   bot makes them, newest first, dates in the user's zone; pages edited in place; opened
   from a line's card and from /wallet; forged and stale buttons change nothing;
2. "Export CSV": a UTF-8 document with a BOM, parsed back with the csv module and compared
   with the ledger rows and the charges in the database, exactly;
3. the monthly summary from /history, month by month, and its opt-in push on the 1st
   (queued by the job's service, sent through the outbox, once).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.references import masked_reference
from bot.services.wallet import Credited
from storage.lines import LinesRepository
from storage.payments import PaymentsRepository
from storage.tables import charges, ledger_entries, users
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, deliver, keyboard, last_answer, last_edit
from tests.flow.recording import callback_update, text_update

USER, STRANGER = 555, 666
CELLCARD, SMART = "+85512345678", "+85510345678"
KHMER_NAME = "ទូរស័ព្ទម៉ាក់"  # "Mum's phone": Khmer in the export needs the BOM
STALE = "That button is no longer active."
TOKYO = timedelta(hours=9)


# --- helpers ------------------------------------------------------------------------------


async def credit(harness: BotHarness, cents: int, reference: str) -> None:
    result = await harness.components.wallet.credit_operator(
        USER, Money(cents, "USD"), reference, actor="cli")
    assert isinstance(result, Credited)


async def charge_ids(harness: BotHarness) -> list[int]:
    async with harness.components.db.read() as conn:
        return list((await conn.execute(select(charges.c.id).order_by(charges.c.id))).scalars())


async def top_up(harness: BotHarness, line_id: int, cents: int, *, approve: bool) -> int:
    """"⚡ Top up" on the line's card, then Approve (the carrier tops it up) or Decline."""
    before = await charge_ids(harness)
    await harness.send(callback_update(f"v1:tn:{line_id}:a{cents}"))
    [charge_id] = [c for c in await charge_ids(harness) if c not in before]
    await harness.send(callback_update(f"v1:ap:{charge_id}:{'ok' if approve else 'no'}"))
    return charge_id


async def warn_low(harness: BotHarness, line_id: int) -> None:
    """A real balance sweep reads the line at $0.50 under a $1.00 threshold; the warning
    goes out through the outbox."""
    c = harness.components
    await c.simulator.set_balance(CELLCARD, Operator.CELLCARD, Money(50, "USD"))
    await c.simulator.set_validity(CELLCARD, Operator.CELLCARD,
                                   c.clock.now() + timedelta(days=30))
    async with c.db.write() as conn:
        await LinesRepository(conn, c.cipher).set_warnings(line_id, balance_minor=100,
                                                           data_mb=None, now=c.clock.now())
    assert (await c.scheduler.check_lines()).warnings == 1
    await deliver(harness, rounds=10)


async def busy_month(harness: BotHarness, clock: ManualClock) -> int:
    """A user in Tokyo with a line named in Khmer: $20 in cash at 11:00, a $5 top-up at
    11:01, a low-balance warning at 11:04, a declined $1 request at 11:05, a Stars payment
    at 11:06 refunded at 11:07."""
    c = harness.components
    clock.set(datetime(2026, 11, 25, 1, 50, tzinfo=UTC))
    line_id = await bind(harness, CELLCARD)
    assert await c.users.set_timezone(USER, "Asia/Tokyo")
    assert await c.lines.rename(USER, line_id, KHMER_NAME)
    clock.set(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))  # 11:00 in Tokyo
    await credit(harness, 2000, "CASH-2026-11-25")
    clock.set(datetime(2026, 11, 25, 2, 1, tzinfo=UTC))
    await top_up(harness, line_id, 500, approve=True)
    # The job queue's start-up sweep runs at the first wait (the top-up above) and leases
    # the line for two minutes: the sweep below comes after that lease.
    clock.set(datetime(2026, 11, 25, 2, 4, tzinfo=UTC))
    await warn_low(harness, line_id)
    clock.set(datetime(2026, 11, 25, 2, 5, tzinfo=UTC))
    await top_up(harness, line_id, 100, approve=False)
    clock.set(datetime(2026, 11, 25, 2, 6, tzinfo=UTC))
    async with c.db.write() as conn:  # a Stars payment as the payment flow records it ...
        await PaymentsRepository(conn, c.cipher).record_payment(
            user_id=USER, source="telegram", external_id="stxREFUNDED-0042",
            amount=Money(100, "USD"), now=clock.now(), actor=f"user:{USER}", memo="50 XTR")
    clock.set(datetime(2026, 11, 25, 2, 7, tzinfo=UTC))

    async def refunder(_user_id: int, _charge_id: str) -> None:  # Telegram accepts it
        return None

    refunded = await c.wallet.refund_stars("stxREFUNDED-0042", actor="admin:1",
                                           refunder=refunder)  # ... and its refund
    assert refunded.status.value == "refunded"
    return line_id


def sent_texts(harness: BotHarness) -> list[str]:
    return harness.api.texts(USER)


def edits(harness: BotHarness) -> list[dict[str, Any]]:
    return harness.api.sent("editMessageText")


async def opted_in(harness: BotHarness) -> bool:
    async with harness.components.db.read() as conn:
        return bool((await conn.execute(select(users.c.monthly_summary).where(
            users.c.id == USER))).scalar_one())


# --- 1. the history -----------------------------------------------------------------------


async def test_an_empty_history_says_what_will_appear_there(harness: BotHarness) -> None:
    await harness.send(text_update("/start"))
    await harness.send(text_update("/history"))

    text = sent_texts(harness)[-1]
    assert text.startswith("🧾 History of all your lines")
    assert ("Nothing yet. Your top-ups, wallet payments, refunds and balance warnings will "
            "appear here, newest first.") in text
    assert keyboard(harness.api.sent()[-1]) == [("📄 Export CSV", "v1:hx:all"),
                                                ("📊 Monthly summary", "v1:hm:now")]
    await harness.send(callback_update("v1:hx:all"))
    assert last_answer(harness)["text"] == "Nothing to export yet."
    assert harness.api.sent("sendDocument") == []


async def test_the_history_lists_everything_newest_first_in_the_users_zone(
        harness: BotHarness, clock: ManualClock) -> None:
    line_id = await busy_month(harness, clock)
    [done, declined] = await charge_ids(harness)
    async with harness.components.db.read() as conn:
        references = dict((await conn.execute(select(charges.c.id, charges.c.reference)))
                          .tuples().all())

    await harness.send(text_update("/history"))

    text = sent_texts(harness)[-1]
    blocks = text.split("\n\n")
    assert blocks[0] == "🧾 History of all your lines"
    assert blocks[1:] == [
        "25 Nov 2026, 11:07\n👛 −$1.00 Refunded to you\nReference: …0042",
        "25 Nov 2026, 11:06\n👛 +$1.00 Paid through Telegram\nReference: …0042",
        f"25 Nov 2026, 11:05 · {KHMER_NAME}\n⚡ Top-up $1.00: declined by you\n"
        f"Reference: {references[declined]}",
        f"25 Nov 2026, 11:04 · {KHMER_NAME}\n⚠️ Warning: low balance",
        f"25 Nov 2026, 11:01 · {KHMER_NAME}\n👛 −$5.00 Top-up of a line\n"
        f"Reference: {references[done]}",
        f"25 Nov 2026, 11:01 · {KHMER_NAME}\n⚡ Top-up $5.00: done\n"
        f"Reference: {references[done]}",
        "25 Nov 2026, 11:00\n👛 +$20.00 Cash or bank transfer\nReference: …1-25",
    ]
    assert keyboard(harness.api.sent()[-1]) == [
        ("• All lines", "v1:hi:all:0"), (KHMER_NAME, f"v1:hi:{line_id}:0"),
        ("📄 Export CSV", "v1:hx:all"), ("📊 Monthly summary", "v1:hm:now")]


async def test_pages_are_turned_in_place(harness: BotHarness, clock: ManualClock) -> None:
    await harness.send(text_update("/start"))
    for number in range(10):  # ten credits: eight on the first page, two on the second
        await credit(harness, 100 * (number + 1), f"CASH-{number:04d}")
        clock.advance(timedelta(minutes=1))
    await harness.send(text_update("/history"))
    messages = len(harness.api.sent())

    first = harness.api.sent()[-1]
    assert first["text"].startswith("🧾 History of all your lines (page 1 of 2)")
    assert first["text"].count("Cash or bank transfer") == 8
    assert "+$10.00" in first["text"] and "+$2.00" not in first["text"]
    assert keyboard(first)[0] == ("Older ›", "v1:hi:all:1")

    await harness.send(callback_update("v1:hi:all:1", message_id=77))
    second = last_edit(harness)
    assert int(second["message_id"]) == 77  # the same message, edited
    assert second["text"].startswith("🧾 History of all your lines (page 2 of 2)")
    assert second["text"].count("Cash or bank transfer") == 2
    assert "+$2.00" in second["text"] and "+$1.00" in second["text"]
    assert keyboard(second)[0] == ("‹ Newer", "v1:hi:all:0")
    await harness.send(callback_update("v1:hi:all:0", message_id=77))
    assert last_edit(harness)["text"] == first["text"]
    await harness.send(callback_update("v1:hi:all:99", message_id=77))  # past the end
    assert last_edit(harness)["text"] == second["text"]
    assert len(harness.api.sent()) == messages  # never a new message per page


async def test_a_lines_card_opens_that_lines_history(harness: BotHarness,
                                                    clock: ManualClock) -> None:
    line_id = await bind(harness, CELLCARD)
    other = await bind(harness, SMART)
    await credit(harness, 2000, "CASH-1")
    await top_up(harness, line_id, 500, approve=True)
    await top_up(harness, other, 200, approve=False)
    await harness.send(callback_update(f"v1:ln:{line_id}:show"))
    assert ("🧾 History", f"v1:hi:{line_id}:0") in keyboard(last_edit(harness))

    await harness.send(callback_update(f"v1:hi:{line_id}:0"))

    text = last_edit(harness)["text"]
    assert text.startswith("🧾 History of 012 ••• 678\n\n")
    assert text.count("Top-up $5.00: done") == 1 and "−$5.00 Top-up of a line" in text
    assert "Cash or bank transfer" not in text  # the wallet's, not the line's
    assert "$2.00" not in text  # the other line's
    assert ("• 012 ••• 678", f"v1:hi:{line_id}:0") in keyboard(last_edit(harness))
    assert ("📄 Export CSV", f"v1:hx:{line_id}") in keyboard(last_edit(harness))


async def test_a_line_without_history_says_what_will_appear(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update(f"v1:hi:{line_id}:0"))
    assert ("Nothing yet. Its top-ups, the money held and returned for them, and its balance "
            "warnings will appear here, newest first.") in last_edit(harness)["text"]


async def test_the_wallet_opens_the_history(harness: BotHarness) -> None:
    await harness.send(text_update("/start"))
    await credit(harness, 1500, "CASH-1")
    await harness.send(text_update("/wallet"))
    assert ("🧾 History", "v1:hi:all:0") in keyboard(harness.api.sent()[-1])

    await harness.send(callback_update("v1:hi:all:0"))

    assert "👛 +$15.00 Cash or bank transfer" in last_edit(harness)["text"]


@pytest.mark.parametrize("data", [
    "v1:hi:{other}:0",  # someone else's line
    "v1:hi:{missing}:0", "v1:hi:lines:0", "v1:hi:all:x", "v1:hi:all",
    "v1:hx:{other}", "v1:hx:-1",
    "v1:hm:2999-01", "v1:hm:2026-13", "v1:hm:soon",
    "v1:hp:yes:2026-11", "v1:hp:on:2026-1",
])
async def test_a_forged_or_stale_button_changes_nothing(harness: BotHarness,
                                                       data: str) -> None:
    mine = await bind(harness, CELLCARD)
    other = await bind(harness, SMART, user_id=STRANGER)
    calls = len(harness.api.calls)

    await harness.send(callback_update(data.format(other=other, missing=mine + other + 9)))

    assert last_answer(harness)["text"] == STALE
    assert [call.method for call in harness.api.calls[calls:]] == ["answerCallbackQuery"]
    assert not await opted_in(harness)


# --- 2. the CSV export --------------------------------------------------------------------


def exported(harness: BotHarness) -> tuple[bytes, list[dict[str, str]]]:
    document = harness.api.sent("sendDocument")[-1]
    [content] = document["_files"].values()
    assert isinstance(content, bytes)
    return content, list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


def amount_of(text: str, minor: int) -> None:
    """A decimal string in USD's minor-unit precision, of exactly ``minor`` cents."""
    assert re.fullmatch(r"-?[0-9]+\.[0-9]{2}", text), text
    assert Decimal(text).scaleb(2) == minor


async def test_the_csv_export_reads_back_as_the_ledger_and_the_charges_exactly(
        harness: BotHarness, clock: ManualClock) -> None:
    line_id = await busy_month(harness, clock)
    await harness.send(text_update("/history"))

    await harness.send(callback_update("v1:hx:all"))

    content, rows = exported(harness)
    assert content.startswith(b"\xef\xbb\xbf")  # spreadsheet programs then read it as UTF-8
    assert KHMER_NAME.encode() in content
    document = harness.api.sent("sendDocument")[-1]
    assert int(document["chat_id"]) == USER
    assert "6 rows" in document["caption"]
    c = harness.components
    async with c.db.read() as conn:
        entries = (await conn.execute(select(ledger_entries).where(
            ledger_entries.c.user_id == USER))).mappings().all()
        made = (await conn.execute(select(charges).where(
            charges.c.user_id == USER))).mappings().all()
        payments = PaymentsRepository(conn, c.cipher)
        credited = await payments.by_external_id("operator:CASH-2026-11-25")
        paid = await payments.by_external_id("stxREFUNDED-0042")
    assert credited is not None and paid is not None
    references = {row["id"]: row["reference"] for row in made}
    payment_refs = {credited.id: masked_reference("CASH-2026-11-25"),
                    paid.id: masked_reference("stxREFUNDED-0042")}
    assert [row["record"] for row in rows].count("ledger") == len(entries) == 4
    assert [row["record"] for row in rows].count("charge") == len(made) == 2
    assert list(rows[0]) == ["record", "id", "date", "kind", "state", "line", "amount",
                             "currency", "charge_reference", "payment_reference"]
    dates = [datetime.fromisoformat(row["date"]) for row in rows]
    assert dates == sorted(dates)  # oldest first
    assert all(date.utcoffset() == TOKYO for date in dates)  # the user's zone, with offset

    ledger = {int(row["id"]): row for row in rows if row["record"] == "ledger"}
    assert set(ledger) == {entry["id"] for entry in entries}
    for entry in entries:
        row = ledger[entry["id"]]
        assert datetime.fromisoformat(row["date"]) == entry["created_at"]
        assert (row["kind"], row["state"], row["currency"]) == (entry["kind"], "",
                                                                entry["currency"])
        amount_of(row["amount"], entry["amount_minor"])
        assert row["charge_reference"] == references.get(entry["charge_id"], "")
        assert row["payment_reference"] == payment_refs.get(entry["payment_id"], "")
        assert row["line"] == (KHMER_NAME if entry["charge_id"] else "")
    charged = {int(row["id"]): row for row in rows if row["record"] == "charge"}
    assert set(charged) == set(references)
    for made_charge in made:
        row = charged[made_charge["id"]]
        assert datetime.fromisoformat(row["date"]) == made_charge["created_at"]
        assert (row["kind"], row["state"], row["line"], row["currency"],
                row["charge_reference"], row["payment_reference"]) == (
            made_charge["cause"], made_charge["state"], KHMER_NAME,
            made_charge["currency"], made_charge["reference"], "")
        amount_of(row["amount"], made_charge["amount_minor"])
    # The ledger's sum is the wallet: $20 in, $5 spent, $1 paid and refunded.
    assert sum(Decimal(row["amount"]) for row in ledger.values()) == Decimal("15.00")
    assert await c.wallet.available(USER) == Money(1500, "USD")

    await harness.send(callback_update(f"v1:hx:{line_id}"))  # one line: its charges' rows
    _content, line_rows = exported(harness)
    assert sorted((row["record"], row["kind"]) for row in line_rows) == [
        ("charge", "manual"), ("charge", "manual"), ("ledger", "hold")]


# --- 3. the monthly summary and its push --------------------------------------------------


async def test_the_monthly_summary_from_history_month_by_month(harness: BotHarness,
                                                               clock: ManualClock) -> None:
    clock.set(datetime(2026, 10, 20, 3, 0, tzinfo=UTC))
    await harness.send(text_update("/start"))
    await credit(harness, 5000, "CASH-OCT")
    await busy_month(harness, clock)
    await harness.send(text_update("/history"))

    await harness.send(callback_update("v1:hm:now", message_id=40))

    november = last_edit(harness)
    assert int(november["message_id"]) == 40
    assert november["text"] == "\n\n".join([
        "📊 November 2026, so far",
        f"{KHMER_NAME}\nTop-ups: 1, $5.00\nWarnings: 1",
        "All lines\nTop-ups: 1, $5.00\nWarnings: 1\nAdded to your wallet: $21.00"])
    assert keyboard(november) == [
        ("‹ October 2026", "v1:hm:2026-10"),
        ("🔔 Send me this on the 1st of each month", "v1:hp:on:2026-11"),
        ("« History", "v1:hi:all:0")]

    await harness.send(callback_update("v1:hm:2026-10", message_id=40))
    october = last_edit(harness)
    assert october["text"].startswith("📊 October 2026\n\n")
    assert "Top-ups: 0, $0.00" in october["text"]
    assert "Added to your wallet: $50.00" in october["text"]
    assert keyboard(october)[0] == ("November 2026 ›", "v1:hm:2026-11")
    assert all(not data.startswith("v1:hm:2026-09") for _, data in keyboard(october))


async def test_the_opt_in_push_arrives_once_on_the_first(harness: BotHarness,
                                                         clock: ManualClock) -> None:
    await busy_month(harness, clock)
    assert harness.app.job_queue is not None
    assert harness.app.job_queue.get_jobs_by_name("monthly_summaries")  # the repeating job
    await harness.send(callback_update("v1:hm:now", message_id=40))

    await harness.send(callback_update("v1:hp:on:2026-11", message_id=40))

    assert last_answer(harness)["text"] == \
        "I will send you the summary on the 1st of each month."
    assert await opted_in(harness)
    assert ("🔕 Stop the summary on the 1st", "v1:hp:off:2026-11") in keyboard(
        last_edit(harness))
    history = harness.components.history
    clock.set(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))  # 08:59 on 1 Dec in Tokyo
    assert await history.queue_monthly_summaries() == 0
    clock.set(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))  # 09:30 there
    assert await history.queue_monthly_summaries() == 1
    before = len(harness.api.sent())
    await deliver(harness, rounds=10)

    [pushed] = [p for p in harness.api.sent()[before:]
                if str(p["text"]).startswith("📊 Your summary of November 2026")]
    assert pushed["text"] == "\n".join([
        "📊 Your summary of November 2026", "Top-ups: 1, $5.00", "Warnings: 1",
        "Added to your wallet: $21.00"])
    assert keyboard(pushed) == [("📊 Each line", "v1:hm:2026-11"),
                                ("🔕 Stop the summary on the 1st", "v1:hp:off:2026-11")]
    assert await history.queue_monthly_summaries() == 0  # the job again: nothing more
    await deliver(harness)
    assert len([t for t in sent_texts(harness) if t.startswith("📊 Your summary")]) == 1

    await harness.send(callback_update("v1:hm:2026-11", message_id=500))
    details = last_edit(harness)
    assert details["text"].startswith("📊 November 2026\n\n")  # over now: no "so far"
    assert f"{KHMER_NAME}\nTop-ups: 1, $5.00\nWarnings: 1" in details["text"]
    await harness.send(callback_update("v1:hp:off:2026-11", message_id=500))
    assert last_answer(harness)["text"] == "No more summaries on the 1st."
    assert not await opted_in(harness)

