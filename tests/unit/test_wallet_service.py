"""WalletService on every backend: balances derived from the ledger, invoices and their signed
payloads, Telegram payments credited once, operator credits once per reference (even 20 at
once), Stars refunds once - each credit with its audit row and one receipt in the outbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from bot.clock import ManualClock
from bot.domain.money import Money
from bot.domain.phone import parse_cambodian_mobile
from bot.services.wallet import (
    AlreadyCredited,
    Credited,
    Disputed,
    DisputeReason,
    OperatorCreditError,
    PaymentNotRecognised,
    PaymentProblem,
    PaymentsUnavailable,
    RefundRejected,
    RefundStatus,
    WalletService,
)
from bot.settings import PaymentsSettings
from storage.audit import AuditRepository
from storage.crypto import FieldCipher, KeyMaterial, generate_fernet_key
from storage.db import Database
from storage.lines import LinesRepository
from storage.payments import PaymentsRepository
from storage.tables import (
    charges,
    ledger_entries,
    notifications,
    payment_disputes,
    wallet_payments,
)
from storage.users import UsersRepository
from storage.wallet import EntryKind, WalletRepository

ALICE = 6001
BOB = 6002
USD5 = Money(500, "USD")
ADMINS = (9001, 9002)


def stars_settings(stars_per_usd: int = 50) -> PaymentsSettings:
    return PaymentsSettings(provider_token=None, stars_per_usd=stars_per_usd,
                            provider_currency="USD", _env_file=None)


def provider_settings(currency: str = "USD") -> PaymentsSettings:
    return PaymentsSettings(provider_token="284685063:TEST:abc", provider_currency=currency,
                            _env_file=None)


@pytest.fixture
def service(db: Database, clock: ManualClock, cipher: FieldCipher) -> WalletService:
    return WalletService(db, clock, stars_settings(), cipher)


async def count(db: Database, table: Any, **where: Any) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def outbox(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = (await conn.execute(select(notifications).order_by(notifications.c.id)))
        return [dict(row) for row in rows.mappings()]


async def pay(service: WalletService, user_id: int, amount: Money, charge_id: str) -> Credited:
    """Like Telegram: an invoice, its pre-checkout accepted, then successful_payment."""
    invoice = await service.issue_invoice(user_id, amount)
    assert await service.validate_pre_checkout(user_id, invoice.payload, invoice.currency,
                                         invoice.total_amount) is None
    credited = await service.credit_telegram_payment(
        user_id, charge_id, "", invoice.currency, invoice.total_amount, invoice.payload)
    assert credited is not None
    return credited


async def add_charge(db: Database, cipher: FieldCipher, clock: ManualClock, user_id: int,
                     key: str) -> int:
    async with db.write() as conn:
        await UsersRepository(conn).ensure(user_id, language="en", now=clock.now())
        line = await LinesRepository(conn, cipher).add(
            owner_id=user_id, number=parse_cambodian_mobile("012345678"), now=clock.now())
        result = await conn.execute(insert(charges).values(
            idempotency_key=key, reference=f"ref-{key}", user_id=user_id, line_id=line.id,
            cause="manual", amount_minor=300, currency="USD", state="approved",
            created_at=clock.now(), updated_at=clock.now()).returning(charges.c.id))
        return int(result.scalar_one())


# --- balances -----------------------------------------------------------------------------


async def test_an_unknown_user_has_an_empty_wallet(service: WalletService) -> None:
    summary = await service.summary(ALICE)

    assert summary.available == Money(0, "USD")
    assert summary.held == Money(0, "USD")
    assert summary.movements == []


async def test_the_balance_is_the_sum_of_the_ledger(service: WalletService, db: Database,
                                                    cipher: FieldCipher,
                                                    clock: ManualClock) -> None:
    await service.credit_operator(ALICE, Money(1000, "USD"), "cash-1", actor="cli")
    clock.advance(timedelta(minutes=1))
    await pay(service, ALICE, USD5, "tg-1")
    clock.advance(timedelta(minutes=1))
    charge_id = await add_charge(db, cipher, clock, ALICE, "manual:1")
    async with db.write() as conn:
        assert await WalletRepository(conn).hold(charge_id=charge_id, user_id=ALICE,
                                                 amount=Money(300, "USD"), now=clock.now())

    summary = await service.summary(ALICE)
    assert summary.available == Money(1200, "USD")  # 10 + 5 - 3 held
    assert summary.held == Money(300, "USD")
    assert [e.kind for e in summary.movements] == [
        EntryKind.HOLD, EntryKind.PAYMENT, EntryKind.OPERATOR_CREDIT]
    assert summary.movements[2].reference == "cash-1"

    clock.advance(timedelta(minutes=1))
    async with db.write() as conn:
        assert await WalletRepository(conn).release(charge_id, now=clock.now())
    summary = await service.summary(ALICE)
    assert summary.available == Money(1500, "USD")
    assert summary.held == Money(0, "USD")
    assert summary.movements[0].kind is EntryKind.RELEASE
    assert await service.available(BOB) == Money(0, "USD")  # nobody else's money moved


async def test_movements_are_the_newest_few(service: WalletService,
                                            clock: ManualClock) -> None:
    for n in range(7):
        clock.advance(timedelta(minutes=1))
        await service.credit_operator(ALICE, Money(100 + n, "USD"), f"r{n}", actor="cli")

    summary = await service.summary(ALICE)
    assert [e.amount.minor for e in summary.movements] == [106, 105, 104, 103, 102]
    assert summary.available == Money(sum(100 + n for n in range(7)), "USD")


# --- invoices and pre-checkout ------------------------------------------------------------


@pytest.mark.parametrize(("rate", "amount", "stars"), [
    (50, Money(500, "USD"), 250),
    (50, Money(5000, "USD"), 2500),
    (50, Money(1, "USD"), 1),  # half a Star is rounded up, never given away
    (75, Money(555, "USD"), 417),  # 416.25
    (1, Money(199, "USD"), 2),
])
async def test_stars_are_dollars_times_the_rate_rounded_up(
        db: Database, clock: ManualClock, cipher: FieldCipher, rate: int, amount: Money,
        stars: int) -> None:
    service = WalletService(db, clock, stars_settings(rate), cipher)

    invoice = await service.issue_invoice(ALICE, amount)

    assert (invoice.currency, invoice.total_amount) == ("XTR", stars)
    assert invoice.provider_token is None
    assert invoice.amount == amount
    assert invoice.payload.startswith(f"w2:{invoice.invoice_id}:")
    assert len(invoice.payload.encode()) <= 128


async def test_no_invoice_asks_for_more_stars_than_telegram_allows(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    service = WalletService(db, clock, stars_settings(10_000), cipher)

    assert (await service.issue_invoice(ALICE, USD5)).total_amount == 50_000
    with pytest.raises(PaymentsUnavailable):
        await service.issue_invoice(ALICE, Money(5000, "USD"))


async def test_with_a_provider_the_invoice_is_in_the_provider_currency(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    service = WalletService(db, clock, provider_settings(), cipher)

    invoice = await service.issue_invoice(ALICE, Money(1000, "USD"))

    assert (invoice.currency, invoice.total_amount) == ("USD", 1000)
    assert invoice.provider_token == "284685063:TEST:abc"
    assert await service.validate_pre_checkout(ALICE, invoice.payload, "USD", 1000) is None


async def test_a_provider_in_another_currency_cannot_fund_the_wallet(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    service = WalletService(db, clock, provider_settings("KHR"), cipher)
    stars = WalletService(db, clock, stars_settings(), cipher)
    payload = (await stars.issue_invoice(ALICE, USD5)).payload

    assert not service.funding_available
    with pytest.raises(PaymentsUnavailable):
        await service.issue_invoice(ALICE, USD5)
    assert await service.validate_pre_checkout(ALICE, payload, "XTR", 250) is \
        PaymentProblem.UNAVAILABLE


def tamper(payload: str, index: int, value: str) -> str:
    parts = payload.split(":")
    parts[index] = value
    return ":".join(parts)


async def test_pre_checkout_accepts_our_invoice_and_refuses_tampering(
        service: WalletService, db: Database, clock: ManualClock) -> None:
    invoice = await service.issue_invoice(ALICE, USD5)
    other_key = FieldCipher(KeyMaterial(encryption_keys=(generate_fernet_key(),),
                                        blind_index_key=b"k" * 32))
    foreign = await WalletService(db, clock, stars_settings(), other_key).issue_invoice(
        ALICE, USD5)
    mac = invoice.payload.rsplit(":", 1)[1]

    async def check(payload: str, currency: str = "XTR", total: int = 250,
                    user: int = ALICE) -> PaymentProblem | None:
        return await service.validate_pre_checkout(user, payload, currency, total)

    other = await service.issue_invoice(ALICE, USD5)
    assert await check(invoice.payload) is None
    # Another invoice's id under this one's signature.
    assert await check(tamper(invoice.payload, 1, str(other.invoice_id))) is \
        PaymentProblem.FORGED
    assert await check(tamper(invoice.payload, 1, "999999")) is PaymentProblem.FORGED
    assert await check(tamper(invoice.payload, 2, "0" * 16)) is PaymentProblem.FORGED
    assert await check(tamper(invoice.payload, 2, mac.upper())) is PaymentProblem.FORGED
    assert await check(invoice.payload + "\n") is PaymentProblem.FORGED
    assert await check(foreign.payload) is PaymentProblem.FORGED  # signed with another key
    old_style = f"w1:{ALICE}:500:USD:{mac}"  # untracked payloads of earlier releases
    for junk in ("", "w2", "wallet:6001:1", "x" * 128, "w1:6001:500:USD", "🙂", old_style):
        assert await check(junk) is PaymentProblem.FORGED
    assert await check(invoice.payload, user=BOB) is PaymentProblem.WRONG_USER
    assert await check(invoice.payload, total=1) is PaymentProblem.PRICE_CHANGED
    assert await check(invoice.payload, currency="USD", total=500) is \
        PaymentProblem.PRICE_CHANGED


async def test_a_changed_rate_refuses_old_invoices_at_pre_checkout(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    old = await WalletService(db, clock, stars_settings(50), cipher).issue_invoice(ALICE, USD5)
    new = WalletService(db, clock, stars_settings(60), cipher)

    assert await new.validate_pre_checkout(ALICE, old.payload, "XTR", 250) is \
        PaymentProblem.PRICE_CHANGED
    # The invoice was issued at 250: it is paid at that price or not at all.
    assert await new.validate_pre_checkout(ALICE, old.payload, "XTR", 300) is \
        PaymentProblem.PRICE_CHANGED
    fresh = await new.issue_invoice(ALICE, USD5)
    assert await new.validate_pre_checkout(ALICE, fresh.payload, "XTR", 300) is None


# --- Telegram payments --------------------------------------------------------------------


async def test_a_payment_credits_once_with_audit_and_one_receipt(
        service: WalletService, db: Database, cipher: FieldCipher) -> None:
    invoice = await service.issue_invoice(ALICE, USD5)

    first = await service.credit_telegram_payment(ALICE, "tg-charge-1", "prov-1", "XTR", 250,
                                                  invoice.payload)
    replay = await service.credit_telegram_payment(ALICE, "tg-charge-1", "prov-1", "XTR",
                                                   250, invoice.payload)

    assert first is not None
    assert (first.amount, first.balance, first.user_id) == (USD5, USD5, ALICE)
    assert replay is None
    assert await service.available(ALICE) == USD5
    assert await count(db, ledger_entries) == 1
    async with db.read() as conn:  # stored by its blind index, found by the charge id
        assert await PaymentsRepository(conn, cipher).by_external_id("tg-charge-1")
    assert await count(db, wallet_payments, external_id="tg-charge-1") == 0
    [receipt] = await outbox(db)
    assert receipt["kind"] == "wallet_credit"
    assert receipt["dedupe_key"] == f"wallet_credit:{first.payment_id}"
    assert (receipt["user_id"], receipt["chat_id"]) == (ALICE, ALICE)
    params = receipt["params"]
    assert (params["amount_minor"], params["currency"], params["balance_minor"]) == (
        500, "USD", 500)
    assert (params["paid_minor"], params["paid_currency"]) == (250, "XTR")
    async with db.read() as conn:
        audit = await AuditRepository(conn).latest(action="wallet.payment")
    assert [(a.actor, a.subject) for a in audit] == [
        (f"user:{ALICE}", f"payment:{first.payment_id}")]


async def test_one_invoice_is_credited_once_whatever_charge_ids_arrive(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    service = WalletService(db, clock, stars_settings(), cipher, admin_chat_ids=ADMINS)
    invoice = await service.issue_invoice(ALICE, USD5)
    refunds: list[tuple[int, str]] = []

    async def refunder(user_id: int, charge_id: str) -> None:
        refunds.append((user_id, charge_id))

    results = [await service.credit_telegram_payment(
        ALICE, f"tg-{n}", "", "XTR", 250, invoice.payload, refunder=refunder)
        for n in range(19)]

    assert isinstance(results[0], Credited)
    assert all(isinstance(r, Disputed) and r.reason is DisputeReason.ALREADY_PAID
               and r.refunded for r in results[1:])
    assert await service.available(ALICE) == USD5
    assert await count(db, ledger_entries) == 1
    assert refunds == [(ALICE, f"tg-{n}") for n in range(1, 19)]
    assert await count(db, payment_disputes, status="refunded") == 18
    alerts = [n for n in await outbox(db) if n["kind"] == "payment_disputed"]
    assert len(alerts) == 18 * len(ADMINS)
    assert {n["chat_id"] for n in alerts} == set(ADMINS)


async def test_twenty_concurrent_replays_credit_once(service: WalletService,
                                                     db: Database) -> None:
    invoice = await service.issue_invoice(ALICE, USD5)

    results = await asyncio.gather(*(service.credit_telegram_payment(
        ALICE, "tg-burst", "", "XTR", 250, invoice.payload) for _ in range(20)))

    assert sum(r is not None for r in results) == 1
    assert await service.available(ALICE) == USD5
    assert await count(db, notifications) == 1


async def test_a_tampered_payment_credits_nothing_and_is_disputed(
        service: WalletService, db: Database) -> None:
    invoice = await service.issue_invoice(ALICE, USD5)

    forged = await service.credit_telegram_payment(ALICE, "tg-x", "", "XTR", 250,
                                                   tamper(invoice.payload, 1, "9999"))
    someone_elses = await service.credit_telegram_payment(BOB, "tg-y", "", "XTR", 250,
                                                          invoice.payload)

    assert isinstance(forged, Disputed) and forged.reason is DisputeReason.FORGED
    assert isinstance(someone_elses, Disputed)
    assert someone_elses.reason is DisputeReason.WRONG_USER
    assert not forged.refunded  # no refunder given: held for an admin
    assert await count(db, ledger_entries) == 0
    assert await count(db, payment_disputes, status="held") == 2
    with pytest.raises(PaymentNotRecognised):
        await service.credit_telegram_payment(ALICE, "", "", "XTR", 250, invoice.payload)


@pytest.mark.parametrize(("currency", "total"), [
    ("XTR", 1), ("EUR", 1), ("XTR", -5), ("XTR", 0), ("EUR", 250), ("XTR", 2500)])
async def test_a_payment_that_is_not_the_invoices_price_is_not_credited(
        db: Database, clock: ManualClock, cipher: FieldCipher, currency: str,
        total: int) -> None:
    service = WalletService(db, clock, stars_settings(), cipher, admin_chat_ids=ADMINS)
    invoice = await service.issue_invoice(ALICE, USD5)
    refunds: list[tuple[int, str]] = []

    async def refunder(user_id: int, charge_id: str) -> None:
        refunds.append((user_id, charge_id))

    result = await service.credit_telegram_payment(ALICE, "tg-odd", "", currency, total,
                                                   invoice.payload, refunder=refunder)

    assert isinstance(result, Disputed) and result.reason is DisputeReason.MISMATCH
    refundable = currency == "XTR" and total > 0
    assert result.refunded is refundable
    assert refunds == ([(ALICE, "tg-odd")] if refundable else [])
    assert await service.available(ALICE) == Money(0, "USD")
    assert await count(db, ledger_entries) == 0
    async with db.read() as conn:
        (row,) = (await conn.execute(select(payment_disputes))).mappings().all()
    assert (row["reason"], row["paid_minor"], row["paid_currency"]) == (
        "mismatch", total, currency)
    assert row["status"] == ("refunded" if refundable else "held")
    assert "tg-odd" not in str(dict(row))  # the charge id is kept encrypted
    assert [n["chat_id"] for n in await outbox(db) if n["kind"] == "payment_disputed"] == \
        list(ADMINS)
    # The invoice is still payable at its price.
    paid = await service.credit_telegram_payment(ALICE, "tg-right", "", "XTR", 250,
                                                 invoice.payload)
    assert isinstance(paid, Credited) and paid.amount == USD5


async def test_a_failed_refund_holds_the_dispute_and_an_admin_can_refund_it_once(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    service = WalletService(db, clock, stars_settings(), cipher, admin_chat_ids=ADMINS)
    invoice = await service.issue_invoice(ALICE, USD5)

    async def refused(user_id: int, charge_id: str) -> None:
        raise RefundRejected("CHARGE_NOT_FOUND")

    result = await service.credit_telegram_payment(ALICE, "tg-1", "", "XTR", 1,
                                                   invoice.payload, refunder=refused)
    assert isinstance(result, Disputed) and not result.refunded
    assert await count(db, payment_disputes, status="held") == 1
    held = [n for n in await outbox(db) if n["kind"] == "payment_dispute_held"]
    assert [n["chat_id"] for n in held] == list(ADMINS)
    # A replay of the same update does nothing more.
    assert await service.credit_telegram_payment(ALICE, "tg-1", "", "XTR", 1,
                                                 invoice.payload, refunder=refused) is None
    assert len([n for n in await outbox(db) if n["kind"] == "payment_disputed"]) == 2

    calls: list[str] = []

    async def works(user_id: int, charge_id: str) -> None:
        calls.append(charge_id)

    first = await service.refund_stars("tg-1", actor="admin:1", refunder=works)
    again = await service.refund_stars("tg-1", actor="admin:1", refunder=works)
    assert first.status is RefundStatus.DISPUTE_REFUNDED
    assert again.status is RefundStatus.ALREADY_REFUNDED
    assert calls == ["tg-1"]
    assert await service.available(ALICE) == Money(0, "USD")


async def test_pre_checkout_refuses_a_paid_invoice(service: WalletService) -> None:
    invoice = await service.issue_invoice(ALICE, USD5)
    await service.credit_telegram_payment(ALICE, "tg-1", "", "XTR", 250, invoice.payload)
    assert await service.validate_pre_checkout(ALICE, invoice.payload, "XTR", 250) is \
        PaymentProblem.ALREADY_PAID


async def test_a_payment_at_an_outdated_price_credits_what_the_invoice_said(
        db: Database, clock: ManualClock, cipher: FieldCipher) -> None:
    invoice = await WalletService(db, clock, stars_settings(50), cipher).issue_invoice(
        ALICE, USD5)
    service = WalletService(db, clock, stars_settings(60), cipher)

    credited = await service.credit_telegram_payment(ALICE, "tg-old", "", "XTR", 250,
                                                     invoice.payload)

    assert credited is not None and credited.amount == USD5


# --- operator credits ---------------------------------------------------------------------


async def test_an_operator_credit_makes_the_user_and_sends_a_receipt(
        service: WalletService, db: Database) -> None:
    result = await service.credit_operator(BOB, Money(2000, "USD"), "  bank   TX 42 ",
                                           actor="admin:1")

    assert isinstance(result, Credited)
    assert result.balance == Money(2000, "USD")
    async with db.read() as conn:
        assert await UsersRepository(conn).get(BOB) is not None
        [audit] = await AuditRepository(conn).latest(action="wallet.credit")
    assert audit.actor == "admin:1"
    assert "reference" not in audit.details  # a payment reference: only encrypted
    [receipt] = await outbox(db)
    assert receipt["params"]["source"] == "operator"
    assert receipt["params"]["reference_shown"] == "…X 42"
    assert receipt["dedupe_key"] == f"wallet_credit:{result.payment_id}"


async def test_the_same_reference_twice_credits_once(service: WalletService, db: Database,
                                                     clock: ManualClock) -> None:
    first = await service.credit_operator(ALICE, Money(1000, "USD"), "cash-7", actor="cli")
    clock.advance(timedelta(hours=1))
    again = await service.credit_operator(ALICE, Money(1000, "USD"), "cash-7",
                                          actor="admin:9")
    reused = await service.credit_operator(BOB, Money(300, "USD"), "cash-7", actor="cli")

    assert isinstance(first, Credited)
    assert isinstance(again, AlreadyCredited)
    assert again.matches(ALICE, Money(1000, "USD"))
    assert again.payment_id == first.payment_id
    assert again.created_at == first_time(clock)
    assert isinstance(reused, AlreadyCredited)
    assert not reused.matches(BOB, Money(300, "USD"))
    assert await service.available(ALICE) == Money(1000, "USD")
    assert await service.available(BOB) == Money(0, "USD")
    assert await count(db, ledger_entries) == 1
    assert await count(db, notifications) == 1
    async with db.read() as conn:
        assert len(await AuditRepository(conn).latest(action="wallet.credit")) == 1


def first_time(clock: ManualClock) -> Any:
    return clock.now() - timedelta(hours=1)


async def test_twenty_concurrent_credits_with_one_reference_credit_once(
        service: WalletService, db: Database) -> None:
    results = await asyncio.gather(*(service.credit_operator(
        ALICE, Money(1000, "USD"), "transfer-20", actor="cli") for _ in range(20)))

    credited = [r for r in results if isinstance(r, Credited)]
    assert len(credited) == 1
    assert all(isinstance(r, AlreadyCredited) and r.payment_id == credited[0].payment_id
               for r in results if r is not credited[0])
    assert await service.available(ALICE) == Money(1000, "USD")
    assert await count(db, ledger_entries) == 1
    assert await count(db, wallet_payments) == 1
    assert await count(db, notifications) == 1


@pytest.mark.parametrize(("user_id", "amount", "reference", "reason"), [
    (0, Money(100, "USD"), "r", OperatorCreditError.Reason.BAD_USER),
    (-5, Money(100, "USD"), "r", OperatorCreditError.Reason.BAD_USER),
    (2**60, Money(100, "USD"), "r", OperatorCreditError.Reason.BAD_USER),
    (ALICE, Money(0, "USD"), "r", OperatorCreditError.Reason.BAD_AMOUNT),
    (ALICE, Money(-100, "USD"), "r", OperatorCreditError.Reason.BAD_AMOUNT),
    (ALICE, Money(1_000_01, "USD"), "r", OperatorCreditError.Reason.BAD_AMOUNT),
    (ALICE, Money(100, "XTR"), "r", OperatorCreditError.Reason.BAD_CURRENCY),
    (ALICE, Money(100, "USD"), "   ", OperatorCreditError.Reason.BAD_REFERENCE),
    (ALICE, Money(100, "USD"), "x" * 65, OperatorCreditError.Reason.BAD_REFERENCE),
    (ALICE, Money(100, "USD"), "a\x00b", OperatorCreditError.Reason.BAD_REFERENCE),
])
async def test_bad_operator_credits_are_refused_before_writing(
        service: WalletService, db: Database, user_id: int, amount: Money, reference: str,
        reason: OperatorCreditError.Reason) -> None:
    with pytest.raises(OperatorCreditError) as refused:
        await service.credit_operator(user_id, amount, reference, actor="cli")

    assert refused.value.reason is reason
    assert await count(db, wallet_payments) == 0


async def test_a_riel_credit_goes_to_the_riel_wallet(service: WalletService,
                                                     db: Database) -> None:
    await service.credit_operator(ALICE, Money(4_000_000, "KHR"), "khr-1", actor="cli")

    assert await service.available(ALICE) == Money(0, "USD")
    async with db.read() as conn:
        assert await WalletRepository(conn).available(ALICE, "KHR") == Money(4_000_000, "KHR")


# --- refunds ------------------------------------------------------------------------------


class Refunder:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.error = error

    async def __call__(self, user_id: int, charge_id: str) -> None:
        self.calls.append((user_id, charge_id))
        if self.error is not None:
            raise self.error


async def test_a_stars_refund_is_recorded_once(service: WalletService, db: Database) -> None:
    await pay(service, ALICE, USD5, "tg-r1")
    refunder = Refunder()

    first = await service.refund_stars("tg-r1", actor="admin:1", refunder=refunder)
    second = await service.refund_stars("tg-r1", actor="admin:1", refunder=refunder)

    assert first.status is RefundStatus.REFUNDED
    assert (first.amount, first.paid, first.available) == (USD5, Money(250, "XTR"),
                                                           Money(0, "USD"))
    assert second.status is RefundStatus.ALREADY_REFUNDED
    assert refunder.calls == [(ALICE, "tg-r1")]
    assert await service.available(ALICE) == Money(0, "USD")
    assert await count(db, ledger_entries, kind="refund") == 1
    kinds = [n["kind"] for n in await outbox(db)]
    assert kinds == ["wallet_credit", "wallet_refund"]
    async with db.read() as conn:
        [audit] = await AuditRepository(conn).latest(action="wallet.refund")
        refunded_at = (await conn.execute(select(wallet_payments.c.refunded_at))).scalar_one()
    assert audit.actor == "admin:1"
    assert refunded_at is not None


async def test_concurrent_refunds_take_the_money_once(service: WalletService) -> None:
    await pay(service, ALICE, USD5, "tg-r2")
    await service.credit_operator(ALICE, Money(5000, "USD"), "cash", actor="cli")

    results = await asyncio.gather(*(service.refund_stars(
        "tg-r2", actor="admin:1", refunder=Refunder()) for _ in range(5)))

    assert sum(r.status is RefundStatus.REFUNDED for r in results) == 1
    assert await service.available(ALICE) == Money(5000, "USD")


async def test_no_refund_when_the_money_is_spent_or_held(service: WalletService, db: Database,
                                                         cipher: FieldCipher,
                                                         clock: ManualClock) -> None:
    await pay(service, ALICE, USD5, "tg-r3")
    charge_id = await add_charge(db, cipher, clock, ALICE, "manual:r3")
    async with db.write() as conn:
        await WalletRepository(conn).hold(charge_id=charge_id, user_id=ALICE,
                                          amount=Money(300, "USD"), now=clock.now())
    refunder = Refunder()

    result = await service.refund_stars("tg-r3", actor="admin:1", refunder=refunder)

    assert result.status is RefundStatus.INSUFFICIENT_FUNDS
    assert result.available == Money(200, "USD")
    assert refunder.calls == []
    assert await count(db, ledger_entries, kind="refund") == 0


async def test_a_refund_telegram_refuses_changes_nothing(service: WalletService,
                                                         db: Database) -> None:
    await pay(service, ALICE, USD5, "tg-r4")

    result = await service.refund_stars("tg-r4", actor="admin:1",
                                        refunder=Refunder(RefundRejected("BALANCE_TOO_LOW")))

    assert result.status is RefundStatus.REJECTED
    assert result.detail == "BALANCE_TOO_LOW"
    assert await service.available(ALICE) == USD5
    assert await count(db, ledger_entries, kind="refund") == 0


async def test_a_refund_that_fails_in_transit_records_nothing_and_can_be_repeated(
        service: WalletService) -> None:
    await pay(service, ALICE, USD5, "tg-r5")

    with pytest.raises(TimeoutError):
        await service.refund_stars("tg-r5", actor="admin:1", refunder=Refunder(TimeoutError()))
    assert await service.available(ALICE) == USD5

    again = await service.refund_stars("tg-r5", actor="admin:1", refunder=Refunder())
    assert again.status is RefundStatus.REFUNDED
    assert await service.available(ALICE) == Money(0, "USD")


async def test_only_stars_payments_of_telegram_are_refunded_here(
        db: Database, clock: ManualClock, cipher: FieldCipher,
        service: WalletService) -> None:
    provider = WalletService(db, clock, provider_settings(), cipher)
    await pay(provider, ALICE, USD5, "tg-card")
    await service.credit_operator(ALICE, USD5, "cash-9", actor="cli")
    refunder = Refunder()

    assert (await service.refund_stars("tg-card", actor="a", refunder=refunder)).status is \
        RefundStatus.NOT_STARS
    assert (await service.refund_stars("operator:cash-9", actor="a",
                                       refunder=refunder)).status is RefundStatus.NOT_FOUND
    assert (await service.refund_stars("nope", actor="a", refunder=refunder)).status is \
        RefundStatus.NOT_FOUND
    assert refunder.calls == []


async def test_telegrams_refund_notice_records_a_refund_once(service: WalletService,
                                                             db: Database) -> None:
    await pay(service, ALICE, USD5, "tg-r6")

    assert not await service.note_refunded(BOB, "tg-r6")  # not Bob's payment
    assert await service.note_refunded(ALICE, "tg-r6")
    assert not await service.note_refunded(ALICE, "tg-r6")
    after = await service.refund_stars("tg-r6", actor="admin:1", refunder=Refunder())

    assert after.status is RefundStatus.ALREADY_REFUNDED
    assert await service.available(ALICE) == Money(0, "USD")
    assert await count(db, ledger_entries, kind="refund") == 1
    assert await count(db, notifications, kind="wallet_refund") == 1
