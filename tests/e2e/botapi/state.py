"""The server's memory: chats, messages, the update queue, files, queries and payments.

Everything is guarded by one re-entrant lock; ``changed`` (a Condition on it) is notified
after every change, so test threads wait on events instead of sleeping. Listeners (the
HTTP server's event loop) are told of changes too, to wake long polls and the webhook.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.botapi.errors import ApiError, bad_request, conflict, forbidden
from tests.e2e.botapi.media import extension, new_file_id, new_file_unique_id
from tests.e2e.botapi.ratelimit import FloodControl
from tests.e2e.botapi.records import (
    BotMessage,
    CallbackAnswer,
    ChatEvent,
    GroupInfo,
    JsonDict,
    MessageVersion,
    PreCheckoutAnswer,
    RecordedCall,
    Refund,
    StoredFile,
    SuccessfulPayment,
    UserInfo,
    WebhookDelivery,
    describe_buttons,
)

UPDATE_TYPES = frozenset({
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages",
    "message_reaction", "message_reaction_count", "inline_query", "chosen_inline_result",
    "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media", "poll",
    "poll_answer", "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
    "removed_chat_boost",
})
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Message fields of service messages, which every bot in a group receives.
SERVICE_FIELDS = frozenset({
    "new_chat_members", "left_chat_member", "new_chat_title", "new_chat_photo",
    "delete_chat_photo", "group_chat_created", "supergroup_chat_created",
    "migrate_to_chat_id", "migrate_from_chat_id", "pinned_message", "successful_payment",
    "refunded_payment",
})
QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"


@dataclass
class StoredMessage:
    """A message in a chat (mutable; tests see ``BotMessage`` snapshots of it)."""

    chat_id: int
    message_id: int
    outgoing: bool
    json: JsonDict
    sent_markup: JsonDict | None = None
    parse_mode: str | None = None
    history: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    file_id: str | None = None
    private: JsonDict = field(default_factory=dict)


@dataclass
class ChatState:
    peer: UserInfo | GroupInfo  # a private chat's user, or a group
    blocked: bool = False  # the user blocked the bot, or the bot was removed from the group
    next_message_id: int = 1
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    events: list[ChatEvent] = field(default_factory=list)
    cursor: int = 0
    keyboard: JsonDict | None = None
    log: list[str] = field(default_factory=list)
    actions: list[tuple[float, str]] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.peer.id

    @property
    def is_group(self) -> bool:
        return isinstance(self.peer, GroupInfo)

    @property
    def user(self) -> UserInfo:
        """The user of a private chat (a group has members instead)."""
        if not isinstance(self.peer, UserInfo):
            raise TypeError(f"chat {self.peer.id} is a group, not a private chat")
        return self.peer

    def chat_json(self) -> JsonDict:
        return self.peer.chat_json()


@dataclass
class CallbackQueryState:
    id: str
    chat_id: int
    user_id: int
    message_id: int
    data: str | None
    created_at: float
    answer: CallbackAnswer | None = None


@dataclass
class PreCheckoutState:
    id: str
    chat_id: int
    user_id: int
    invoice_message_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    created_at: float
    answer: PreCheckoutAnswer | None = None
    payment: SuccessfulPayment | None = None
    expired: bool = False


@dataclass
class WebhookState:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    set_at: float
    generation: int
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class PollState:
    id: int
    limit: int
    timeout: float
    cancelled: bool = False


@dataclass
class InjectedFault:
    method: str
    error: ApiError
    times: int


class BotApiState:
    """All of the server's state and the operations on it; callers hold ``lock``."""

    def __init__(self, *, token: str, bot_id: int, bot_username: str, bot_first_name: str,
                 flood: FloodControl, callback_query_ttl: float, pre_checkout_timeout: float,
                 strict_formatting: bool, clock: Callable[[], float]) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.flood = flood
        self.callback_query_ttl = callback_query_ttl
        self.pre_checkout_timeout = pre_checkout_timeout
        self.strict_formatting = strict_formatting
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []
        self.chats: dict[int, ChatState] = {}
        self.pending: list[JsonDict] = []
        self.update_log: dict[int, JsonDict] = {}
        self.dropped_updates: list[JsonDict] = []
        self.allowed_updates: frozenset[str] | None = None
        self.webhook: WebhookState | None = None
        self.webhook_generation = 0
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.current_poll = 0
        self.waiting_polls = 0
        self.calls: list[RecordedCall] = []
        self.callback_queries: dict[str, CallbackQueryState] = {}
        self.pre_checkouts: dict[str, PreCheckoutState] = {}
        self.payments: dict[str, SuccessfulPayment] = {}
        self.refunds: list[Refund] = []
        self.files: dict[str, StoredFile] = {}
        self.commands: dict[tuple[str, str], list[JsonDict]] = {}
        self.bot_settings: dict[tuple[str, str], Any] = {}
        self.faults: list[InjectedFault] = []
        self.latency: dict[str, float] = {}
        self._update_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._file_numbers = itertools.count(1)
        self._query_ids = itertools.count(1)

    # -- plumbing --------------------------------------------------------------------------

    def notify(self) -> None:
        self.changed.notify_all()
        for listener in list(self.listeners):
            listener()

    def now(self) -> int:
        return int(self.clock())

    def wait_until(self, check: Callable[[], Any], timeout: float) -> Any:
        """Waits on ``changed`` until ``check()`` is truthy; returns it (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)

    def bot_user(self) -> JsonDict:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name,
                "username": self.bot_username}

    def record_call(self, call: RecordedCall) -> None:
        with self.lock:
            self.calls.append(call)
            self.notify()

    def take_fault(self, method: str) -> ApiError | None:
        for fault in self.faults:
            if fault.method in (method.lower(), "*") and fault.times != 0:
                fault.times -= 1
                self.faults = [f for f in self.faults if f.times != 0]
                return fault.error
        return None

    def next_query_id(self) -> str:
        # Telegram's ids are opaque strings of large numbers; unique per server.
        return str(4_000_000_000_000_000 + next(self._query_ids) * 7919 + self.bot_id % 7919)

    # -- chats -----------------------------------------------------------------------------

    def add_chat(self, peer: UserInfo | GroupInfo) -> ChatState:
        chat = self.chats.get(peer.id)
        if chat is None:
            chat = self.chats[peer.id] = ChatState(peer)
        return chat

    def chat_for_send(self, raw_chat_id: Any) -> ChatState:
        """The private chat a send goes to: 400 for an unknown chat, 403 when blocked."""
        if raw_chat_id is None or raw_chat_id == "":
            raise bad_request("chat_id is empty")
        try:
            chat_id = int(raw_chat_id)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None
        chat = self.chats.get(chat_id)
        if chat is None:
            raise bad_request("chat not found")
        if chat.blocked and isinstance(chat.peer, GroupInfo):
            raise forbidden(f"bot was kicked from the {chat.peer.type} chat")
        if chat.blocked:
            raise forbidden("bot was blocked by the user")
        return chat

    def chat_instance(self, chat_id: int) -> str:
        digest = hashlib.sha256(f"{self.bot_id}:{chat_id}".encode()).digest()
        return str(int.from_bytes(digest[:8], "big", signed=True))

    def new_message_id(self, chat: ChatState) -> int:
        message_id = chat.next_message_id
        chat.next_message_id += 1
        return message_id

    def log(self, chat: ChatState, line: str) -> None:
        chat.log.append(line)

    # -- updates ---------------------------------------------------------------------------

    def update_allowed(self, kind: str) -> bool:
        if self.allowed_updates is None:
            return kind not in NOT_BY_DEFAULT
        return kind in self.allowed_updates

    def push_update(self, kind: str, payload: JsonDict) -> int | None:
        """Queues an update of ``kind``; None when allowed_updates filters it out."""
        if not self.update_allowed(kind):
            self.dropped_updates.append({kind: copy.deepcopy(payload)})
            self.notify()
            return None
        update_id = next(self._update_ids)
        update = {"update_id": update_id, kind: copy.deepcopy(payload)}
        self.update_log[update_id] = update
        self.pending.append(update)
        self.notify()
        return update_id

    def replay_update(self, update_id: int) -> int | None:
        """Queues an earlier update again, unchanged but for a new update_id."""
        original = self.update_log.get(update_id)
        if original is None:
            raise KeyError(f"no update {update_id}")
        kind = next(k for k in original if k != "update_id")
        return self.push_update(kind, original[kind])

    def set_allowed_updates(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            raise bad_request("can't parse allowed_updates JSON object")
        names = {str(v) for v in value if str(v) in UPDATE_TYPES}
        self.allowed_updates = frozenset(names) if names else None

    def begin_poll(self, offset: int | None, limit: int, timeout: float) -> PollState:
        if self.webhook is not None:
            raise conflict("can't use getUpdates method while webhook is active; use "
                           "deleteWebhook to delete the webhook first")
        if offset is not None and offset < 0:
            keep = -offset
            self.pending = self.pending[-keep:] if keep else []
        elif offset:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
        self.current_poll += 1
        self.notify()  # an older long poll is now terminated
        return PollState(self.current_poll, max(1, min(100, limit)), max(0.0, timeout))

    def poll_result(self, poll: PollState) -> list[JsonDict]:
        """Updates for a poll (maybe empty); 409 when the poll was superseded."""
        if self.webhook is not None:
            raise conflict("terminated by setWebhook request")
        if poll.id != self.current_poll:
            raise conflict("terminated by other getUpdates request; make sure that only one "
                           "bot instance is running")
        return copy.deepcopy(self.pending[:poll.limit])

    def drop_pending(self) -> None:
        self.pending = []
        self.notify()

    # -- webhook ---------------------------------------------------------------------------

    def next_webhook_job(self) -> tuple[WebhookState, JsonDict] | None:
        if self.webhook is None or not self.pending:
            return None
        return self.webhook, copy.deepcopy(self.pending[0])

    def webhook_done(self, generation: int, update_id: int) -> None:
        """Takes an update off the queue once delivered (or given up on)."""
        if self.webhook is not None and self.webhook.generation == generation:
            self.pending = [u for u in self.pending if u["update_id"] != update_id]
            self.notify()

    def webhook_attempt(self, generation: int, delivery: WebhookDelivery) -> None:
        self.webhook_deliveries.append(delivery)
        if self.webhook is not None and self.webhook.generation == generation \
                and not delivery.ok:
            self.webhook.last_error_date = self.now()
            self.webhook.last_error_message = delivery.error or f"Wrong response from the " \
                                                                f"webhook: {delivery.status}"
        self.notify()

    # -- messages --------------------------------------------------------------------------

    def add_incoming(self, chat: ChatState, body: JsonDict, *,
                     sender: UserInfo | None = None) -> tuple[StoredMessage, int | None]:
        """A message from a user (in a group: ``sender``), queued as a "message" update when
        the bot is to see it."""
        message_id = self.new_message_id(chat)
        data = {"message_id": message_id, "from": (sender or chat.user).json(),
                "chat": chat.chat_json(), "date": self.now(), **copy.deepcopy(body)}
        if isinstance(data.get("reply_to_message"), dict):
            # "will not contain further reply_to_message fields even if it itself is a reply"
            data["reply_to_message"].pop("reply_to_message", None)
        stored = StoredMessage(chat.id, message_id, outgoing=False, json=data)
        chat.messages[message_id] = stored
        if not self.bot_sees(chat, data):
            self.log(chat, f"(#{message_id} not sent to the bot: privacy mode)")
            self.notify()
            return stored, None
        update_id = self.push_update("message", data)
        return stored, update_id

    def bot_sees(self, chat: ChatState, data: JsonDict) -> bool:
        """Privacy mode: in a group where it is no administrator the bot receives commands
        (ours, or without a bot's @username: the only bot there), replies to its own
        messages and service messages, nothing else
        (https://core.telegram.org/bots/features#privacy-mode)."""
        group = chat.peer
        if not isinstance(group, GroupInfo) or group.bot_is_admin:
            return True
        if SERVICE_FIELDS & data.keys():
            return True
        replied = data.get("reply_to_message")
        if isinstance(replied, dict) and (replied.get("from") or {}).get("id") == self.bot_id:
            return True
        text = str(data.get("text") or data.get("caption") or "")
        entities = data.get("entities") or data.get("caption_entities") or []
        for entity in entities:
            if entity.get("type") != "bot_command":
                continue
            command = text[entity["offset"]:entity["offset"] + entity["length"]]
            _name, _, target = command.partition("@")
            if not target or target.lower() == self.bot_username.lower():
                return True
        return False

    def add_outgoing(self, chat: ChatState, body: JsonDict, *, sent_markup: JsonDict | None,
                     parse_mode: str | None, file_id: str | None = None) -> StoredMessage:
        """A message from the bot: stored, logged, and announced to waiting tests."""
        message_id = self.new_message_id(chat)
        data: JsonDict = {"message_id": message_id, "from": self.bot_user(),
                          "chat": chat.chat_json(), "date": self.now()}
        data.update(copy.deepcopy(body))
        if sent_markup is not None and "inline_keyboard" in sent_markup:
            data["reply_markup"] = copy.deepcopy(sent_markup)
        stored = StoredMessage(chat.id, message_id, outgoing=True, json=data,
                               sent_markup=copy.deepcopy(sent_markup), parse_mode=parse_mode,
                               file_id=file_id)
        chat.messages[message_id] = stored
        if sent_markup is not None:
            if "keyboard" in sent_markup:
                chat.keyboard = copy.deepcopy(sent_markup)
            elif sent_markup.get("remove_keyboard"):
                chat.keyboard = None
        self.add_event(chat, "sent", stored)
        return stored

    def find_message(self, chat: ChatState, message_id: int) -> StoredMessage | None:
        message = chat.messages.get(message_id)
        return None if message is None or message.deleted else message

    def add_event(self, chat: ChatState, kind: str, message: StoredMessage) -> None:
        snapshot = self.snapshot(message)
        chat.events.append(ChatEvent(next(self._seq), kind, snapshot))
        prefix = {"sent": "bot", "edited": "bot edited", "deleted": "bot deleted"}[kind]
        self.log(chat, f"{prefix} #{message.message_id}: {describe_message(snapshot)}")
        self.notify()

    def snapshot(self, message: StoredMessage) -> BotMessage:
        stored = self.files.get(message.file_id) if message.file_id else None
        return BotMessage(
            chat_id=message.chat_id, message_id=message.message_id,
            date=int(message.json.get("date", 0)), json=copy.deepcopy(message.json),
            reply_markup=copy.deepcopy(message.sent_markup), history=tuple(message.history),
            deleted=message.deleted, parse_mode=message.parse_mode,
            data=stored.data if stored else None)

    def version_of(self, message: StoredMessage) -> MessageVersion:
        data = message.json
        entities = data.get("entities") or data.get("caption_entities") or []
        return MessageVersion(int(data.get("edit_date") or data.get("date") or 0),
                              data.get("text"), data.get("caption"),
                              tuple(copy.deepcopy(entities)),
                              copy.deepcopy(message.sent_markup))

    # -- files -----------------------------------------------------------------------------

    def store_file(self, kind: str, data: bytes | None, *, file_name: str | None = None,
                   mime_type: str | None = None, url: str | None = None,
                   width: int | None = None, height: int | None = None) -> StoredFile:
        number = next(self._file_numbers)
        path = None
        if data is not None:
            path = f"{kind}s/file_{number}.{extension(kind, file_name, mime_type)}"
        stored = StoredFile(new_file_id(kind), new_file_unique_id(), kind, data, file_name,
                            mime_type, path, url, width, height)
        self.files[stored.file_id] = stored
        return stored

    def file_by_path(self, path: str) -> StoredFile | None:
        return next((f for f in self.files.values() if f.file_path == path), None)

    # -- queries and payments ------------------------------------------------------------

    def live_callback_query(self, query_id: str) -> CallbackQueryState:
        query = self.callback_queries.get(query_id)
        if query is None or query.answer is not None \
                or self.clock() - query.created_at > self.callback_query_ttl:
            raise bad_request(QUERY_INVALID)
        return query

    def live_pre_checkout(self, query_id: str) -> PreCheckoutState:
        query = self.pre_checkouts.get(query_id)
        if query is None or query.answer is not None:
            raise bad_request(QUERY_INVALID)
        if self.clock() - query.created_at > self.pre_checkout_timeout:
            query.expired = True
            raise bad_request(QUERY_INVALID)
        return query

    def transcript(self, chat: ChatState) -> str:
        return "\n".join(f"  {line}" for line in chat.log) or "  (nothing yet)"


def describe_message(message: BotMessage) -> str:
    data = message.json
    if "text" in data:
        body = repr(data["text"])
    elif "photo" in data:
        body = f"[photo] {data.get('caption', '')!r}"
    elif "document" in data:
        body = f"[document {data['document'].get('file_name')}] {data.get('caption', '')!r}"
    elif "invoice" in data:
        invoice = data["invoice"]
        body = f"[invoice {invoice['title']!r} {invoice['total_amount']} {invoice['currency']}]"
    else:
        body = json.dumps({k: v for k, v in data.items()
                           if k not in ("from", "chat", "date", "message_id")})[:200]
    keyboard = describe_buttons(message)
    return body if keyboard == "none" else f"{body} {keyboard}"
