"""The wallet's ledger: the kinds of movement a balance is the sum of."""

from __future__ import annotations

import enum


class EntryKind(enum.StrEnum):
    PAYMENT = "payment"  # the user paid (Telegram Payments)
    OPERATOR_CREDIT = "operator_credit"  # cash or bank transfer credited by an operator
    KHQR = "khqr"  # the user paid a Bakong KHQR from a bank app
    HOLD = "hold"  # funds set aside for an approved charge (negative)
    RELEASE = "release"  # a hold given back: the charge failed, was declined or expired
    REFUND = "refund"  # a payment returned to the user (negative)


class KhqrState(enum.StrEnum):
    """What became of a Bakong KHQR the wallet issued."""

    OPEN = "open"  # can be paid; polled
    PAID = "paid"  # credited (or, for an amount too small to credit, recorded)
    EXPIRED = "expired"  # past its expiry; polled for a grace period, a late payment counts
    CANCELLED = "cancelled"  # the user gave it up; polled like an expired one


# What a payment from each source is in the ledger.
CREDIT_KIND_OF_SOURCE = {"telegram": EntryKind.PAYMENT, "operator": EntryKind.OPERATOR_CREDIT,
                         "khqr": EntryKind.KHQR}
