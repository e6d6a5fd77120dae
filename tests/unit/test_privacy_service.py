"""PrivacyService on every backend: a forget deletes a user's lines, readings, rules, support
requests, drafts, messages and settings; keeps charges, payments and wallet movements
without a number, ICCID or name (a line charges reference stays as a tombstone); leaves
other users alone; keeps a running lockout on the number without naming the user; and is
refused, changing nothing, while money or a charge is open or when its button is stale."""

from __future__ import annotations

import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy
from sqlalchemy import JSON, Column, Text, func, insert, select

from bot.clock import ManualClock
from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.operators import Operator
from bot.domain.phone import parse_cambodian_mobile
from bot.domain.privacy import money_token, number_shapes, scrub_details
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from bot.domain.support import SupportCategory
from bot.services.history import ChargeItem, HistoryService
from bot.services.otp import OtpService
from bot.services.privacy import Blocked, Forgotten, PrivacyService, Ready, Stale
from bot.services.support import Opened, SupportService
from bot.services.users import UsersService
from storage.audit import AuditRepository
from storage.charges import ChargesRepository
from storage.crypto import FieldCipher
from storage.db import Database
from storage.encrypted_fields import ENCRYPTED
from storage.lines import FORGOTTEN_LABEL, LinesRepository
from storage.notifications import NotificationsRepository
from storage.otp import OtpRepository
from storage.payments import PaymentsRepository
from storage.privacy import DECISIONS, TRIGGER_COLUMNS
from storage.readings import ReadingsRepository
from storage.tables import (
    audit_log,
    charges,
    khqr_invoices,
    ledger_entries,
    line_readings,
    lines,
    metadata,
    notifications,
    otp_challenges,
    payment_disputes,
    ptb_conversations,
    ptb_user_data,
    recharge_rules,
    support_messages,
    support_tickets,
    users,
    wallet_payments,
)
from storage.users import UsersRepository
from storage.wallet import WalletRepository
from tests.privacy_scan import count_rows, scan

ALICE, BOB = 7101, 7202
ADMIN_CHAT = -100_900
NUMBER = parse_cambodian_mobile("012345678")  # Alice's line, with charges: a tombstone
OLD_NUMBER = parse_cambodian_mobile("0969876543")  # unbound long ago, no charges
DRAFT = parse_cambodian_mobile("0889123456")  # being proven: a code sent, locked
BOB_NUMBER = parse_cambodian_mobile("0977000111")
ICCID = "8985511122233344455"
NICKNAME = "Chanthavy Sokunthea's phone"
SUPPORT_TEXT = f"Chanthavy here, my number {NUMBER.e164} was charged twice"
PAYER = "chanthavy.sokunthea@aclb"


class NoSms:
    async def send(self, phone_e164: str, text: str) -> None:
        raise AssertionError("no code is sent here")


@pytest.fixture
def privacy(db: Database, cipher: FieldCipher, clock: ManualClock) -> PrivacyService:
    users = UsersService(db, clock, ZoneInfo("Asia/Phnom_Penh"))
    return PrivacyService(db, cipher, clock, users, khqr_grace_minutes=30)


def needles() -> list[str]:
    return [*number_shapes(NUMBER), *number_shapes(OLD_NUMBER), *number_shapes(DRAFT),
            ICCID, NICKNAME, "Chanthavy", PAYER]


async def charge(conn: object, cipher: FieldCipher, clock: ManualClock, *, user_id: int,
                 line_id: int, key: str, to: ChargeState, rule_id: int | None = None) -> int:
    repo = ChargesRepository(conn, cipher)  # type: ignore[arg-type]
    first = (ChargeState.AWAITING_APPROVAL if to is ChargeState.AWAITING_APPROVAL
             else ChargeState.APPROVED)
    record, _ = await repo.create(idempotency_key=key, user_id=user_id, line_id=line_id,
                                  amount=Money(500, "USD"), cause="manual", rule_id=rule_id,
                                  state=first, now=clock.now(), trigger=TriggerReading(
                                      LineReading(ReadingSource.PROVIDER, clock.now(),
                                                  balance=Money(42, "USD")), read_by="Airalo")
                                  if rule_id is not None else None)
    path = {ChargeState.SUBMITTED: [ChargeState.SUBMITTED],
            ChargeState.SUCCEEDED: [ChargeState.SUBMITTED, ChargeState.SUCCEEDED]}.get(to, [])
    current = record.state
    for step in path:
        assert await repo.transition(record.id, current, step, clock.now(),
                                     balance_after_minor=1234 if step is ChargeState.SUCCEEDED
                                     else None)
        current = step
    return record.id


async def alice_and_bob(db: Database, cipher: FieldCipher, clock: ManualClock,
                        support: SupportService) -> dict[str, int]:
    """Alice with everything a user can leave here (her wallet settled at zero), and Bob
    beside her, whose data must survive her forget. The ids of what was made."""
    start = clock.now()
    clock.advance(timedelta(hours=-3))  # the old code, the unbound line and the top-up
    made: dict[str, int] = {}
    async with db.write() as conn:
        repo = UsersRepository(conn)
        for user in (ALICE, BOB):
            await repo.ensure(user, language="km", now=clock.now())
        await repo.update(ALICE, now=clock.now(), timezone="Asia/Bangkok",
                          quiet_start_minute=1320, quiet_end_minute=420)
        await conn.execute(users.update().where(users.c.id == ALICE).values(
            monthly_summary=True, promotions=True))
        lines_repo = LinesRepository(conn, cipher)
        line = await lines_repo.add(owner_id=ALICE, number=NUMBER, now=clock.now(),
                                    nickname=NICKNAME, verified_at=clock.now())
        old = await lines_repo.add(owner_id=ALICE, number=OLD_NUMBER, now=clock.now())
        await lines_repo.unbind(old.id, now=clock.now())
        esim = await lines_repo.add_esim(owner_id=ALICE, operator=Operator.SMART,
                                         now=clock.now())
        await lines_repo.attach_iccid(esim.id, ICCID, now=clock.now(), check_at=clock.now())
        bob_line = await lines_repo.add(owner_id=BOB, number=BOB_NUMBER, now=clock.now(),
                                        nickname="Bob's")
        made.update(line=line.id, old=old.id, esim=esim.id, bob_line=bob_line.id)
        rule = await conn.execute(insert(recharge_rules).values(
            line_id=line.id, owner_id=ALICE, trigger_kind="calendar", calendar="monthly",
            calendar_value=1, amount_minor=500, currency="USD", monthly_cap_minor=2000,
            approval="ask", status="active", created_at=clock.now(), updated_at=clock.now(),
        ).returning(recharge_rules.c.id))
        made["rule"] = int(rule.scalar_one())
        for line_id in (line.id, esim.id, bob_line.id):
            await ReadingsRepository(conn).add(line_id, LineReading(
                source=ReadingSource.USER, read_at=clock.now(), balance=Money(125, "USD")),
                recorded_at=clock.now())
        # $5 paid in, spent on a $5 top-up: the wallet is at zero.
        payment = await PaymentsRepository(conn, cipher).record_payment(
            user_id=ALICE, source="operator", external_id="operator:cash-1",
            amount=Money(500, "USD"), now=clock.now(), actor="cli")
        assert payment is not None
        made["payment"] = payment
        made["charge"] = await charge(conn, cipher, clock, user_id=ALICE, line_id=line.id,
                                      key=f"rule:{made['rule']}:2026-11",
                                      to=ChargeState.SUCCEEDED, rule_id=made["rule"])
        wallet = WalletRepository(conn)
        assert await wallet.hold(charge_id=made["charge"], user_id=ALICE,
                                 amount=Money(500, "USD"), now=clock.now())
        assert await wallet.capture(made["charge"], now=clock.now())
        made["bob_charge"] = await charge(conn, cipher, clock, user_id=BOB,
                                          line_id=bob_line.id, key="manual:bob:1",
                                          to=ChargeState.SUCCEEDED)
        otp = OtpRepository(conn, cipher)
        old_code = await otp.create(user_id=ALICE, phone_e164=NUMBER.e164, purpose="bind",
                                    subject=None, code="123456", now=clock.now(),
                                    expires_at=clock.now() + timedelta(minutes=5))
        await otp.consume(old_code.id, now=clock.now())
        made["old_code"] = old_code.id
        # A KHQR she paid: its payer account goes, its references stay.
        await conn.execute(insert(khqr_invoices).values(
            user_id=ALICE, md5="a" * 32, bill_number="TU-0001", payload="000201...",
            amount_minor=500, currency="USD", credit_minor=500, credit_currency="USD",
            state="paid", created_at=clock.now(), expires_at=clock.now(), paid_at=clock.now(),
            payer_bank="aclb", payer_account_enc=cipher.encrypt(PAYER)))
    clock.set(start)

    async with db.write() as conn:
        now = clock.now()
        otp = OtpRepository(conn, cipher)
        draft_code = await otp.create(user_id=ALICE, phone_e164=DRAFT.e164, purpose="bind",
                                      subject=None, code="654321", now=now,
                                      expires_at=now + timedelta(minutes=5))
        await otp.record_failure(draft_code.id, locked_until=now + timedelta(minutes=15))
        made["draft_code"] = draft_code.id
        audit = AuditRepository(conn)
        await audit.record(at=now, actor=f"user:{ALICE}", action="line.bound",
                           subject=str(line.id), details={"line": NUMBER.masked,
                                                          "operator": "cellcard"})
        await audit.record(at=now, actor=f"user:{ALICE}", action="user.language",
                           details={"language": "km"})
        await audit.record(at=now, actor="system", action="otp.sms_failed",
                           subject=str(draft_code.id), details={"line": DRAFT.masked})
        # A code whose SMS failed is deleted at once: its "otp.sms_failed" row (by the
        # system, the masked number) is hers only through her "otp.sent" row.
        await audit.record(at=now, actor=f"user:{ALICE}", action="otp.sent", subject="999",
                           details={"purpose": "bind", "line": OLD_NUMBER.masked})
        await audit.record(at=now, actor="system", action="otp.sms_failed", subject="999",
                           details={"line": OLD_NUMBER.masked})
        await audit.record(at=now, actor="system", action="charge.succeeded",
                           subject=str(made["charge"]),
                           details={"amount": "5.00", "line": line.id, "cause": "manual"})
        await audit.record(at=now, actor="cli", action="wallet.credit",
                           subject=f"payment:{payment}",
                           details={"user_id": ALICE, "amount_minor": 500, "currency": "USD"})
        await audit.record(at=now, actor=f"user:{BOB}", action="line.bound",
                           subject=str(bob_line.id), details={"line": BOB_NUMBER.masked})
        outbox = NotificationsRepository(conn)
        await outbox.enqueue(user_id=ALICE, chat_id=ALICE, dedupe_key="warning:1", kind="warning",
                             params={"line": NICKNAME}, now=now)
        await outbox.enqueue(user_id=ALICE, chat_id=ALICE, dedupe_key="receipt:1", kind="receipt",
                             params={"line": NUMBER.masked}, now=now)
        sent = await outbox.by_key("receipt:1")
        assert sent is not None
        await outbox.mark_sent(sent.id, message_id=77, now=now)
        await outbox.enqueue(user_id=ALICE, chat_id=ADMIN_CHAT, dedupe_key="stuck:1:admin",
                             kind="charge_stuck", params={"line": NUMBER.masked}, now=now)
        await outbox.enqueue(user_id=ALICE, chat_id=ALICE, dedupe_key="broadcast:1:7101",
                             kind="promotion", params={"text": "Half price data"}, now=now)
        await outbox.enqueue(user_id=BOB, chat_id=BOB, dedupe_key="warning:bob", kind="warning",
                             params={"line": "Bob's"}, now=now)
        await conn.execute(insert(ptb_user_data).values(
            user_id=ALICE, data_enc=cipher.encrypt(json.dumps({"bind": DRAFT.e164}))))
        await conn.execute(insert(ptb_conversations).values(
            name="binding", key=json.dumps([ALICE, ALICE]), state=json.dumps("bind:code")))
        await conn.execute(insert(ptb_conversations).values(
            name="per_user", key=json.dumps([ALICE]), state=json.dumps(1)))
        await conn.execute(insert(ptb_conversations).values(
            name="binding", key=json.dumps([BOB, BOB]), state=json.dumps("bind:code")))
    opened = await support.open_ticket(ALICE, SUPPORT_TEXT, category=SupportCategory.GENERAL,
                                       charge_id=None, message_id=901)
    assert isinstance(opened, Opened)
    made["ticket"] = opened.ticket_id
    return made


@pytest.fixture
def support(db: Database, cipher: FieldCipher, clock: ManualClock) -> SupportService:
    return SupportService(db, cipher, clock, admin_chat_ids=(ADMIN_CHAT,))


async def rows(db: Database, table: object, *where: object) -> list[dict[str, object]]:
    async with db.read() as conn:
        result = await conn.execute(select(table).where(*where))  # type: ignore[call-overload]
        return [dict(row) for row in result.mappings()]


async def test_a_forget_deletes_what_is_hers_and_keeps_the_accounts_without_naming_her(
        db: Database, cipher: FieldCipher, clock: ManualClock, privacy: PrivacyService,
        support: SupportService) -> None:
    made = await alice_and_bob(db, cipher, clock, support)
    assert await scan(db, needles())  # the scan sees her data before (it is not vacuous)
    async with db.read() as conn:
        ciphertexts = [value for value in (await conn.execute(
            select(lines.c.phone_enc, lines.c.phone_index, lines.c.iccid_enc,
                   lines.c.iccid_index).where(lines.c.owner_id == ALICE))).all()
            for value in value if value]
        ciphertexts += list((await conn.execute(select(support_messages.c.text_enc)))
                            .scalars())
        ciphertexts += list((await conn.execute(select(ptb_user_data.c.data_enc).where(
            ptb_user_data.c.user_id == ALICE))).scalars())
        ciphertexts += list((await conn.execute(select(khqr_invoices.c.payer_account_enc)))
                            .scalars())
    # 2 numbers and their blind indexes, an ICCID and its index, the support message, the
    # draft, the payer's account.
    assert len(ciphertexts) == 9
    before = await count_rows(db)
    bob_before = (await rows(db, lines, lines.c.owner_id == BOB),
                  await rows(db, notifications, notifications.c.user_id == BOB),
                  await rows(db, audit_log, audit_log.c.actor == f"user:{BOB}"),
                  await rows(db, ptb_conversations, ptb_conversations.c.key == f"[{BOB}, {BOB}]"))

    review = await privacy.review(ALICE)
    assert not isinstance(review, Blocked)
    assert (review.stored.lines, review.stored.readings, review.stored.rules,
            review.stored.tickets, review.stored.support_messages) == (3, 2, 1, 1, 1)
    assert (review.stored.charges, review.stored.payments, review.stored.movements) == (1, 1, 2)

    clock.advance(timedelta(minutes=1))
    outcome = await privacy.forget(ALICE, asked_at=clock.now() - timedelta(seconds=30))

    assert isinstance(outcome, Forgotten)
    erased = outcome.erased
    assert (erased.lines_deleted, erased.lines_scrubbed, erased.readings, erased.rules) == (
        2, 1, 2, 1)
    assert (erased.tickets, erased.support_messages, erased.drafts) == (1, 1, 1)
    assert (erased.codes_deleted, erased.codes_detached) == (1, 1)
    assert erased.offers_withdrawn == 1
    # Nothing that names her anywhere: numbers in every shape, her names, the ICCID, her
    # payer account; nor the ciphertexts and blind indexes that held them.
    assert await scan(db, needles()) == []
    assert await scan(db, ciphertexts) == []

    # The tombstone: her top-up's line, with nothing left to find it by.
    (tombstone,) = await rows(db, lines, lines.c.owner_id == ALICE)
    assert tombstone["id"] == made["line"]
    assert tombstone["forgotten_at"] == clock.now() and tombstone["unbound_at"] is not None
    assert all(tombstone[name] is None for name in (
        "phone_enc", "phone_index", "iccid_enc", "iccid_index", "nickname", "next_check_at",
        "plan_product_id", "verified_at"))
    async with db.read() as conn:
        record = await LinesRepository(conn, cipher).get(made["line"])
        assert await LinesRepository(conn, cipher).by_number(NUMBER.e164) is None
    assert record is not None and record.label == FORGOTTEN_LABEL
    assert record.operator is Operator.CELLCARD and not record.is_bound

    # Kept for the accounts: the charge (without the rule it came from or the line's balance
    # after it), the payment, the ledger, the hold, the KHQR's references.
    (kept,) = await rows(db, charges, charges.c.user_id == ALICE)
    assert (kept["id"], kept["amount_minor"], kept["state"]) == (made["charge"], 500,
                                                                 "succeeded")
    assert kept["rule_id"] is None and kept["balance_after_minor"] is None
    assert all(kept[column] is None for column in TRIGGER_COLUMNS)  # the reading it fired on
    assert kept["reference"] and kept["idempotency_key"] == f"rule:{made['rule']}:2026-11"
    assert len(await rows(db, wallet_payments, wallet_payments.c.user_id == ALICE)) == 1
    assert len(await rows(db, ledger_entries, ledger_entries.c.user_id == ALICE)) == 2
    (khqr,) = await rows(db, khqr_invoices, khqr_invoices.c.user_id == ALICE)
    assert khqr["payer_account_enc"] is None and khqr["md5"] == "a" * 32
    async with db.read() as conn:
        assert (await WalletRepository(conn).available(ALICE, "USD")).minor == 0

    # Deleted: readings of her lines, her rules, requests, drafts, conversation.
    assert await rows(db, line_readings, line_readings.c.line_id.in_(
        [made["line"], made["esim"], made["old"]])) == []
    assert await rows(db, recharge_rules, recharge_rules.c.owner_id == ALICE) == []
    assert await rows(db, support_tickets) == []
    assert await rows(db, ptb_user_data, ptb_user_data.c.user_id == ALICE) == []
    assert await rows(db, ptb_conversations,
                      ptb_conversations.c.key == f"[{ALICE}, {ALICE}]") == []
    assert await rows(db, ptb_conversations, ptb_conversations.c.key == f"[{ALICE}]") == []

    # The outbox keeps only the offer's copy, withdrawn (the broadcast's tally reads it).
    (offer,) = await rows(db, notifications, notifications.c.user_id == ALICE)
    assert (offer["kind"], offer["status"]) == ("promotion", "dropped")

    # Her row: the id and when, no settings; she reads as a new user.
    (row,) = await rows(db, users, users.c.id == ALICE)
    assert (row["language"], row["timezone"], row["quiet_start_minute"],
            row["quiet_end_minute"], row["monthly_summary"], row["promotions"]) == (
        None, None, None, None, False, False)
    assert row["forgotten_at"] == clock.now()

    # The audit log keeps who did what when, without her details; the forget is audited
    # with counts only.
    async with db.read() as conn:
        entries = await AuditRepository(conn).latest(limit=100)
    by_action = {(e.action, e.actor): e for e in entries}
    assert by_action[("line.bound", f"user:{ALICE}")].details == {"operator": "cellcard"}
    assert by_action[("user.language", f"user:{ALICE}")].details == {}
    assert [e.details for e in entries if e.action == "otp.sms_failed"] == [{}, {}]
    assert by_action[("charge.succeeded", "system")].details["line"] == made["line"]
    forgot = by_action[("user.forgotten", f"user:{ALICE}")]
    assert forgot.details == erased.as_details()
    assert all(isinstance(value, int) for value in forgot.details.values())

    # Bob is untouched.
    assert bob_before == (await rows(db, lines, lines.c.owner_id == BOB),
                          await rows(db, notifications, notifications.c.user_id == BOB),
                          await rows(db, audit_log, audit_log.c.actor == f"user:{BOB}"),
                          await rows(db, ptb_conversations,
                                     ptb_conversations.c.key == f"[{BOB}, {BOB}]"))
    after = await count_rows(db)
    assert after["charges"] == before["charges"] and after["holds"] == before["holds"]
    assert after["line_readings"] == before["line_readings"] - 2


async def test_a_lockout_on_the_number_outlives_the_forget_and_the_number_binds_again(
        db: Database, cipher: FieldCipher, clock: ManualClock, privacy: PrivacyService,
        support: SupportService) -> None:
    """Forgetting must not be a way around the number's lockout and hourly cap: the code
    that locked it stays, naming nobody. The number itself is free for a new line."""
    await alice_and_bob(db, cipher, clock, support)
    outcome = await privacy.forget(ALICE, asked_at=clock.now())
    assert isinstance(outcome, Forgotten)

    async with db.read() as conn:
        otp = OtpRepository(conn, cipher)
        assert await otp.number_locked_until(phone_e164=DRAFT.e164, now=clock.now()) == (
            clock.now() + timedelta(minutes=15))
        assert await otp.sent_since(phone_e164=DRAFT.e164,
                                    since=clock.now() - timedelta(hours=1)) == 1
        assert await otp.user_locked_until(user_id=ALICE, now=clock.now()) is None
        detached = (await conn.execute(select(otp_challenges.c.user_id, otp_challenges.c.subject)
                                       )).all()
    assert [tuple(row) for row in detached] == [(None, None)]

    async with db.write() as conn:
        again = await LinesRepository(conn, cipher).add(owner_id=BOB, number=NUMBER,
                                                        now=clock.now())
    async with db.read() as conn:
        found = await LinesRepository(conn, cipher).by_number(NUMBER.e164)
    assert found is not None and found.id == again.id and found.owner_id == BOB

    # The purge job deletes it once it no longer counts: the lockout over, its hour out.
    codes = OtpService(db, cipher, NoSms(), clock)
    clock.advance(timedelta(minutes=59))
    assert await codes.purge() == 0
    clock.advance(timedelta(minutes=1))
    assert await codes.purge() == 1
    assert await rows(db, otp_challenges) == []


async def everything(db: Database) -> dict[str, int]:
    return await count_rows(db)


@pytest.mark.parametrize("what", ["below_zero", "hold", "awaiting", "submitted", "khqr",
                                  "dispute"])
async def test_money_or_an_open_charge_refuses_the_forget_and_changes_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock, privacy: PrivacyService,
        what: str) -> None:
    now = clock.now()
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=now)
        line = await LinesRepository(conn, cipher).add(owner_id=ALICE, number=NUMBER, now=now)
        if what == "below_zero":  # a Stars refund Telegram reported after it was spent
            await conn.execute(insert(ledger_entries).values(
                user_id=ALICE, currency="USD", amount_minor=-250, kind="refund",
                created_at=now))
        elif what == "hold":
            await PaymentsRepository(conn, cipher).record_payment(
                user_id=ALICE, source="operator", external_id="operator:cash-9",
                amount=Money(500, "USD"), now=now, actor="cli")
            charge_id = await charge(conn, cipher, clock, user_id=ALICE, line_id=line.id,
                                     key="manual:a:1", to=ChargeState.APPROVED)
            await WalletRepository(conn).hold(charge_id=charge_id, user_id=ALICE,
                                              amount=Money(500, "USD"), now=now)
        elif what in ("awaiting", "submitted"):
            await charge(conn, cipher, clock, user_id=ALICE, line_id=line.id, key="manual:a:2",
                         to=ChargeState.AWAITING_APPROVAL if what == "awaiting"
                         else ChargeState.SUBMITTED)
        elif what == "khqr":
            await conn.execute(insert(khqr_invoices).values(
                user_id=ALICE, md5="b" * 32, bill_number="TU-0002", payload="000201...",
                amount_minor=500, currency="USD", credit_minor=500, credit_currency="USD",
                state="expired", created_at=now, expires_at=now, next_check_at=now))
        else:
            await conn.execute(insert(payment_disputes).values(
                user_id=ALICE, charge_index="c" * 64, charge_enc=cipher.encrypt("stx-1"),
                paid_minor=100, paid_currency="USD", reason="mismatch", status="held",
                created_at=now))
    before = await everything(db)

    review = await privacy.review(ALICE)
    outcome = await privacy.forget(ALICE, asked_at=now)

    assert isinstance(review, Blocked) and isinstance(outcome, Blocked)
    obstacles = outcome.obstacles
    expected = {
        "below_zero": obstacles.balances == (Money(-250, "USD"),),
        "hold": obstacles.held == (Money(500, "USD"),) and obstacles.charges_open == 1,
        "awaiting": obstacles.charges_open == 1,
        "submitted": obstacles.charges_open == 1,
        "khqr": obstacles.khqr_checked_until == now + timedelta(minutes=30),
        "dispute": obstacles.disputes_held == 1,
    }
    assert expected[what], obstacles
    assert await everything(db) == before
    async with db.read() as conn:
        assert (await LinesRepository(conn, cipher).get(line.id)) is not None
        assert (await conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "user.forgotten"))).scalar_one() == 0


async def test_a_stale_confirmation_changes_nothing(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        privacy: PrivacyService) -> None:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=clock.now())
        await LinesRepository(conn, cipher).add(owner_id=ALICE, number=NUMBER, now=clock.now())
    before = await everything(db)
    for asked in (clock.now() - privacy.confirm_within - timedelta(seconds=1),
                  clock.now() + timedelta(minutes=5)):
        assert isinstance(await privacy.forget(ALICE, asked_at=asked), Stale)
    assert await everything(db) == before

    asked = clock.now()
    clock.advance(timedelta(minutes=2))
    assert isinstance(await privacy.forget(ALICE, asked_at=asked), Forgotten)
    # She comes back and binds her line again; the old button, pressed again, is stale.
    async with db.write() as conn:
        await LinesRepository(conn, cipher).add(owner_id=ALICE, number=NUMBER, now=clock.now())
    before = await everything(db)
    assert isinstance(await privacy.forget(ALICE, asked_at=asked), Stale)
    assert await everything(db) == before


def test_audit_details_lose_settings_labels_and_mentions_but_keep_ids_and_amounts() -> None:
    details = {"line": "012 ••• 678", "operator": "cellcard", "language": "km",
               "amount": "5.00", "rules": [1, 2], "note": "for Chanthavy", "user_id": 7}
    assert scrub_details(details, ["Chanthavy"]) == {
        "operator": "cellcard", "amount": "5.00", "rules": [1, 2], "user_id": 7}
    assert scrub_details({"line": 12, "cause": "manual"}, []) == {"line": 12, "cause": "manual"}


async def test_money_in_the_wallet_is_left_there_only_when_the_question_showed_it(
        db: Database, cipher: FieldCipher, clock: ManualClock,
        privacy: PrivacyService) -> None:
    """Nothing in the bot pays cash, a transfer or a KHQR back, and a leftover below the
    smallest top-up could never be spent: money does not block a forget, but the question
    shows it and the press leaves exactly that amount, under the user's id."""
    async with db.write() as conn:
        await UsersRepository(conn).ensure(ALICE, language="en", now=clock.now())
        await LinesRepository(conn, cipher).add(owner_id=ALICE, number=NUMBER, now=clock.now())
        await PaymentsRepository(conn, cipher).record_payment(
            user_id=ALICE, source="operator", external_id="operator:cash-7",
            amount=Money(37, "USD"), now=clock.now(), actor="cli")
    review = await privacy.review(ALICE)
    assert isinstance(review, Ready) and review.money_left == (Money(37, "USD"),)
    asked = clock.now()
    before = await everything(db)

    # A press that did not see the money, or saw another amount, asks again.
    for shown in (None, money_token([Money(36, "USD")])):
        again = await privacy.forget(ALICE, asked_at=asked, money_shown=shown)
        assert isinstance(again, Ready) and again.money_left == (Money(37, "USD"),)
    assert await everything(db) == before

    outcome = await privacy.forget(ALICE, asked_at=asked,
                                   money_shown=money_token(review.money_left))
    assert isinstance(outcome, Forgotten) and outcome.money_left == (Money(37, "USD"),)
    async with db.read() as conn:
        assert (await WalletRepository(conn).available(ALICE, "USD")).minor == 37
        assert await LinesRepository(conn, cipher).by_number(NUMBER.e164) is None


async def test_charges_on_a_line_now_someone_elses_move_to_a_tombstone_of_hers(
        db: Database, cipher: FieldCipher, clock: ManualClock, privacy: PrivacyService) -> None:
    """Alice topped up a line that then moved to Bob (he proved it by SMS). Her kept
    charges must not lead to his line, whose number was hers: they move to a tombstone of
    her own, as do their audit rows; Bob's binding row loses her id; Bob keeps his line,
    its name and his history. Her history shows the tombstone, not the number."""
    now = clock.now()
    async with db.write() as conn:
        for user in (ALICE, BOB):
            await UsersRepository(conn).ensure(user, language="en", now=now)
        repo = LinesRepository(conn, cipher)
        line = await repo.add(owner_id=ALICE, number=NUMBER, now=now, nickname=NICKNAME)
        await PaymentsRepository(conn, cipher).record_payment(
            user_id=ALICE, source="operator", external_id="operator:cash-8",
            amount=Money(500, "USD"), now=now, actor="cli")
        charge_id = await charge(conn, cipher, clock, user_id=ALICE, line_id=line.id,
                                 key="manual:alice:1", to=ChargeState.SUCCEEDED)
        wallet = WalletRepository(conn)
        assert await wallet.hold(charge_id=charge_id, user_id=ALICE,
                                 amount=Money(500, "USD"), now=now)
        assert await wallet.capture(charge_id, now=now)
        audit = AuditRepository(conn)
        await audit.record(at=now, actor="system", action="charge.succeeded",
                           subject=str(charge_id),
                           details={"amount": "5.00", "line": line.id, "cause": "manual"})
        await repo.transfer(line.id, new_owner_id=BOB, now=now)
        await repo.rename(line.id, "Bob's phone", now=now)
        await audit.record(at=now, actor=f"user:{BOB}", action="line.bound",
                           subject=str(line.id),
                           details={"line": NUMBER.masked, "proof": "sms", "from_user": ALICE})
    bob_line = await rows(db, lines, lines.c.id == line.id)

    outcome = await privacy.forget(ALICE, asked_at=now)

    assert isinstance(outcome, Forgotten) and outcome.erased.lines_stood_in == 1
    assert outcome.erased.lines == 0  # she had no line of her own left
    assert await rows(db, lines, lines.c.id == line.id) == bob_line
    (kept,) = await rows(db, charges, charges.c.id == charge_id)
    (stand_in,) = await rows(db, lines, lines.c.owner_id == ALICE)
    assert kept["line_id"] == stand_in["id"] != line.id
    assert (stand_in["operator"], stand_in["kind"], stand_in["phone_enc"],
            stand_in["forgotten_at"]) == ("cellcard", "sim", None, now)
    async with db.read() as conn:
        entries = {e.action: e for e in await AuditRepository(conn).latest(limit=100)}
    assert entries["charge.succeeded"].details["line"] == stand_in["id"]
    assert entries["line.bound"].details == {"line": NUMBER.masked, "proof": "sms"}

    history = HistoryService(db, cipher, clock, zone_for=zone_of,
                             default_zone=ZoneInfo("Asia/Phnom_Penh"))
    page = await history.page(ALICE, None)
    assert page is not None
    shown = [item.line for item in page.items if isinstance(item, ChargeItem)]
    assert shown == [FORGOTTEN_LABEL]


async def zone_of(_user_id: int) -> ZoneInfo:
    return ZoneInfo("Asia/Phnom_Penh")


def may_hold_something_personal(column: Column[object]) -> bool:
    """Columns that can hold a number, an ICCID, a name, a text or a reference: encrypted
    or blind-indexed values, free text and JSON, and names that say so."""
    return (column.name.endswith(("_enc", "_index", "_hash"))
            or isinstance(column.type, Text | JSON)
            or any(word in column.name for word in ("phone", "iccid", "nickname", "name",
                                                    "text", "memo", "reference", "payload")))


async def test_every_table_and_every_column_that_can_name_someone_has_a_forget_decision(
        db: Database) -> None:
    """A table added later (in storage.tables or by a migration alone) or a column that can
    hold something personal fails here until storage/privacy.py says what a forget does
    with it (and DESIGN-NOTES.md's privacy section says why)."""
    async with db.read() as conn:
        migrated = set(await conn.run_sync(
            lambda sync: sqlalchemy.inspect(sync).get_table_names())) - {"alembic_version"}
    assert set(DECISIONS) == set(metadata.tables) == migrated
    missing = {f"{table.name}.{column.name}" for table in metadata.tables.values()
               for column in table.columns if may_hold_something_personal(column)
               and column.name not in DECISIONS[table.name].columns}
    assert missing == set()
    for name, decision in DECISIONS.items():
        assert decision.why, name
        assert set(decision.columns) <= set(metadata.tables[name].columns.keys()), name
    # Every encrypted column is one of them (rotate-keys' list).
    assert {f"{spec.table.name}.{column.name}" for spec in ENCRYPTED
            for column in spec.columns} <= {
        f"{name}.{column}" for name, decision in DECISIONS.items()
        for column in decision.columns}
