"""What the server remembers, as immutable snapshots a test can read from any thread."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class UserInfo:
    """A Telegram user in a private chat with the bot."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool | None = None

    def json(self) -> JsonDict:
        data: JsonDict = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for name in ("last_name", "username", "language_code"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.is_premium:
            data["is_premium"] = True
        return data

    def chat_json(self) -> JsonDict:
        data: JsonDict = {"id": self.id, "first_name": self.first_name}
        if self.last_name is not None:
            data["last_name"] = self.last_name
        if self.username is not None:
            data["username"] = self.username
        data["type"] = "private"
        return data


@dataclass(frozen=True)
class GroupInfo:
    """A group or supergroup the bot is a member of (a supergroup's id is -100...).

    ``bot_is_admin``: an administrator bot receives every message of the group; otherwise
    privacy mode holds (https://core.telegram.org/bots/features#privacy-mode)."""

    id: int
    title: str
    type: str = "supergroup"  # or "group"
    bot_is_admin: bool = False

    def chat_json(self) -> JsonDict:
        return {"id": self.id, "title": self.title, "type": self.type}


@dataclass(frozen=True)
class RecordedCall:
    """One Bot API request: canonical method name, decoded parameters and the outcome."""

    method: str
    params: JsonDict
    at: float
    ok: bool
    error_code: int | None = None
    description: str | None = None
    result: Any = None


@dataclass(frozen=True)
class CallbackAnswer:
    """The bot's answerCallbackQuery for one query."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    answered_at: float


@dataclass(frozen=True)
class StoredFile:
    """A file the server holds: uploaded by the bot or sent by a user."""

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes | None
    file_name: str | None
    mime_type: str | None
    file_path: str | None
    url: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def file_size(self) -> int | None:
        return None if self.data is None else len(self.data)


@dataclass(frozen=True)
class MessageVersion:
    """A message's content before an edit (``date`` is when that version appeared)."""

    date: int
    text: str | None
    caption: str | None
    entities: tuple[JsonDict, ...]
    reply_markup: JsonDict | None


@dataclass(frozen=True)
class BotMessage:
    """A message the bot sent to a chat, as it is now (or was at an event)."""

    chat_id: int
    message_id: int
    date: int
    json: JsonDict
    reply_markup: JsonDict | None
    history: tuple[MessageVersion, ...] = ()
    deleted: bool = False
    parse_mode: str | None = None
    data: bytes | None = None

    @property
    def text(self) -> str | None:
        value = self.json.get("text")
        return None if value is None else str(value)

    @property
    def caption(self) -> str | None:
        value = self.json.get("caption")
        return None if value is None else str(value)

    @property
    def content(self) -> str:
        """Text, else caption, else the invoice title, else ''."""
        invoice = self.json.get("invoice") or {}
        return self.text or self.caption or str(invoice.get("title", ""))

    @property
    def entities(self) -> list[JsonDict]:
        return list(self.json.get("entities") or self.json.get("caption_entities") or [])

    @property
    def edit_date(self) -> int | None:
        value = self.json.get("edit_date")
        return None if value is None else int(value)

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def photo(self) -> list[JsonDict] | None:
        return self.json.get("photo")

    @property
    def document(self) -> JsonDict | None:
        return self.json.get("document")

    @property
    def invoice(self) -> JsonDict | None:
        return self.json.get("invoice")

    @property
    def inline_keyboard(self) -> list[list[JsonDict]]:
        markup = self.reply_markup or {}
        return [list(row) for row in markup.get("inline_keyboard") or []]

    @property
    def reply_keyboard(self) -> list[list[JsonDict]]:
        """The reply keyboard sent with this message; string buttons become {"text": ...}."""
        markup = self.reply_markup or {}
        return [[b if isinstance(b, dict) else {"text": str(b)} for b in row]
                for row in markup.get("keyboard") or []]

    @property
    def buttons(self) -> list[JsonDict]:
        """Every inline button, row by row."""
        return [button for row in self.inline_keyboard for button in row]

    @property
    def button_texts(self) -> list[str]:
        return [str(b.get("text", "")) for b in self.buttons]

    def button(self, text: str | None = None, callback_data: str | None = None) -> JsonDict:
        """The inline button with that text and/or callback_data (LookupError if none)."""
        for candidate in self.buttons:
            if text is not None and candidate.get("text") != text:
                continue
            if callback_data is not None and candidate.get("callback_data") != callback_data:
                continue
            return candidate
        raise LookupError(f"no inline button text={text!r} callback_data={callback_data!r} "
                          f"in message {self.message_id}; buttons: {describe_buttons(self)}")

    def copy_json(self) -> JsonDict:
        return copy.deepcopy(self.json)


def describe_buttons(message: BotMessage) -> str:
    parts = []
    for row in message.inline_keyboard:
        cells = []
        for b in row:
            extra = next((f"{k}={b[k]!r}" for k in ("callback_data", "url", "pay") if k in b), "")
            cells.append(f"[{b.get('text', '')}{' ' + extra if extra else ''}]")
        parts.append(" ".join(cells))
    for row in message.reply_keyboard:
        parts.append(" ".join(f"<{b.get('text', '')}>" for b in row))
    return " / ".join(parts) if parts else "none"


@dataclass(frozen=True)
class ChatEvent:
    """Something the bot did to a chat: "sent", "edited" or "deleted" a message."""

    seq: int
    kind: str
    message: BotMessage


@dataclass(frozen=True)
class PreCheckoutAnswer:
    query_id: str
    ok: bool
    error_message: str | None
    answered_at: float


@dataclass(frozen=True)
class SuccessfulPayment:
    """A payment completed after the bot approved its pre-checkout query."""

    chat_id: int
    user_id: int
    message_id: int
    update_id: int | None
    currency: str
    total_amount: int
    invoice_payload: str
    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    paid_at: float
    json: JsonDict = field(default_factory=dict)


@dataclass(frozen=True)
class Refund:
    user_id: int
    telegram_payment_charge_id: str
    currency: str
    total_amount: int
    refunded_at: float


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to POST an update to the webhook (status 0: no HTTP answer)."""

    update_id: int
    url: str
    attempt: int
    status: int
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300
