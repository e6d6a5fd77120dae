"""The wallet's ledger: the kinds of movement a balance is the sum of."""

from __future__ import annotations

import enum


class EntryKind(enum.StrEnum):
    PAYMENT = "payment"  # the user paid (Telegram Payments)
    OPERATOR_CREDIT = "operator_credit"  # cash or bank transfer credited by an operator
    HOLD = "hold"  # funds set aside for an approved charge (negative)
    RELEASE = "release"  # a hold given back: the charge failed, was declined or expired
    REFUND = "refund"  # a payment returned to the user (negative)
