"""Files: identifiers in Telegram's style and image sizes read from the bytes' headers."""

from __future__ import annotations

import base64
import mimetypes
import secrets
import struct

_PREFIXES = {"photo": "AgACAgIAAxkBAA", "document": "BQACAgIAAxkBAA", "audio": "CQACAgIAAxkBAA",
             "video": "BAACAgIAAxkBAA", "voice": "AwACAgIAAxkBAA", "sticker": "CAACAgIAAxkBAA"}


def new_file_id(kind: str) -> str:
    token = base64.urlsafe_b64encode(secrets.token_bytes(42)).decode().rstrip("=")
    return _PREFIXES.get(kind, "BQACAgIAAxkBAA") + token


def new_file_unique_id() -> str:
    return "AQAD" + base64.urlsafe_b64encode(secrets.token_bytes(9)).decode().rstrip("=")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, JPEG or WebP image; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        if data[12:16] == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
        if data[12:16] == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return int(width), int(height)
        i += 2 + length
    return None


def image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:3] == b"GIF":
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def guess_mime(file_name: str | None, content_type: str | None) -> str | None:
    if content_type and content_type not in ("application/octet-stream", ""):
        return content_type.split(";")[0].strip()
    if file_name:
        guessed, _ = mimetypes.guess_type(file_name)
        if guessed:
            return guessed
    return content_type or None


def extension(kind: str, file_name: str | None, mime_type: str | None) -> str:
    if file_name and "." in file_name:
        return file_name.rsplit(".", 1)[1][:8]
    if mime_type:
        guessed = mimetypes.guess_extension(mime_type)
        if guessed:
            return guessed.lstrip(".")
    return "jpg" if kind == "photo" else "bin"
