"""Message text formatting as the Bot API does it: parse_mode parsing, entities, trimming.

Offsets and lengths of entities are in UTF-16 code units, as Telegram counts them.
Markup errors are answered like Telegram's ("Bad Request: can't parse entities: ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.botapi.errors import ApiError, bad_request

Entity = dict[str, Any]

_TRIMMED = " \t\n\r"
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_TDLIB_NAMES = {"bold": "Bold", "italic": "Italic", "underline": "Underline",
                "strikethrough": "Strikethrough", "spoiler": "Spoiler", "text_link": "TextUrl",
                "custom_emoji": "CustomEmoji", "code": "Code", "pre": "Pre"}
_HTML_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic",
              "u": "underline", "ins": "underline", "s": "strikethrough",
              "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
              "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre",
              "blockquote": "blockquote", "tg-emoji": "custom_emoji"}
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_EMOJI_URL = re.compile(r"^tg://emoji\?id=(\d+)$")


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def entity_text(text: str, entity: Entity) -> str:
    """The part of ``text`` an entity covers."""
    units = text.encode("utf-16-le")
    start, length = int(entity["offset"]) * 2, int(entity["length"]) * 2
    return units[start:start + length].decode("utf-16-le")


def parse_formatted(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    """Text and entities after parsing ``text`` with ``parse_mode`` (None: plain text)."""
    mode = (parse_mode or "").strip().lower()
    if not mode:
        return text, []
    try:
        if mode == "html":
            return _HtmlParser(text).parse()
        if mode == "markdownv2":
            return _MarkdownV2Parser(text).parse()
        if mode == "markdown":
            return _MarkdownParser(text).parse()
    except _MarkupError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    raise bad_request("unsupported parse_mode")


def trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Telegram trims surrounding whitespace; entities move and shrink with the text."""
    stripped_left = text.lstrip(_TRIMMED)
    shift = utf16_len(text) - utf16_len(stripped_left)
    result = stripped_left.rstrip(_TRIMMED)
    size = utf16_len(result)
    fixed: list[Entity] = []
    for entity in entities:
        start = max(0, int(entity["offset"]) - shift)
        end = min(size, int(entity["offset"]) + int(entity["length"]) - shift)
        if end > start:
            fixed.append({**entity, "offset": start, "length": end - start})
    return result, sort_entities(fixed)


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (int(e["offset"]), -int(e["length"])))


class _MarkupError(Exception):
    pass


@dataclass
class _Open:
    kind: str
    tag: str
    start: int
    byte_offset: int
    extra: dict[str, Any] = field(default_factory=dict)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[Entity] = []

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.pos += utf16_len(chunk)

    def entity(self, kind: str, start: int, extra: dict[str, Any] | None = None) -> None:
        if self.pos > start:
            self.entities.append({"type": kind, "offset": start, "length": self.pos - start,
                                  **(extra or {})})

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode())

    def result(self) -> tuple[str, list[Entity]]:
        return "".join(self.parts), sort_entities(self.entities)


class _HtmlParser(_Builder):
    def parse(self) -> tuple[str, list[Entity]]:
        src, i, stack = self.source, 0, list[_Open]()
        while i < len(src):
            char = src[i]
            if char == "&":
                i = self._entity_ref(i)
            elif char != "<":
                j = i
                while j < len(src) and src[j] not in "<&":
                    j += 1
                self.add(src[i:j])
                i = j
            elif src.startswith("</", i):
                i = self._end_tag(i, stack)
            else:
                i = self._start_tag(i, stack)
        if stack:
            raise _MarkupError(
                f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
        return self.result()

    def _entity_ref(self, i: int) -> int:
        match = re.match(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]+);", self.source[i:])
        if match:
            name = match.group(1)
            decoded: str | None = _HTML_NAMED.get(name)
            if name.startswith("#"):
                code = int(name[2:], 16) if name[1:2] in ("x", "X") else int(name[1:])
                decoded = chr(code) if 0 < code <= 0x10FFFF else None
            if decoded is not None:
                self.add(decoded)
                return i + match.end()
        self.add("&")
        return i + 1

    def _tag_name(self, i: int) -> tuple[str, int]:
        j = i
        while j < len(self.source) and (self.source[j].isascii()
                                        and (self.source[j].isalnum() or self.source[j] == "-")):
            j += 1
        return self.source[i:j].lower(), j

    def _end_tag(self, i: int, stack: list[_Open]) -> int:
        offset = self.byte_offset(i)
        name, j = self._tag_name(i + 2)
        while j < len(self.source) and self.source[j] in " \t\r\n":
            j += 1
        if j >= len(self.source) or self.source[j] != ">":
            raise _MarkupError(f"Unclosed end tag at byte offset {offset}")
        if not stack:
            raise _MarkupError(f"Unexpected end tag at byte offset {offset}")
        top = stack.pop()
        if name != top.tag:
            raise _MarkupError(f'Unmatched end tag at byte offset {offset}, expected '
                               f'"</{top.tag}>", found "</{name}>"')
        if top.kind == "code" and stack and stack[-1].kind == "pre":
            language = top.extra.get("class", "")
            if language.startswith("language-"):
                stack[-1].extra["language"] = language.removeprefix("language-")
        elif top.kind == "text_link":
            if top.extra.get("url"):
                self.entity("text_link", top.start, {"url": top.extra["url"]})
        elif top.kind == "pre":
            extra = {"language": top.extra["language"]} if "language" in top.extra else {}
            self.entity("pre", top.start, extra)
        elif top.kind == "custom_emoji":
            self.entity("custom_emoji", top.start,
                        {"custom_emoji_id": top.extra.get("emoji-id", "")})
        else:
            self.entity(top.kind, top.start)
        return j + 1

    def _start_tag(self, i: int, stack: list[_Open]) -> int:
        src, offset = self.source, self.byte_offset(i)
        name, j = self._tag_name(i + 1)
        if name not in _HTML_TAGS:
            raise _MarkupError(f'Unsupported start tag "{name}" at byte offset {offset}')
        attributes: dict[str, str] = {}
        while True:
            while j < len(src) and src[j] in " \t\r\n":
                j += 1
            if j >= len(src):
                raise _MarkupError(f"Unclosed start tag at byte offset {offset}")
            if src[j] == ">":
                break
            attr, j = self._tag_name(j)
            if not attr:
                raise _MarkupError(f"Empty attribute name in the tag \"{name}\" at byte "
                                   f"offset {offset}")
            value = ""
            if j < len(src) and src[j] == "=":
                j += 1
                if j < len(src) and src[j] in "'\"":
                    end = src.find(src[j], j + 1)
                    if end < 0:
                        raise _MarkupError(f"Unclosed start tag at byte offset {offset}")
                    value, j = _unescape_html(src[j + 1:end]), end + 1
                else:
                    end = j
                    while end < len(src) and src[end] not in " \t\r\n>":
                        end += 1
                    value, j = _unescape_html(src[j:end]), end
            attributes[attr] = value
        kind = _HTML_TAGS[name]
        extra: dict[str, Any] = {}
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise _MarkupError('Tag "span" must have class "tg-spoiler"')
        if kind == "text_link":
            extra["url"] = attributes.get("href", "")
        elif kind == "blockquote" and "expandable" in attributes:
            kind = "expandable_blockquote"
        elif kind == "code" and "class" in attributes:
            extra["class"] = attributes["class"]
        elif kind == "custom_emoji":
            extra["emoji-id"] = attributes.get("emoji-id", "")
        stack.append(_Open(kind, name, self.pos, offset, extra))
        return j + 1


def _unescape_html(value: str) -> str:
    parser = _HtmlParser(value)
    i = 0
    while i < len(value):
        if value[i] == "&":
            i = parser._entity_ref(i)
        else:
            parser.add(value[i])
            i += 1
    return "".join(parser.parts)


class _MarkdownV2Parser(_Builder):
    def parse(self) -> tuple[str, list[Entity]]:
        src, i, stack = self.source, 0, list[_Open]()
        quote: _Open | None = None
        quote_line_end = 0
        at_line_start = True
        while i < len(src):
            if at_line_start:
                at_line_start = False
                if src.startswith("**>", i):  # an empty bold entity, then a new quote
                    if quote is not None:
                        self._close_quote(quote, quote_line_end)
                    quote = _Open("expandable_blockquote", "", self.pos, self.byte_offset(i))
                    i += 3
                    continue
                if src[i] == ">":
                    if quote is None:
                        quote = _Open("blockquote", "", self.pos, self.byte_offset(i))
                    i += 1
                    continue
                if quote is not None:
                    self._close_quote(quote, quote_line_end)
                    quote = None
            char = src[i]
            if char == "\\":
                if i + 1 < len(src) and 0 < ord(src[i + 1]) <= 126:
                    self.add(src[i + 1])
                    i += 2
                else:
                    self.add("\\")
                    i += 1
                continue
            if char == "\n":
                quote_line_end = self.pos
                self.add("\n")
                at_line_start = True
                i += 1
                continue
            if char not in _MDV2_RESERVED:
                j = i
                while j < len(src) and src[j] not in _MDV2_RESERVED and src[j] not in "\\\n":
                    j += 1
                self.add(src[i:j])
                i = j
                continue
            if (quote is not None and quote.kind == "expandable_blockquote"
                    and src.startswith("||", i) and src[i + 2:i + 3] in ("", "\n")
                    and not (stack and stack[-1].kind == "spoiler")):
                quote_line_end = self.pos
                self._close_quote(quote, quote_line_end)
                quote = None
                i += 2
                continue
            i = self._reserved(i, stack)
        if stack:
            top = stack[-1]
            raise _MarkupError(f"Can't find end of {_TDLIB_NAMES[top.kind]} entity at byte "
                               f"offset {top.byte_offset}")
        if quote is not None:
            self._close_quote(quote, self.pos)
        return self.result()

    def _close_quote(self, quote: _Open, end: int) -> None:
        if end > quote.start:
            self.entities.append({"type": quote.kind, "offset": quote.start,
                                  "length": end - quote.start})

    def _reserved(self, i: int, stack: list[_Open]) -> int:
        src, char = self.source, self.source[i]
        after = src[i + 1:i + 2]
        top = stack[-1] if stack else None
        if top is not None:
            width = 0
            # "__" is always (greedily) underline, so it never ends an italic entity.
            if (top.kind == "bold" and char == "*") \
                    or (top.kind == "italic" and char == "_" and after != "_") \
                    or (top.kind == "strikethrough" and char == "~"):
                width = 1
            elif (top.kind == "underline" and src.startswith("__", i)) \
                    or (top.kind == "spoiler" and src.startswith("||", i)):
                width = 2
            elif top.kind in ("text_link", "custom_emoji") and char == "]":
                return self._close_link(i, stack.pop())
            if width:
                stack.pop()
                self.entity(top.kind, top.start)
                return i + width
        offset = self.byte_offset(i)
        if char == "_":
            kind, width = ("underline", 2) if after == "_" else ("italic", 1)
        elif char == "*":
            kind, width = "bold", 1
        elif char == "~":
            kind, width = "strikethrough", 1
        elif char == "|" and after == "|":
            kind, width = "spoiler", 2
        elif char == "[":
            kind, width = "text_link", 1
        elif char == "!" and after == "[":
            kind, width = "custom_emoji", 2
        elif char == "`":
            return self._code(i)
        else:
            raise _MarkupError(f"Character '{char}' is reserved and must be escaped with the "
                               "preceding '\\'")
        stack.append(_Open(kind, char, self.pos, offset))
        return i + width

    def _close_link(self, i: int, link: _Open) -> int:
        src = self.source
        if not src.startswith("(", i + 1):
            if link.kind == "custom_emoji":
                raise _MarkupError("Custom emoji entity must contain a tg://emoji URL")
            return i + 1
        j, url = i + 2, []
        while j < len(src) and src[j] != ")":
            if src[j] == "\\" and j + 1 < len(src) and 0 < ord(src[j + 1]) <= 126:
                j += 1
            url.append(src[j])
            j += 1
        if j >= len(src):
            raise _MarkupError(f"Can't find end of a URL at byte offset {self.byte_offset(i + 2)}")
        target = "".join(url)
        if link.kind == "custom_emoji":
            match = _EMOJI_URL.match(target)
            if not match:
                raise _MarkupError("Custom emoji URL must have an emoji identifier")
            self.entity("custom_emoji", link.start, {"custom_emoji_id": match.group(1)})
        elif target:
            self.entity("text_link", link.start, {"url": target})
        return j + 1

    def _code(self, i: int) -> int:
        src, offset = self.source, self.byte_offset(i)
        pre = src.startswith("```", i)
        j = i + 3 if pre else i + 1
        extra: dict[str, Any] = {}
        if pre:
            newline, fence = src.find("\n", j), src.find("```", j)
            if newline >= 0 and (fence < 0 or newline < fence):
                language = src[j:newline].strip()
                if language and " " not in language:
                    extra["language"] = language
                j = newline + 1
        start, closing = self.pos, "```" if pre else "`"
        while j < len(src) and not src.startswith(closing, j):
            if src[j] == "\\" and j + 1 < len(src) and 0 < ord(src[j + 1]) <= 126:
                j += 1
            self.add(src[j])
            j += 1
        if j >= len(src):
            name = "Pre" if pre else "Code"
            raise _MarkupError(f"Can't find end of {name} entity at byte offset {offset}")
        self.entity("pre" if pre else "code", start, extra)
        return j + len(closing)


class _MarkdownParser(_Builder):
    """The legacy "Markdown" mode: *bold* _italic_ `code` ```pre``` [text](url), no nesting."""

    def parse(self) -> tuple[str, list[Entity]]:
        src, i = self.source, 0
        while i < len(src):
            char = src[i]
            if char == "\\" and src[i + 1:i + 2] in ("_", "*", "`", "["):
                self.add(src[i + 1])
                i += 2
                continue
            if char not in "_*`[":
                self.add(char)
                i += 1
                continue
            offset, start = self.byte_offset(i), self.pos
            error = _MarkupError(f"Can't find end of the entity starting at byte offset {offset}")
            if char == "[":
                close = src.find("]", i + 1)
                if close < 0 or not src.startswith("(", close + 1):
                    raise error
                end = src.find(")", close + 2)
                if end < 0:
                    raise error
                self.add(src[i + 1:close])
                self.entity("text_link", start, {"url": src[close + 2:end]})
                i = end + 1
            elif src.startswith("```", i):
                end = src.find("```", i + 3)
                if end < 0:
                    raise error
                body, extra = src[i + 3:end], {}
                first, newline, rest = body.partition("\n")
                if newline and " " not in first.strip():
                    body = rest
                    if first.strip():
                        extra = {"language": first.strip()}
                self.add(body)
                self.entity("pre", start, extra)
                i = end + 3
            else:
                end = src.find(char, i + 1)
                if end < 0:
                    raise error
                self.add(src[i + 1:end])
                self.entity({"*": "bold", "_": "italic", "`": "code"}[char], start)
                i = end + 1
        return self.result()


__all__ = ["ApiError", "Entity", "entity_text", "parse_formatted", "sort_entities", "trim",
           "utf16_len"]
