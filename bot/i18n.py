"""Translations: English, Khmer and Simplified Chinese gettext catalogs.

Catalogs are the .po files under bot/locales, read once at start-up by the composition
root (no compiled .mo files to keep in step). Source strings are English and are marked
with ``_()`` so `pybabel extract` finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from babel.core import Locale
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en", "km", "zh_Hans")
LANGUAGE_NAMES = {"en": "English", "km": "ភាសាខ្មែរ", "zh_Hans": "简体中文"}

Gettext = Callable[[str], str]


def negotiate(telegram_code: str | None) -> str:
    """Our language for a Telegram ``language_code`` (IETF tag such as km, zh-hans, en-US)."""
    if not telegram_code:
        return DEFAULT_LANGUAGE
    primary = telegram_code.strip().lower().replace("_", "-").split("-")[0]
    if primary == "km":
        return "km"
    if primary == "zh":
        return "zh_Hans"  # Traditional readers get Simplified: closer than English
    return DEFAULT_LANGUAGE


class Translations:
    def __init__(self, locales_dir: Path = LOCALES_DIR) -> None:
        self._messages: dict[str, dict[str, str]] = {DEFAULT_LANGUAGE: {}}
        for language in SUPPORTED_LANGUAGES:
            path = locales_dir / language / "LC_MESSAGES" / "messages.po"
            if language == DEFAULT_LANGUAGE or not path.exists():
                continue
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=language)
            self._messages[language] = {
                str(message.id): str(message.string)
                for message in catalog
                if message.id and isinstance(message.id, str) and message.string
                and not message.fuzzy
            }

    def languages(self) -> tuple[str, ...]:
        return SUPPORTED_LANGUAGES

    def gettext(self, language: str | None) -> Gettext:
        table = self._messages.get(language or DEFAULT_LANGUAGE, {})
        return lambda message: table.get(message, message)

    def locale(self, language: str | None) -> str:
        """The Babel locale for number, money and date formatting."""
        return str(Locale.parse(language or DEFAULT_LANGUAGE))

    def missing(self, language: str, message_ids: set[str]) -> set[str]:
        """Source strings with no translation in ``language`` (tests keep this empty)."""
        return message_ids - set(self._messages.get(language, {}))
