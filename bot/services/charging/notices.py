"""The notifications a charge sends (rendered by handlers/approvals.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from bot.domain.money import Money
from bot.domain.products import ProductKind
from bot.domain.readings import LineReading, ReadingSource, TriggerReading
from bot.services.charging.policy import (
    APPROVAL_REQUEST,
    CHARGE_EXPIRED,
    CHARGE_FAILED,
    CHARGE_PROCESSING,
    CHARGE_STUCK,
    ESIM_READY,
    RECEIPT,
    ApprovalReason,
)
from bot.services.notices import Audience, Notice, NoticePart, money_keys, stored

_AMOUNT = money_keys("amount_minor", "currency")
_WALLET = money_keys("wallet_minor", "wallet_currency")


@dataclass(frozen=True, kw_only=True)
class ChargeFacts(NoticePart):
    """What every message of a charge says of it: its line, its price and what it buys (the
    plan's name, kind, data and days, from the catalog when it was queued; renderers read
    no catalog)."""

    charge_id: int
    line: str  # how the line is shown (no whole number)
    amount: Money = field(metadata=_AMOUNT)
    cause: str
    product_id: str | None
    product_name: str | None
    product_kind: ProductKind | None
    data_mb: int | None
    validity_days: int | None


@dataclass(frozen=True, kw_only=True)
class TriggerShown(NoticePart):
    """The reading a rule charged on, as its request and receipt say it (a TriggerReading,
    stored flat under ``trigger_*`` keys): only the figure the rule fired on. Absent from
    manual and calendar charges, and from notices queued before charges kept it."""

    source: ReadingSource = field(metadata=stored("trigger_source"))
    read_at: datetime = field(metadata=stored("trigger_read_at"))
    balance: Money | None = field(default=None, metadata=money_keys(
        "trigger_balance_minor", "trigger_currency", omit_none=True))
    data_mb: int | None = field(default=None, metadata=stored("trigger_data_mb",
                                                               omit_none=True))
    validity_end: datetime | None = field(default=None, metadata=stored(
        "trigger_validity_end", omit_none=True))
    read_by: str | None = field(default=None, metadata=stored("trigger_read_by",
                                                               omit_none=True))

    @classmethod
    def of(cls, trigger: TriggerReading | None) -> TriggerShown | None:
        if trigger is None:
            return None
        reading = trigger.reading
        return cls(source=reading.source, read_at=reading.read_at, balance=reading.balance,
                   data_mb=reading.data_mb, validity_end=reading.validity_end,
                   read_by=trigger.read_by)

    def as_reading(self) -> LineReading:
        return LineReading(source=self.source, read_at=self.read_at, balance=self.balance,
                           data_mb=self.data_mb, validity_end=self.validity_end)


@dataclass(frozen=True, kw_only=True)
class ApprovalRequest(Notice):
    """The request with Approve / Decline buttons."""

    KIND: ClassVar[str] = APPROVAL_REQUEST
    charge: ChargeFacts
    reason: ApprovalReason
    wallet: Money = field(metadata=_WALLET)  # available when it was asked (or shown again)
    expires_at: datetime | None
    # An automatic rule's monthly cap and what it spent this month (in the charge's currency).
    cap: Money | None = field(default=None, metadata=money_keys("cap_minor", "currency"))
    spent: Money | None = field(default=None, metadata=money_keys("spent_minor", "currency"))
    trigger: TriggerShown | None = None  # the reading a rule charged on


@dataclass(frozen=True, kw_only=True)
class Receipt(Notice):
    KIND: ClassVar[str] = RECEIPT
    charge: ChargeFacts
    reference: str  # ours, as the provider knows it
    balance_after: Money | None = field(
        metadata=money_keys("balance_after_minor", "balance_currency"))
    data_after_mb: int | None
    validity_end: datetime | None
    wallet: Money = field(metadata=_WALLET)  # what is left after the top-up
    at: datetime
    # What the line received when the provider says (riel or dollars), and the end of its
    # transaction id: the outbox keeps no reference whole.
    delivered: Money | None = field(
        metadata=money_keys("delivered_minor", "delivered_currency"))
    provider_tx_shown: str | None
    trigger: TriggerShown | None = None  # the reading a rule charged on


@dataclass(frozen=True, kw_only=True)
class ChargeFailed(Notice):
    """The user's copy, and each admin chat's (which names the user and the reference)."""

    KIND: ClassVar[str] = CHARGE_FAILED
    charge: ChargeFacts
    reason: str  # the failure reason (see handlers.approvals.failure_text)
    attempts: int
    audience: Audience
    user_id: int | None = field(default=None, metadata=stored(omit_none=True))
    reference: str | None = field(default=None, metadata=stored(omit_none=True))


@dataclass(frozen=True, kw_only=True)
class ChargeProcessing(Notice):
    KIND: ClassVar[str] = CHARGE_PROCESSING
    charge: ChargeFacts


@dataclass(frozen=True, kw_only=True)
class ChargeExpired(Notice):
    """Queued to replace the approval request it ends (its buttons go)."""

    KIND: ClassVar[str] = CHARGE_EXPIRED
    charge: ChargeFacts


@dataclass(frozen=True, kw_only=True)
class ChargeStuck(Notice):
    """Admins: the provider cannot say what became of a top-up."""

    KIND: ClassVar[str] = CHARGE_STUCK
    charge: ChargeFacts
    audience: Audience = Audience.ADMIN
    user_id: int
    reference: str


@dataclass(frozen=True, kw_only=True)
class EsimReady(Notice):
    """An eSIM bought. The install code is not in it (the outbox keeps no activation code):
    the deliverer reads it from the eSIM provider when it sends the QR code."""

    KIND: ClassVar[str] = ESIM_READY
    charge: ChargeFacts
    line_id: int
    wallet: Money = field(metadata=_WALLET)  # what is left after the purchase
    provider_tx_shown: str | None
