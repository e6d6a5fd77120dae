"""Method parameters as the Bot API accepts them: query string, JSON, urlencoded or multipart.

Form fields are strings; nested objects (reply_markup, entities, prices, commands, ...)
arrive as JSON inside them. ``Params`` reads a value in the type a method needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.e2e.botapi.errors import bad_request

JSON_FIELDS = frozenset({
    "reply_markup", "entities", "caption_entities", "prices", "commands", "allowed_updates",
    "scope", "link_preview_options", "reply_parameters", "suggested_tip_amounts", "media",
    "message_ids", "shipping_options", "result", "results",
})
INT_FIELDS = frozenset({
    "chat_id", "message_id", "user_id", "offset", "limit", "timeout", "cache_time",
    "max_tip_amount", "message_thread_id", "max_connections", "from_chat_id",
    "subscription_period", "width", "height", "duration",
})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part."""

    filename: str
    content_type: str
    body: bytes


def decode_value(name: str, value: Any) -> Any:
    """``value`` with a JSON string decoded where the field holds an object, ints as ints."""
    if isinstance(value, str):
        if name in JSON_FIELDS:
            try:
                return json.loads(value)
            except ValueError:
                return value
        if name in INT_FIELDS:
            try:
                return int(value)
            except ValueError:
                return value
    return value


class Params:
    """Typed access to one request's parameters; errors are Telegram's 400 answers."""

    def __init__(self, values: dict[str, Any],
                 files: dict[str, UploadedFile] | None = None) -> None:
        self.values = {k: v for k, v in values.items() if v is not None}
        self.files = dict(files or {})

    def normalized(self) -> dict[str, Any]:
        """The parameters with nested JSON decoded: what ``server.calls`` records."""
        result = {name: decode_value(name, value) for name, value in self.values.items()}
        for name, upload in self.files.items():
            result.setdefault(name, f"<file {upload.filename!r}, {len(upload.body)} bytes>")
        return result

    def has(self, name: str) -> bool:
        return name in self.values

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def get_str(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value)
        return str(value)

    def text(self, name: str, default: str = "") -> str:
        value = self.get_str(name)
        return default if value is None else value

    def required(self, name: str) -> str:
        value = self.get_str(name)
        if value is None or value == "":
            raise bad_request(f"{name} is empty")
        return value

    def get_int(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None

    def required_int(self, name: str) -> int:
        value = self.get_int(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        return value

    def get_float(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise bad_request(f"invalid {name} specified")

    def get_json(self, name: str, what: str | None = None) -> Any:
        """A JSON-typed field: given as an object, or as a JSON string in a form field."""
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {what or name} JSON object") from None
        return value
