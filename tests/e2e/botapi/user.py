"""The user's side of a private chat: what a person does in Telegram, and what they see.

Every method is thread-safe and returns at once except the ``wait_*`` ones, which block
on the server's condition variable (never sleep-poll); their ``*_async`` twins run them in
a worker thread so an asyncio test's event loop keeps running.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Protocol

from tests.e2e.botapi.formatting import utf16_len
from tests.e2e.botapi.media import guess_mime, image_mime, image_size
from tests.e2e.botapi.records import (
    BotMessage,
    CallbackAnswer,
    JsonDict,
    PreCheckoutAnswer,
    SuccessfulPayment,
    UserInfo,
    describe_buttons,
)
from tests.e2e.botapi.state import (
    BotApiState,
    CallbackQueryState,
    ChatState,
    PreCheckoutState,
    StoredMessage,
)


class HasMessageId(Protocol):
    """A BotMessage, a python-telegram-bot Message, or anything with a message_id."""

    @property
    def message_id(self) -> int: ...


MessageMatcher = Callable[[BotMessage], bool] | str | re.Pattern[str] | None
_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")


def _matcher(predicate: MessageMatcher) -> Callable[[BotMessage], bool]:
    if predicate is None:
        return lambda message: True
    if isinstance(predicate, str):
        needle = predicate
        return lambda message: needle in message.content
    if isinstance(predicate, re.Pattern):
        pattern = predicate
        return lambda message: pattern.search(message.content) is not None
    return predicate


def command_entities(text: str) -> list[JsonDict]:
    """bot_command entities, as Telegram adds them to a user's text."""
    return [{"type": "bot_command", "offset": utf16_len(text[:m.start()]),
             "length": utf16_len(m.group())} for m in _COMMAND.finditer(text)]


def text_body(text: str, entities: list[JsonDict] | None) -> JsonDict:
    """An incoming text message's body (``entities`` None: its /commands found)."""
    if not text.strip():
        raise ValueError("Telegram does not send empty messages")
    body: JsonDict = {"text": text}
    found = command_entities(text) if entities is None else entities
    if found:
        body["entities"] = found
    return body


def command_text(command: str) -> tuple[str, list[JsonDict]]:
    """"/command args" (the "/" added if missing) and its entities: the command at the
    start, and any other /command in the arguments."""
    text = command if command.startswith("/") else "/" + command
    name = text.split(maxsplit=1)[0]
    entities = [{"type": "bot_command", "offset": 0, "length": utf16_len(name)}]
    entities += [e for e in command_entities(text) if e["offset"] > 0]
    return text, entities


class ChatView:
    """What the bot sent to one chat, as its people see it (a user's private chat, or a
    group). Subclasses give ``_state`` and ``_chat()``."""

    _state: BotApiState

    def _chat(self) -> ChatState:
        raise NotImplementedError

    def messages(self, *, include_deleted: bool = True) -> list[BotMessage]:
        """The messages the bot sent to this chat, as they are now, oldest first."""
        with self._state.lock:
            return [self._state.snapshot(m) for m in self._chat().messages.values()
                    if m.outgoing and (include_deleted or not m.deleted)]

    def last_message(self) -> BotMessage | None:
        found = self.messages(include_deleted=False)
        return found[-1] if found else None

    def message(self, message_id: int) -> BotMessage:
        with self._state.lock:
            stored: StoredMessage | None = self._chat().messages.get(message_id)
            if stored is None or not stored.outgoing:
                raise LookupError(f"the bot sent no message {message_id} to {self}")
            return self._state.snapshot(stored)

    def transcript(self) -> str:
        with self._state.lock:
            return self._state.transcript(self._chat())

    def wait_for_message(self, predicate: MessageMatcher = None, timeout: float = 10.0, *,
                         edits: bool = False) -> BotMessage:
        """The next message the bot sends here that matches (with edits=True, an edit too).

        ``predicate``: a function of the BotMessage, a substring of its text (or caption)
        or a compiled regex. Messages are read in order: one matched (and any before it)
        is not returned again. Raises AssertionError with the transcript on timeout.
        """
        matches = _matcher(predicate)
        kinds = ("sent", "edited") if edits else ("sent",)
        state = self._state
        deadline = time.monotonic() + timeout
        with state.changed:
            chat = self._chat()
            while True:
                for index in range(chat.cursor, len(chat.events)):
                    event = chat.events[index]
                    if event.kind in kinds and matches(event.message):
                        chat.cursor = index + 1
                        return event.message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    what = "message or edit" if edits else "message"
                    raise AssertionError(
                        f"{self} got no matching {what} from the bot within {timeout:g} s "
                        f"(predicate: {predicate!r}). Chat so far:\n{state.transcript(chat)}")
                state.changed.wait(remaining)

    async def wait_for_message_async(self, predicate: MessageMatcher = None,
                                     timeout: float = 10.0,  # noqa: ASYNC109 - as the sync one
                                     *,
                                     edits: bool = False) -> BotMessage:
        return await asyncio.to_thread(self.wait_for_message, predicate, timeout, edits=edits)


class TelegramUser(ChatView):
    """A Telegram user chatting privately with the bot (``server.user(...)``)."""

    def __init__(self, state: BotApiState, info: UserInfo,
                 phone_number: str | None = None) -> None:
        self._state = state
        self.info = info
        self.phone_number = phone_number  # shared by a request_contact button

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def chat_id(self) -> int:
        return self.info.id

    @property
    def first_name(self) -> str:
        return self.info.first_name

    @property
    def language_code(self) -> str | None:
        return self.info.language_code

    def _chat(self) -> ChatState:
        return self._state.chats[self.info.id]

    def __repr__(self) -> str:
        return f"TelegramUser(id={self.id}, first_name={self.first_name!r})"

    # -- doing things ------------------------------------------------------------------

    def send_text(self, text: str, *, entities: list[JsonDict] | None = None,
                  reply_to: int | None = None) -> int:
        """Sends a text message; /commands in it get bot_command entities. Its message_id."""
        body = text_body(text, entities)
        with self._state.lock:
            chat = self._chat()
            if reply_to is not None:
                target = chat.messages.get(reply_to)
                if target is not None:
                    body["reply_to_message"] = dict(target.json)
            message, _ = self._state.add_incoming(chat, body)
            self._state.log(chat, f"user #{message.message_id}: {text!r}")
            return message.message_id

    def send_command(self, command: str) -> int:
        """Sends "/command args" (the leading "/" is added if missing). Its message_id."""
        text, entities = command_text(command)
        return self.send_text(text, entities=entities)

    def start(self, payload: str | None = None) -> int:
        """/start, as the Start button or a t.me/bot?start=payload deep link sends it."""
        return self.send_command("/start" + (f" {payload}" if payload else ""))

    def send_contact(self, phone_number: str, *, own: bool = True,
                     first_name: str | None = None, last_name: str | None = None,
                     user_id: int | None = None) -> int:
        """Shares a contact: one's own (user_id = this user) or someone else's."""
        contact: JsonDict = {"phone_number": phone_number,
                             "first_name": first_name or (self.info.first_name if own
                                                          else "Contact")}
        if own and last_name is None and self.info.last_name:
            contact["last_name"] = self.info.last_name
        elif last_name is not None:
            contact["last_name"] = last_name
        contact_user = self.info.id if own else user_id
        if contact_user is not None:
            contact["user_id"] = contact_user
        with self._state.lock:
            chat = self._chat()
            message, _ = self._state.add_incoming(chat, {"contact": contact})
            whose = "own" if own else "a"
            self._state.log(chat, f"user #{message.message_id}: shared {whose} contact "
                                  f"{phone_number}")
            return message.message_id

    def press_keyboard(self, text: str) -> int:
        """Taps a button of the reply keyboard now shown: sends its text, or the contact."""
        with self._state.lock:
            keyboard = self._chat().keyboard
            rows = (keyboard or {}).get("keyboard") or []
            for row in rows:
                for button in row:
                    label = button if isinstance(button, str) else button.get("text")
                    if label != text:
                        continue
                    if isinstance(button, dict) and button.get("request_contact"):
                        if not self.phone_number:
                            raise ValueError("set user.phone_number before sharing a contact")
                        return self.send_contact(self.phone_number)
                    return self.send_text(text)
            shown = [b if isinstance(b, str) else b.get("text") for r in rows for b in r]
            raise LookupError(f"no reply keyboard button {text!r}; the keyboard shows {shown}")

    def send_photo(self, data: bytes, *, caption: str | None = None) -> int:
        size = image_size(data) or (0, 0)
        with self._state.lock:
            stored = self._state.store_file("photo", data, mime_type=image_mime(data),
                                            width=size[0], height=size[1])
            photo = [{"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                      "width": size[0], "height": size[1], "file_size": len(data)}]
            body: JsonDict = {"photo": photo}
            if caption:
                body["caption"] = caption
            chat = self._chat()
            message, _ = self._state.add_incoming(chat, body)
            self._state.log(chat, f"user #{message.message_id}: [photo] {caption or ''!r}")
            return message.message_id

    def send_document(self, data: bytes, file_name: str, *, mime_type: str | None = None,
                      caption: str | None = None) -> int:
        mime = mime_type or guess_mime(file_name, None)
        with self._state.lock:
            stored = self._state.store_file("document", data, file_name=file_name,
                                            mime_type=mime)
            document: JsonDict = {"file_id": stored.file_id,
                                  "file_unique_id": stored.file_unique_id,
                                  "file_name": file_name, "file_size": len(data)}
            if mime:
                document["mime_type"] = mime
            body: JsonDict = {"document": document}
            if caption:
                body["caption"] = caption
            chat = self._chat()
            message, _ = self._state.add_incoming(chat, body)
            self._state.log(chat, f"user #{message.message_id}: [document {file_name}]")
            return message.message_id

    def press(self, message: HasMessageId | int, *, button_text: str | None = None,
              callback_data: str | None = None) -> str:
        """Taps an inline button of the message as it is now; the new callback query's id."""
        if button_text is None and callback_data is None:
            raise ValueError("say which button: button_text= or callback_data=")
        message_id = message if isinstance(message, int) else message.message_id
        state = self._state
        with state.lock:
            chat = self._chat()
            stored = chat.messages.get(message_id)
            if stored is None or not stored.outgoing:
                raise LookupError(f"the bot sent no message {message_id} to {self}")
            if stored.deleted:
                raise LookupError(f"message {message_id} was deleted; its buttons are gone")
            snapshot = state.snapshot(stored)
            button = snapshot.button(button_text, callback_data)
            if "callback_data" not in button:
                raise ValueError(f"button {button.get('text')!r} sends no callback query "
                                 f"({describe_buttons(snapshot)}); use pay() for pay buttons")
            query_id = state.next_query_id()
            data = str(button["callback_data"])
            state.callback_queries[query_id] = CallbackQueryState(
                query_id, chat.user.id, self.id, message_id, data, state.clock())
            state.log(chat, f"user pressed {button.get('text')!r} on #{message_id} "
                            f"(query {query_id}, data {data!r})")
            state.push_update("callback_query", {
                "id": query_id, "from": self.info.json(), "message": dict(stored.json),
                "chat_instance": state.chat_instance(chat.user.id), "data": data})
            return query_id

    def pay(self, invoice: HasMessageId | int) -> PaymentAttempt:
        """Pays an invoice the bot sent: a pre_checkout_query now; once the bot answers
        ok=True, a successful_payment message follows."""
        message_id = invoice if isinstance(invoice, int) else invoice.message_id
        state = self._state
        with state.lock:
            chat = self._chat()
            stored = chat.messages.get(message_id)
            if stored is None or not stored.outgoing or "invoice" not in stored.private:
                raise LookupError(f"message {message_id} is not an invoice from the bot")
            if stored.deleted:
                raise LookupError(f"invoice {message_id} was deleted")
            details = stored.private["invoice"]
            query_id = state.next_query_id()
            query = PreCheckoutState(query_id, chat.user.id, self.id, message_id,
                                     str(details["currency"]), int(details["total_amount"]),
                                     str(details["payload"]), state.clock())
            state.pre_checkouts[query_id] = query
            state.log(chat, f"user pays invoice #{message_id}: {query.total_amount} "
                            f"{query.currency} (pre-checkout {query_id})")
            state.push_update("pre_checkout_query", {
                "id": query_id, "from": self.info.json(), "currency": query.currency,
                "total_amount": query.total_amount, "invoice_payload": query.invoice_payload})
            return PaymentAttempt(state, query_id)

    def block(self) -> None:
        """Blocks the bot: sends then fail with 403; the bot gets a my_chat_member update."""
        self._set_blocked(True)

    def unblock(self) -> None:
        self._set_blocked(False)

    def _set_blocked(self, blocked: bool) -> None:
        state = self._state
        with state.lock:
            chat = self._chat()
            if chat.blocked == blocked:
                return
            chat.blocked = blocked
            old, new = ("member", "kicked") if blocked else ("kicked", "member")

            def member(status: str) -> JsonDict:
                data: JsonDict = {"user": state.bot_user(), "status": status}
                if status == "kicked":
                    data["until_date"] = 0
                return data

            state.log(chat, "user blocked the bot" if blocked else "user unblocked the bot")
            state.push_update("my_chat_member", {
                "chat": chat.user.chat_json(), "from": self.info.json(), "date": state.now(),
                "old_chat_member": member(old), "new_chat_member": member(new)})

    # -- seeing things -----------------------------------------------------------------

    def reply_keyboard(self) -> list[list[JsonDict]]:
        """The reply keyboard shown now (empty when none or removed)."""
        with self._state.lock:
            keyboard = self._chat().keyboard or {}
            return [[b if isinstance(b, dict) else {"text": str(b)} for b in row]
                    for row in keyboard.get("keyboard") or []]

    def chat_actions(self) -> list[str]:
        with self._state.lock:
            return [action for _, action in self._chat().actions]

    def wait_for_answer(self, query_id: str, timeout: float = 10.0) -> CallbackAnswer:
        """Blocks until the bot answers the callback query; AssertionError on timeout."""
        def answered() -> CallbackAnswer | None:
            query = self._state.callback_queries.get(query_id)
            return query.answer if query else None

        result = self._state.wait_until(answered, timeout)
        if result is None:
            raise AssertionError(f"the bot did not answer callback query {query_id} within "
                                 f"{timeout:g} s. Chat so far:\n{self.transcript()}")
        answer: CallbackAnswer = result
        return answer

    async def wait_for_answer_async(self, query_id: str,
                                    timeout: float = 10.0,  # noqa: ASYNC109 - as the sync one
                                    ) -> CallbackAnswer:
        return await asyncio.to_thread(self.wait_for_answer, query_id, timeout)

    def wait_for_chat_action(self, action: str = "typing", timeout: float = 10.0) -> None:
        def seen() -> bool:
            return any(a == action for _, a in self._chat().actions)

        if not self._state.wait_until(seen, timeout):
            raise AssertionError(f"the bot sent no {action!r} chat action within {timeout:g} s")


class PaymentAttempt:
    """A payment started by ``user.pay``: its pre-checkout query and what became of it."""

    def __init__(self, state: BotApiState, query_id: str) -> None:
        self._state = state
        self.query_id = query_id

    def __repr__(self) -> str:
        return f"PaymentAttempt(query_id={self.query_id!r}, status={self.status!r})"

    def _query(self) -> PreCheckoutState:
        return self._state.pre_checkouts[self.query_id]

    @property
    def status(self) -> str:
        """"pending", "approved" (paid), "declined" or "expired" (no answer in time)."""
        with self._state.lock:
            query = self._query()
            if query.answer is not None:
                return "approved" if query.answer.ok else "declined"
            if query.expired or \
                    self._state.clock() - query.created_at > self._state.pre_checkout_timeout:
                return "expired"
            return "pending"

    @property
    def answer(self) -> PreCheckoutAnswer | None:
        with self._state.lock:
            return self._query().answer

    @property
    def payment(self) -> SuccessfulPayment | None:
        with self._state.lock:
            return self._query().payment

    def wait(self, timeout: float = 10.0) -> PreCheckoutAnswer:
        """Blocks until the bot answers the pre-checkout query; AssertionError on timeout."""
        result = self._state.wait_until(lambda: self._query().answer, timeout)
        if result is None:
            chat = self._state.chats[self._query().chat_id]
            raise AssertionError(f"the bot did not answer pre-checkout query {self.query_id} "
                                 f"within {timeout:g} s. Chat so far:\n"
                                 f"{self._state.transcript(chat)}")
        answer: PreCheckoutAnswer = result
        return answer

    async def wait_async(self, timeout: float = 10.0) -> PreCheckoutAnswer:  # noqa: ASYNC109
        return await asyncio.to_thread(self.wait, timeout)

    def replay(self) -> int:
        """Delivers the successful_payment message update again (as after a lost offset);
        the new update_id."""
        with self._state.lock:
            payment = self._query().payment
            if payment is None or payment.update_id is None:
                raise LookupError(f"{self} has no successful payment to replay")
            update_id = self._state.replay_update(payment.update_id)
            if update_id is None:
                raise LookupError("allowed_updates now excludes message updates")
            return update_id

