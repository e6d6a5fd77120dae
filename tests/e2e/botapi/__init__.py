"""A Telegram Bot API test server for end-to-end tests of the real bot process."""

from tests.e2e.botapi.errors import ApiError
from tests.e2e.botapi.group import TelegramGroup
from tests.e2e.botapi.ratelimit import RateStats, SendRecord
from tests.e2e.botapi.records import (
    BotMessage,
    CallbackAnswer,
    ChatEvent,
    GroupInfo,
    MessageVersion,
    PreCheckoutAnswer,
    RecordedCall,
    Refund,
    StoredFile,
    SuccessfulPayment,
    UserInfo,
    WebhookDelivery,
)
from tests.e2e.botapi.server import DEFAULT_TOKEN, BotApiServer
from tests.e2e.botapi.user import PaymentAttempt, TelegramUser

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "BotApiServer",
    "BotMessage",
    "CallbackAnswer",
    "ChatEvent",
    "GroupInfo",
    "MessageVersion",
    "PaymentAttempt",
    "PreCheckoutAnswer",
    "RateStats",
    "RecordedCall",
    "Refund",
    "SendRecord",
    "StoredFile",
    "SuccessfulPayment",
    "TelegramGroup",
    "TelegramUser",
    "UserInfo",
    "WebhookDelivery",
]
