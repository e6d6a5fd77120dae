"""A Bot API stand-in for flow tests: records every request and answers like Telegram.

It plugs into the real Application as its HTTP layer (a PTB BaseRequest), so handlers,
filters, ConversationHandlers and the rate limiter run for real; nothing leaves the process.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from telegram.request import BaseRequest, RequestData

# The SMS gateway the harness is built with; conftest and bench.flows take it from here.
from tests.fakes.sms import RecordingSms as RecordingSms

BOT_ID = 7_000_000_001
BOT_TOKEN = f"{BOT_ID}:TESTtokenTESTtokenTESTtokenTESTtoken"


@dataclass
class RecordedCall:
    method: str
    params: dict[str, Any]


@dataclass
class RecordingRequest(BaseRequest):
    calls: list[RecordedCall] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # methods answered 404, as some servers
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = None, write_timeout: Any = None,
                         connect_timeout: Any = None, pool_timeout: Any = None,
                         ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        params = dict(request_data.parameters) if request_data is not None else {}
        if request_data is not None and request_data.multipart_data:
            # Uploaded files (a QR code's PNG): name -> bytes, beside the other params.
            params["_files"] = {name: value[1] for name, value
                                in request_data.multipart_data.items()}
        self.calls.append(RecordedCall(api_method, params))
        if api_method in self.unsupported:
            return 404, json.dumps({"ok": False, "error_code": 404,
                                    "description": "Not Found: method not found"}).encode()
        return 200, json.dumps({"ok": True, "result": self._result(api_method, params)}).encode()

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {"id": BOT_ID, "is_bot": True, "first_name": "TopUp", "username": "topup_bot",
                    "can_join_groups": False, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if method == "sendPhoto":
            chat_id = int(params.get("chat_id", 0))
            return {"message_id": next(self._message_ids), "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private"},
                    "caption": params.get("caption", ""),
                    "photo": [{"file_id": "qr", "file_unique_id": "qr", "width": 370,
                               "height": 370}],
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"}}
        if method == "sendDocument":  # a file (a CSV export): its bytes are in "_files"
            return {"message_id": next(self._message_ids), "date": int(time.time()),
                    "chat": {"id": int(params.get("chat_id", 0)), "type": "private"},
                    "caption": params.get("caption", ""),
                    "document": {"file_id": "doc", "file_unique_id": "doc"},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"}}
        if method in ("sendMessage", "editMessageText"):
            chat_id = int(params.get("chat_id", 0))
            return {"message_id": next(self._message_ids), "date": int(time.time()),
                    "chat": {"id": chat_id, "type": "private"}, "text": params.get("text", ""),
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"}}
        if method == "getUpdates":
            return []
        return True

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [call.params for call in self.calls if call.method == method]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [str(p["text"]) for p in self.sent()
                if chat_id is None or int(p["chat_id"]) == chat_id]


_update_ids = itertools.count(1)


def text_update(text: str, *, user_id: int = 555, language: str | None = "en",
                first_name: str = "Dara") -> dict[str, Any]:
    """The JSON of a private-chat text message, with a bot_command entity for /commands."""
    message: dict[str, Any] = {
        "message_id": next(_update_ids), "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": first_name},
        "from": {"id": user_id, "is_bot": False, "first_name": first_name,
                 **({"language_code": language} if language else {})},
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": next(_update_ids), "message": message}


def _user(user_id: int, language: str | None, first_name: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name,
            **({"language_code": language} if language else {})}


def contact_update(phone: str, *, user_id: int = 555, contact_user_id: int | None = None,
                   language: str | None = "en") -> dict[str, Any]:
    """The user shares a contact (their own when ``contact_user_id`` is their id)."""
    contact: dict[str, Any] = {"phone_number": phone, "first_name": "Dara"}
    if contact_user_id is not None:
        contact["user_id"] = contact_user_id
    return {"update_id": next(_update_ids), "message": {
        "message_id": next(_update_ids), "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Dara"},
        "from": _user(user_id, language, "Dara"), "contact": contact}}


def callback_update(data: str, *, user_id: int = 555, language: str | None = "en",
                    message_id: int = 1, text: str = "...",
                    reply_markup: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user presses an inline button carrying ``data`` under one of the bot's messages
    (which reads ``text``, with ``reply_markup`` under it, as Telegram sends them)."""
    message: dict[str, Any] = {
        "message_id": message_id, "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Dara"},
        "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"}, "text": text}
    if reply_markup is not None:
        message["reply_markup"] = reply_markup
    return {"update_id": next(_update_ids), "callback_query": {
        "id": str(next(_update_ids)), "chat_instance": f"ci-{user_id}",
        "from": _user(user_id, language, "Dara"), "data": data, "message": message}}


# --- payments (wallet) ---------------------------------------------------------------------


def pre_checkout_update(payload: str, *, total_amount: int, currency: str = "XTR",
                        user_id: int = 555, language: str | None = "en") -> dict[str, Any]:
    """Telegram asks the bot to confirm a checkout before the user's money is taken."""
    return {"update_id": next(_update_ids), "pre_checkout_query": {
        "id": f"pcq-{next(_update_ids)}", "from": _user(user_id, language, "Dara"),
        "currency": currency, "total_amount": total_amount, "invoice_payload": payload}}


def successful_payment_update(payload: str, *, total_amount: int, charge_id: str,
                              currency: str = "XTR", provider_charge_id: str = "",
                              user_id: int = 555, language: str | None = "en",
                              ) -> dict[str, Any]:
    """The service message of a completed payment (send it twice to replay it)."""
    return {"update_id": next(_update_ids), "message": {
        "message_id": next(_update_ids), "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Dara"},
        "from": _user(user_id, language, "Dara"),
        "successful_payment": {
            "currency": currency, "total_amount": total_amount, "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": provider_charge_id}}}


def refunded_payment_update(payload: str, *, total_amount: int, charge_id: str,
                            currency: str = "XTR", user_id: int = 555) -> dict[str, Any]:
    """The service message Telegram sends after a payment was refunded."""
    return {"update_id": next(_update_ids), "message": {
        "message_id": next(_update_ids), "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Dara"},
        "from": _user(user_id, "en", "Dara"),
        "refunded_payment": {
            "currency": currency, "total_amount": total_amount, "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id}}}


def serve_invoices(api: RecordingRequest) -> None:
    """Makes ``api`` answer sendInvoice with the invoice message, as Telegram does (PTB
    parses the result into a Message, so the default ``True`` would fail)."""
    answer = api._result

    def result(method: str, params: dict[str, Any]) -> Any:
        if method != "sendInvoice":
            return answer(method, params)
        prices = params.get("prices", [])
        if isinstance(prices, str):
            prices = json.loads(prices)
        return {"message_id": next(api._message_ids), "date": int(time.time()),
                "chat": {"id": int(params.get("chat_id", 0)), "type": "private"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "TopUp"},
                "invoice": {"title": params.get("title", ""),
                            "description": params.get("description", ""),
                            "start_parameter": params.get("start_parameter", ""),
                            "currency": params.get("currency", ""),
                            "total_amount": sum(int(p["amount"]) for p in prices)}}

    api._result = result  # type: ignore[method-assign]
