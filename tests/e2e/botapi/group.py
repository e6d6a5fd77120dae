"""A group the bot is a member of: its members write (and reply to the bot's messages), and
everyone sees what the bot sends there.

What the bot receives follows privacy mode unless it is an administrator of the group (see
``BotApiState.bot_sees``). A reply carries the replied message as ``reply_to_message``,
without that message's own ``reply_to_message`` (https://core.telegram.org/bots/api#message).
"""

from __future__ import annotations

from tests.e2e.botapi.records import GroupInfo, JsonDict, UserInfo
from tests.e2e.botapi.state import BotApiState, ChatState
from tests.e2e.botapi.user import ChatView, TelegramUser, command_text, text_body


class TelegramGroup(ChatView):
    """A group or supergroup with the bot in it (``server.group(...)``)."""

    def __init__(self, state: BotApiState, info: GroupInfo) -> None:
        self._state = state
        self.info = info
        self.members: dict[int, UserInfo] = {}

    @property
    def id(self) -> int:
        return self.info.id

    def _chat(self) -> ChatState:
        return self._state.chats[self.info.id]

    def __repr__(self) -> str:
        return f"TelegramGroup(id={self.id}, title={self.info.title!r})"

    def add_member(self, user: TelegramUser) -> None:
        with self._state.lock:
            self.members[user.id] = user.info

    def send_text(self, member: TelegramUser, text: str, *,
                  entities: list[JsonDict] | None = None, reply_to: int | None = None) -> int:
        """``member`` writes in the group (replying to message ``reply_to``); the message's
        id. The bot gets it as an update only when privacy mode lets it."""
        if member.id not in self.members:
            raise LookupError(f"{member} is not a member of {self}")
        body = text_body(text, entities)
        with self._state.lock:
            chat = self._chat()
            if reply_to is not None:
                target = self._state.find_message(chat, reply_to)
                if target is None:
                    raise LookupError(f"no message {reply_to} in {self} to reply to")
                body["reply_to_message"] = dict(target.json)
            message, _ = self._state.add_incoming(chat, body, sender=member.info)
            replying = f" (reply to #{reply_to})" if reply_to is not None else ""
            self._state.log(chat, f"{member.first_name} #{message.message_id}{replying}: "
                                  f"{text!r}")
            return message.message_id

    def send_command(self, member: TelegramUser, command: str) -> int:
        """``member`` sends "/command args" in the group."""
        text, entities = command_text(command)
        return self.send_text(member, text, entities=entities)
