"""The Bot API methods, each a function of the state and the request's parameters.

Shapes and error descriptions follow https://core.telegram.org/bots/api. ``execute`` runs
one method under the state's lock and records it in ``state.calls``.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.e2e.botapi.errors import NOT_FOUND, ApiError, bad_request
from tests.e2e.botapi.formatting import Entity, parse_formatted, sort_entities, trim
from tests.e2e.botapi.media import guess_mime, image_mime, image_size
from tests.e2e.botapi.params import Params
from tests.e2e.botapi.records import (
    CallbackAnswer,
    JsonDict,
    PreCheckoutAnswer,
    RecordedCall,
    Refund,
    StoredFile,
    SuccessfulPayment,
)
from tests.e2e.botapi.state import (
    BotApiState,
    ChatState,
    PollState,
    StoredMessage,
    WebhookState,
)

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_TEXT_LIMIT = 200
CALLBACK_DATA_LIMIT = 64
DOWNLOAD_LIMIT = 20 * 1024 * 1024
NOT_MODIFIED = ("message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})
INLINE_ACTIONS = frozenset({
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
})
COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
SCOPES = frozenset({"default", "all_private_chats", "all_group_chats",
                    "all_chat_administrators", "chat", "chat_administrators", "chat_member"})


@dataclass(frozen=True)
class Answer:
    """A successful result, with the optional "description" Telegram adds to some."""

    result: Any
    description: str | None = None


MethodFn = Callable[[BotApiState, Params], Any]
METHODS: dict[str, tuple[str, MethodFn]] = {}
F = TypeVar("F", bound=MethodFn)


def api_method(name: str) -> Callable[[F], F]:
    def register(fn: F) -> F:
        METHODS[name.lower()] = (name, fn)
        return fn
    return register


def canonical_name(name: str) -> str | None:
    entry = METHODS.get(name.lower())
    return entry[0] if entry else ("getUpdates" if name.lower() == "getupdates" else None)


def execute(state: BotApiState, name: str, params: Params) -> Answer:
    """Runs one method (not getUpdates) and records it; raises ApiError on failure."""
    entry = METHODS.get(name.lower())
    method = entry[0] if entry else name
    with state.lock:
        try:
            if entry is None:
                raise NOT_FOUND
            fault = state.take_fault(method)
            if fault is not None:
                raise fault
            outcome = entry[1](state, params)
            answer = outcome if isinstance(outcome, Answer) else Answer(outcome)
        except ApiError as exc:
            state.record_call(RecordedCall(method, params.normalized(), state.clock(), False,
                                           exc.error_code, exc.description))
            raise
        state.record_call(RecordedCall(method, params.normalized(), state.clock(), True,
                                       result=copy.deepcopy(answer.result)))
        return answer


# -- shared validation --------------------------------------------------------------------


def formatted_text(state: BotApiState, p: Params, field: str, entities_field: str,
                   parse_mode: str | None, limit: int, *, empty: str | None,
                   too_long: str) -> tuple[str, list[Entity]]:
    """Text after parse_mode or explicit entities, trimmed; checks the length limits."""
    raw = p.get_str(field)
    if raw is None:
        raw = ""
    given = p.get_json(entities_field, "entities")
    if given is not None:
        if not isinstance(given, list) or not all(
                isinstance(e, dict) and {"type", "offset", "length"} <= e.keys() for e in given):
            raise bad_request(f"can't parse entities: {entities_field} must be an Array of "
                              "MessageEntity")
        text, entities = raw, sort_entities([dict(e) for e in given])
    else:
        try:
            text, entities = parse_formatted(raw, parse_mode)
        except ApiError:
            if state.strict_formatting:
                raise
            text, entities = re.sub(r"<[^>]*>", "", raw), []
    text, entities = trim(text, entities)
    if not text and empty is not None:
        raise bad_request(empty)
    if len(text) > limit:
        raise bad_request(too_long)
    return text, entities


def parse_reply_markup(p: Params, *, inline_only: bool = False) -> JsonDict | None:
    markup = p.get_json("reply_markup", "reply keyboard markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    markup = {k: v for k, v in markup.items() if v is not None}
    if "inline_keyboard" in markup:
        _check_inline_keyboard(markup["inline_keyboard"])
        if not any(markup["inline_keyboard"]):
            return None  # an empty inline keyboard is no keyboard
        return markup
    if inline_only:
        raise bad_request("inline keyboard expected")
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request('can\'t parse reply keyboard markup JSON object: Field '
                              '"keyboard" must be an Array of Arrays')
        for row in rows:
            for button in row:
                if isinstance(button, dict) and isinstance(button.get("text"), str):
                    continue
                if isinstance(button, str):
                    continue
                raise bad_request("can't parse keyboard button: Field \"text\" must be of "
                                  "type String")
        return markup
    if markup.get("remove_keyboard") is True or markup.get("force_reply") is True:
        return markup
    raise bad_request("can't parse reply keyboard markup JSON object")


def _check_inline_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise bad_request('can\'t parse inline keyboard button: Field "inline_keyboard" of '
                          'the InlineKeyboardMarkup must be an Array of Arrays')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request('can\'t parse inline keyboard button: Field "text" must be '
                                  'of type String')
            actions = INLINE_ACTIONS & {k for k, v in button.items() if v is not None}
            if not actions:
                raise bad_request("can't parse inline keyboard button: Text buttons are "
                                  "unallowed in the inline keyboard")
            if "callback_data" in actions:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= \
                        CALLBACK_DATA_LIMIT:
                    raise bad_request("BUTTON_DATA_INVALID")
            if "url" in actions:
                url = str(button["url"])
                scheme = urlsplit(url).scheme.lower()
                if not url or (scheme and scheme not in ("http", "https", "tg", "ton")):
                    raise bad_request("BUTTON_URL_INVALID")


def _markup_key(markup: JsonDict | None) -> str:
    if not markup or "inline_keyboard" not in markup:
        return ""
    return json.dumps(markup["inline_keyboard"], sort_keys=True)


def _target_chat(state: BotApiState, p: Params, what: str) -> tuple[ChatState, int]:
    if p.has("inline_message_id") and not p.has("chat_id"):
        raise bad_request(f"message to {what} not found")
    chat = state.chat_for_send(p.raw("chat_id"))
    return chat, p.required_int("message_id")


def _editable(state: BotApiState, p: Params) -> tuple[ChatState, StoredMessage]:
    chat, message_id = _target_chat(state, p, "edit")
    message = state.find_message(chat, message_id)
    if message is None:
        raise bad_request("message to edit not found")
    if not message.outgoing:
        raise bad_request("message can't be edited")
    return chat, message


def _reply_to(state: BotApiState, chat: ChatState, p: Params) -> JsonDict | None:
    reply = p.get_json("reply_parameters", "reply parameters")
    message_id: int | None = None
    allow_missing = p.get_bool("allow_sending_without_reply")
    if isinstance(reply, dict) and reply.get("message_id") is not None:
        message_id = int(reply["message_id"])
        allow_missing = bool(reply.get("allow_sending_without_reply", allow_missing))
    elif p.has("reply_to_message_id"):
        message_id = p.get_int("reply_to_message_id")
    if message_id is None:
        return None
    target = state.find_message(chat, message_id)
    if target is None:
        if allow_missing:
            return None
        raise bad_request("message to be replied not found")
    data = copy.deepcopy(target.json)
    data.pop("reply_to_message", None)
    return data


def _common_body(state: BotApiState, chat: ChatState, p: Params) -> JsonDict:
    body: JsonDict = {}
    reply = _reply_to(state, chat, p)
    if reply is not None:
        body["reply_to_message"] = reply
    if p.get_bool("protect_content"):
        body["has_protected_content"] = True
    return body


def _input_file(state: BotApiState, p: Params, name: str, kind: str) -> StoredFile:
    upload = p.files.get(name)
    value = p.get_str(name)
    if value is not None and value.startswith("attach://"):
        upload = p.files.get(value.removeprefix("attach://"))
        if upload is None:
            raise bad_request(f"there is no {name} in the request")
        value = None
    if upload is not None:
        if not upload.body:
            raise bad_request("file must be non-empty")
        if kind == "photo":
            size = image_size(upload.body) or (0, 0)
            return state.store_file("photo", upload.body, file_name=upload.filename,
                                    mime_type=image_mime(upload.body), width=size[0],
                                    height=size[1])
        return state.store_file(kind, upload.body, file_name=upload.filename or None,
                                mime_type=guess_mime(upload.filename, upload.content_type))
    if value:
        known = state.files.get(value)
        if known is not None:
            if known.kind != kind:
                raise bad_request(f"can't use file of type {known.kind.title()} as "
                                  f"{kind.title()}")
            return known
        if value.startswith(("http://", "https://")):
            file_name = urlsplit(value).path.rsplit("/", 1)[-1] or None
            return state.store_file(kind, None, url=value, file_name=file_name,
                                    mime_type=guess_mime(file_name, None))
        raise bad_request("wrong file identifier/HTTP URL specified")
    raise bad_request(f"there is no {name} in the request")


def photo_json(stored: StoredFile) -> list[JsonDict]:
    size: JsonDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                      "width": stored.width or 0, "height": stored.height or 0}
    if stored.file_size is not None:
        size["file_size"] = stored.file_size
    return [size]


def document_json(stored: StoredFile) -> JsonDict:
    data: JsonDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
    if stored.file_name:
        data["file_name"] = stored.file_name
    if stored.mime_type:
        data["mime_type"] = stored.mime_type
    if stored.file_size is not None:
        data["file_size"] = stored.file_size
    return data


def _caption(state: BotApiState, p: Params, body: JsonDict) -> None:
    caption, entities = formatted_text(state, p, "caption", "caption_entities",
                                       p.get_str("parse_mode"), CAPTION_LIMIT, empty=None,
                                       too_long="message caption is too long")
    if caption:
        body["caption"] = caption
        if entities:
            body["caption_entities"] = entities


def _send(state: BotApiState, chat: ChatState, method: str, body: JsonDict,
          markup: JsonDict | None, p: Params, *, file_id: str | None = None,
          private: JsonDict | None = None) -> JsonDict:
    state.flood.check(chat.id, method, group=chat.is_group)
    message = state.add_outgoing(chat, body, sent_markup=markup,
                                 parse_mode=p.get_str("parse_mode"), file_id=file_id)
    if private:
        message.private.update(private)
    return copy.deepcopy(message.json)


# -- getting updates ------------------------------------------------------------------------


def start_get_updates(state: BotApiState, p: Params) -> PollState:
    """getUpdates up to the wait: confirms by offset, stores allowed_updates."""
    offset = p.get_int("offset")
    limit = p.get_int("limit", 100) or 100
    timeout = p.get_float("timeout", 0.0)
    with state.lock:
        if state.webhook is None:
            state.set_allowed_updates(p.get_json("allowed_updates", "allowed_updates"))
        return state.begin_poll(offset, limit, timeout)


@api_method("getMe")
def get_me(state: BotApiState, p: Params) -> JsonDict:
    return {**state.bot_user(), "can_join_groups": False,
            "can_read_all_group_messages": False, "supports_inline_queries": False,
            "can_connect_to_business": False, "has_main_web_app": False}


@api_method("setWebhook")
def set_webhook(state: BotApiState, p: Params) -> Answer:
    url = p.text("url").strip()
    if not url:
        return delete_webhook(state, p)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request("invalid webhook URL specified")
    secret = p.get_str("secret_token") or None
    if secret is not None and not SECRET_TOKEN.match(secret):
        raise bad_request("secret token contains unallowed characters")
    max_connections = p.get_int("max_connections", 40) or 40
    if not 1 <= max_connections <= 100:
        raise bad_request("invalid max_connections specified")
    allowed = p.get_json("allowed_updates", "allowed_updates")
    state.set_allowed_updates(allowed)
    if p.get_bool("drop_pending_updates"):
        state.drop_pending()
    current = state.webhook
    if current is not None and current.url == url and current.secret_token == secret \
            and current.max_connections == max_connections:
        description = "Webhook is already set"
    else:
        description = "Webhook was set"
    state.webhook_generation += 1
    state.webhook = WebhookState(url, secret, max_connections,
                                 allowed if isinstance(allowed, list) else None,
                                 state.clock(), state.webhook_generation)
    state.notify()
    return Answer(True, description)


@api_method("deleteWebhook")
def delete_webhook(state: BotApiState, p: Params) -> Answer:
    if p.get_bool("drop_pending_updates"):
        state.drop_pending()
    if state.webhook is None:
        return Answer(True, "Webhook is already deleted")
    state.webhook = None
    state.webhook_generation += 1
    state.notify()
    return Answer(True, "Webhook was deleted")


@api_method("getWebhookInfo")
def get_webhook_info(state: BotApiState, p: Params) -> JsonDict:
    hook = state.webhook
    info: JsonDict = {"url": hook.url if hook else "", "has_custom_certificate": False,
                      "pending_update_count": len(state.pending)}
    if hook is not None:
        info["max_connections"] = hook.max_connections
        info["ip_address"] = "127.0.0.1"
        if hook.allowed_updates is not None:
            info["allowed_updates"] = list(hook.allowed_updates)
        if hook.last_error_date is not None:
            info["last_error_date"] = hook.last_error_date
            info["last_error_message"] = hook.last_error_message
    return info


# -- messages -------------------------------------------------------------------------------


@api_method("sendMessage")
def send_message(state: BotApiState, p: Params) -> JsonDict:
    chat = state.chat_for_send(p.raw("chat_id"))
    text, entities = formatted_text(state, p, "text", "entities", p.get_str("parse_mode"),
                                    TEXT_LIMIT, empty="message text is empty",
                                    too_long="message is too long")
    markup = parse_reply_markup(p)
    body: JsonDict = {"text": text}
    if entities:
        body["entities"] = entities
    preview = p.get_json("link_preview_options", "link preview options")
    if isinstance(preview, dict) and preview:
        body["link_preview_options"] = preview
    body.update(_common_body(state, chat, p))
    return _send(state, chat, "sendMessage", body, markup, p)


@api_method("editMessageText")
def edit_message_text(state: BotApiState, p: Params) -> JsonDict:
    chat, message = _editable(state, p)
    text, entities = formatted_text(state, p, "text", "entities", p.get_str("parse_mode"),
                                    TEXT_LIMIT, empty="message text is empty",
                                    too_long="message is too long")
    markup = parse_reply_markup(p, inline_only=True)
    if "text" not in message.json:
        raise bad_request("there is no text in the message to edit")
    same_text = message.json.get("text") == text \
        and list(message.json.get("entities") or []) == entities
    if same_text and _markup_key(message.sent_markup) == _markup_key(markup):
        raise bad_request(NOT_MODIFIED)
    return _apply_edit(state, chat, message, p,
                       {"text": text, "entities": entities or None}, markup)


@api_method("editMessageCaption")
def edit_message_caption(state: BotApiState, p: Params) -> JsonDict:
    chat, message = _editable(state, p)
    if not any(k in message.json for k in ("photo", "document", "video", "audio", "animation")):
        raise bad_request("there is no caption in the message to edit")
    body: JsonDict = {}
    _caption(state, p, body)
    markup = parse_reply_markup(p, inline_only=True)
    same = message.json.get("caption") == body.get("caption") and \
        message.json.get("caption_entities") == body.get("caption_entities")
    if same and _markup_key(message.sent_markup) == _markup_key(markup):
        raise bad_request(NOT_MODIFIED)
    return _apply_edit(state, chat, message, p,
                       {"caption": body.get("caption"),
                        "caption_entities": body.get("caption_entities")}, markup)


@api_method("editMessageReplyMarkup")
def edit_message_reply_markup(state: BotApiState, p: Params) -> JsonDict:
    chat, message = _editable(state, p)
    markup = parse_reply_markup(p, inline_only=True)
    if _markup_key(message.sent_markup) == _markup_key(markup):
        raise bad_request(NOT_MODIFIED)
    return _apply_edit(state, chat, message, p, {}, markup)


def _apply_edit(state: BotApiState, chat: ChatState, message: StoredMessage, p: Params,
                fields: JsonDict, markup: JsonDict | None) -> JsonDict:
    message.history.append(state.version_of(message))
    for name, value in fields.items():
        if value is None:
            message.json.pop(name, None)
        else:
            message.json[name] = copy.deepcopy(value)
    if markup is None:
        message.json.pop("reply_markup", None)
    else:
        message.json["reply_markup"] = copy.deepcopy(markup)
    message.sent_markup = copy.deepcopy(markup)
    if "parse_mode" in p.values:
        message.parse_mode = p.get_str("parse_mode")
    message.json["edit_date"] = state.now()
    state.add_event(chat, "edited", message)
    return copy.deepcopy(message.json)


@api_method("deleteMessage")
def delete_message(state: BotApiState, p: Params) -> bool:
    chat, message_id = _target_chat(state, p, "delete")
    message = state.find_message(chat, message_id)
    if message is None:
        raise bad_request("message to delete not found")
    message.deleted = True
    state.add_event(chat, "deleted", message)
    return True


@api_method("deleteMessages")
def delete_messages(state: BotApiState, p: Params) -> bool:
    chat = state.chat_for_send(p.raw("chat_id"))
    ids = p.get_json("message_ids", "message_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise bad_request("message_ids must be a non-empty Array of at most 100 Integer")
    for message_id in ids:
        message = state.find_message(chat, int(message_id))
        if message is not None:
            message.deleted = True
            state.add_event(chat, "deleted", message)
    return True


@api_method("sendChatAction")
def send_chat_action(state: BotApiState, p: Params) -> bool:
    chat = state.chat_for_send(p.raw("chat_id"))
    action = p.text("action")
    if action not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    chat.actions.append((state.clock(), action))
    state.log(chat, f"bot is {action.replace('_', ' ')}")
    state.notify()
    return True


@api_method("answerCallbackQuery")
def answer_callback_query(state: BotApiState, p: Params) -> bool:
    query_id = p.text("callback_query_id")
    text = p.get_str("text")
    if text is not None and len(text) > CALLBACK_TEXT_LIMIT:
        raise bad_request("MESSAGE_TOO_LONG")
    query = state.live_callback_query(query_id)
    answer = CallbackAnswer(query_id, text, p.get_bool("show_alert"), p.get_str("url"),
                            p.get_int("cache_time", 0) or 0, state.clock())
    query.answer = answer
    chat = state.chats.get(query.chat_id)
    if chat is not None:
        shown = f" {text!r}" if text else " (no text)"
        state.log(chat, f"bot answered query {query_id}:{shown}"
                        f"{' as an alert' if answer.show_alert else ''}")
    state.notify()
    return True


# -- files ----------------------------------------------------------------------------------


@api_method("sendPhoto")
def send_photo(state: BotApiState, p: Params) -> JsonDict:
    chat = state.chat_for_send(p.raw("chat_id"))
    stored = _input_file(state, p, "photo", "photo")
    body: JsonDict = {"photo": photo_json(stored)}
    _caption(state, p, body)
    markup = parse_reply_markup(p)
    body.update(_common_body(state, chat, p))
    return _send(state, chat, "sendPhoto", body, markup, p, file_id=stored.file_id)


@api_method("sendDocument")
def send_document(state: BotApiState, p: Params) -> JsonDict:
    chat = state.chat_for_send(p.raw("chat_id"))
    stored = _input_file(state, p, "document", "document")
    body: JsonDict = {"document": document_json(stored)}
    _caption(state, p, body)
    markup = parse_reply_markup(p)
    body.update(_common_body(state, chat, p))
    return _send(state, chat, "sendDocument", body, markup, p, file_id=stored.file_id)


@api_method("getFile")
def get_file(state: BotApiState, p: Params) -> JsonDict:
    stored = state.files.get(p.text("file_id"))
    if stored is None:
        raise bad_request("wrong file_id or the file is temporarily unavailable")
    if stored.file_size is not None and stored.file_size > DOWNLOAD_LIMIT:
        raise bad_request("file is too big")
    data: JsonDict = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
    if stored.file_size is not None:
        data["file_size"] = stored.file_size
    if stored.file_path is not None:
        data["file_path"] = stored.file_path
    return data


# -- payments -------------------------------------------------------------------------------


@api_method("sendInvoice")
def send_invoice(state: BotApiState, p: Params) -> JsonDict:
    chat = state.chat_for_send(p.raw("chat_id"))
    invoice = _invoice(p)
    markup = parse_reply_markup(p, inline_only=True)
    body: JsonDict = {"invoice": {k: invoice[k] for k in ("title", "description",
                                                          "start_parameter", "currency",
                                                          "total_amount")}}
    body.update(_common_body(state, chat, p))
    return _send(state, chat, "sendInvoice", body, markup, p, private={"invoice": invoice})


def _invoice(p: Params) -> JsonDict:
    title, description = p.text("title"), p.text("description")
    payload, currency = p.text("payload"), p.text("currency")
    if not 1 <= len(title) <= 32:
        raise bad_request("INVOICE_TITLE_INVALID")
    if not 1 <= len(description) <= 255:
        raise bad_request("INVOICE_DESCRIPTION_INVALID")
    if not 1 <= len(payload.encode()) <= 128:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    if not CURRENCY.match(currency):
        raise bad_request("CURRENCY_INVALID")
    prices = p.get_json("prices", "prices")
    if not isinstance(prices, list) or not prices or not all(
            isinstance(x, dict) and isinstance(x.get("label"), str)
            and isinstance(x.get("amount"), int) and not isinstance(x.get("amount"), bool)
            for x in prices):
        raise bad_request("can't parse prices JSON object")
    total = sum(int(x["amount"]) for x in prices)
    provider_token = p.text("provider_token")
    max_tip = p.get_int("max_tip_amount", 0) or 0
    tips = p.get_json("suggested_tip_amounts", "suggested tip amounts") or []
    if currency == "XTR":
        if provider_token or len(prices) != 1 or max_tip or tips \
                or any(p.get_bool(f) for f in ("need_name", "need_phone_number", "need_email",
                                              "need_shipping_address", "is_flexible")):
            raise bad_request("STARS_INVOICE_INVALID")
    elif not provider_token:
        raise bad_request("PAYMENT_PROVIDER_INVALID")
    if total <= 0:
        raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    if not isinstance(tips, list) or len(tips) > 4 or tips != sorted(tips) \
            or any(int(t) <= 0 or int(t) > max_tip for t in tips):
        raise bad_request("SUGGESTED_TIP_AMOUNTS_INVALID")
    return {"title": title, "description": description, "payload": payload,
            "currency": currency, "prices": prices, "total_amount": total,
            "provider_token": provider_token, "start_parameter": p.text("start_parameter"),
            "max_tip_amount": max_tip}


@api_method("answerPreCheckoutQuery")
def answer_pre_checkout_query(state: BotApiState, p: Params) -> bool:
    query_id = p.text("pre_checkout_query_id")
    if not p.has("ok"):
        raise bad_request("ok is empty")
    ok = p.get_bool("ok")
    error_message = p.get_str("error_message")
    if not ok and not error_message:
        raise bad_request("error_message is empty")
    query = state.live_pre_checkout(query_id)
    query.answer = PreCheckoutAnswer(query_id, ok, None if ok else error_message, state.clock())
    chat = state.chats[query.chat_id]
    if not ok:
        state.log(chat, f"bot declined pre-checkout {query_id}: {error_message!r}")
        state.notify()
        return True
    stars = query.currency == "XTR"
    charge_id = ("stx" if stars else "tpc_") + secrets.token_urlsafe(24)
    provider_charge_id = f"{query.user_id}_{secrets.randbelow(10**9)}" if stars \
        else "ch_" + secrets.token_hex(12)
    paid = {"currency": query.currency, "total_amount": query.total_amount,
            "invoice_payload": query.invoice_payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": provider_charge_id}
    message, update_id = state.add_incoming(chat, {"successful_payment": paid})
    payment = SuccessfulPayment(chat.user.id, query.user_id, message.message_id, update_id,
                                query.currency, query.total_amount, query.invoice_payload,
                                charge_id, provider_charge_id, state.clock(), paid)
    state.payments[charge_id] = payment
    query.payment = payment
    state.log(chat, f"user #{message.message_id}: paid {query.total_amount} {query.currency} "
                    f"(charge {charge_id})")
    state.notify()
    return True


@api_method("refundStarPayment")
def refund_star_payment(state: BotApiState, p: Params) -> bool:
    user_id = p.required_int("user_id")
    charge_id = p.text("telegram_payment_charge_id")
    if not charge_id:
        raise bad_request("CHARGE_ID_EMPTY")
    payment = state.payments.get(charge_id)
    if payment is None or payment.user_id != user_id or payment.currency != "XTR":
        raise bad_request("CHARGE_NOT_FOUND")
    if any(r.telegram_payment_charge_id == charge_id for r in state.refunds):
        raise bad_request("CHARGE_ALREADY_REFUNDED")
    state.refunds.append(Refund(user_id, charge_id, payment.currency, payment.total_amount,
                                state.clock()))
    chat = state.chats.get(payment.chat_id)
    if chat is not None:
        refunded = {k: payment.json[k] for k in ("currency", "total_amount", "invoice_payload",
                                                 "telegram_payment_charge_id",
                                                 "provider_payment_charge_id")}
        message, _ = state.add_incoming(chat, {"refunded_payment": refunded})
        state.log(chat, f"user #{message.message_id}: refunded {payment.total_amount} XTR "
                        f"(charge {charge_id})")
    state.notify()
    return True


# -- commands and bot settings ------------------------------------------------------------


def _scope_key(p: Params) -> tuple[str, str]:
    scope = p.get_json("scope", "BotCommandScope") or {"type": "default"}
    if not isinstance(scope, dict) or scope.get("type") not in SCOPES:
        raise bad_request("can't parse BotCommandScope JSON object")
    language = p.text("language_code")
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise bad_request("invalid language code specified")
    return json.dumps(scope, sort_keys=True), language


@api_method("setMyCommands")
def set_my_commands(state: BotApiState, p: Params) -> bool:
    commands = p.get_json("commands", "commands")
    if commands is None:
        commands = []
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    if len(commands) > 100:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    cleaned = []
    for item in commands:
        if not isinstance(item, dict):
            raise bad_request("can't parse BotCommand JSON object")
        name = str(item.get("command", ""))
        description = str(item.get("description", "")).strip()
        if not COMMAND_NAME.match(name):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        cleaned.append({"command": name, "description": description})
    state.commands[_scope_key(p)] = cleaned
    state.notify()
    return True


@api_method("getMyCommands")
def get_my_commands(state: BotApiState, p: Params) -> list[JsonDict]:
    return copy.deepcopy(state.commands.get(_scope_key(p), []))


@api_method("deleteMyCommands")
def delete_my_commands(state: BotApiState, p: Params) -> bool:
    state.commands.pop(_scope_key(p), None)
    state.notify()
    return True


def _setting(kind: str, field: str, limit: int) -> tuple[MethodFn, MethodFn]:
    def setter(state: BotApiState, p: Params) -> bool:
        value = p.text(field)
        if len(value) > limit:
            raise bad_request(f"{field} is too long")
        state.bot_settings[(kind, p.text("language_code"))] = value
        return True

    def getter(state: BotApiState, p: Params) -> JsonDict:
        key = (kind, p.text("language_code"))
        default = state.bot_first_name if kind == "name" else ""
        return {field: state.bot_settings.get(key, state.bot_settings.get((kind, ""), default))}
    return setter, getter


for _kind, _field, _limit, _suffix in (("name", "name", 64, "Name"),
                                       ("description", "description", 512, "Description"),
                                       ("short_description", "short_description", 120,
                                        "ShortDescription")):
    _set, _get = _setting(_kind, _field, _limit)
    api_method(f"setMy{_suffix}")(_set)
    api_method(f"getMy{_suffix}")(_get)


@api_method("setChatMenuButton")
def set_chat_menu_button(state: BotApiState, p: Params) -> bool:
    button = p.get_json("menu_button", "menu button") or {"type": "default"}
    state.bot_settings[("menu_button", p.text("chat_id"))] = button
    return True


@api_method("getChatMenuButton")
def get_chat_menu_button(state: BotApiState, p: Params) -> JsonDict:
    key = ("menu_button", p.text("chat_id"))
    value = state.bot_settings.get(key, state.bot_settings.get(("menu_button", ""),
                                                               {"type": "commands"}))
    return dict(value)


@api_method("getChat")
def get_chat(state: BotApiState, p: Params) -> JsonDict:
    raw = p.raw("chat_id")
    try:
        chat = state.chats[int(raw)]
    except (KeyError, TypeError, ValueError):
        raise bad_request("chat not found") from None
    return {**chat.chat_json(), "accent_color_id": 0, "max_reaction_count": 11,
            "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False,
                                    "unique_gifts": False, "premium_subscription": False,
                                    "gifts_from_channels": False}}
