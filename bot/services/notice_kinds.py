"""Every notification kind the services queue, and its notice type: one explicit list (the
outbox's Telegram side has one view per kind, checked by tests/unit/test_notices.py)."""

from __future__ import annotations

from bot.services.charging.notices import (
    ApprovalRequest,
    ChargeExpired,
    ChargeFailed,
    ChargeProcessing,
    ChargeStuck,
    EsimReady,
    Receipt,
)
from bot.services.history import MonthlySummaryReady
from bot.services.khqr import (
    KhqrAmountDiffers,
    KhqrChecksRefused,
    KhqrClosed,
    KhqrIssued,
    KhqrReceipt,
)
from bot.services.notices import Notice, kinds
from bot.services.promotions import BroadcastReport, PromotionOffer
from bot.services.provider_float import FloatLow, FloatRestored
from bot.services.scheduler import (
    LineUnreadable,
    LineWarning,
    RunReminder,
    RunSkipped,
    RunsMissed,
)
from bot.services.support import (
    SupportReply,
    SupportResolved,
    SupportTicketOpened,
    SupportUserMessage,
)
from bot.services.wallet import PaymentDisputed, PaymentDisputeHeld, WalletCredit, WalletRefund

NOTICE_KINDS: dict[str, type[Notice]] = kinds(
    # charging
    ApprovalRequest, Receipt, ChargeFailed, ChargeProcessing, ChargeExpired, ChargeStuck,
    EsimReady,
    # the scheduler
    LineWarning, LineUnreadable, RunReminder, RunsMissed, RunSkipped,
    # the wallet
    WalletCredit, WalletRefund, PaymentDisputed, PaymentDisputeHeld,
    # KHQR
    KhqrIssued, KhqrClosed, KhqrReceipt, KhqrAmountDiffers, KhqrChecksRefused,
    # the provider float
    FloatLow, FloatRestored,
    # the history
    MonthlySummaryReady,
    # support requests
    SupportTicketOpened, SupportUserMessage, SupportReply, SupportResolved,
    # promotions
    PromotionOffer, BroadcastReport,
)
