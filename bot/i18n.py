"""Translations: English, Khmer and Simplified Chinese gettext catalogs.

Catalogs are the .po files under bot/locales, read once at start-up by the composition
root (no compiled .mo files to keep in step). Source strings are English and are marked
with ``_()`` so `pybabel extract` finds them.
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Callable
from pathlib import Path

from babel.core import Locale
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en", "km", "zh_Hans")
LANGUAGE_NAMES = {"en": "English", "km": "ភាសាខ្មែរ", "zh_Hans": "简体中文"}

Gettext = Callable[[str], str]
# (singular, plural, n) -> the form for n: the catalog's plural rule picks it.
NGettext = Callable[[str, str, int], str]


def english_ngettext(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


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
        # Plural messages by their singular: every form the language has, in rule order.
        self._plurals: dict[str, dict[str, tuple[str, ...]]] = {DEFAULT_LANGUAGE: {}}
        self._plural_rules: dict[str, Callable[[int], int]] = {}
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
            self._plurals[language] = {
                str(message.id[0]): tuple(str(form) for form in message.string)
                for message in catalog
                if isinstance(message.id, tuple | list) and not message.fuzzy
                and isinstance(message.string, tuple | list) and message.string
                and all(message.string)
            }
            self._plural_rules[language] = _gettext.c2py(catalog.plural_expr)

    def languages(self) -> tuple[str, ...]:
        return SUPPORTED_LANGUAGES

    def gettext(self, language: str | None) -> Gettext:
        table = self._messages.get(language or DEFAULT_LANGUAGE, {})
        return lambda message: table.get(message, message)

    def ngettext(self, language: str | None) -> NGettext:
        """The form of a counted message for its count, by the language's plural rule
        (Khmer and Chinese have one form; English two)."""
        table = self._plurals.get(language or DEFAULT_LANGUAGE, {})
        rule = self._plural_rules.get(language or DEFAULT_LANGUAGE)

        def pick(singular: str, plural: str, count: int) -> str:
            forms = table.get(singular)
            if forms is None or rule is None:
                return english_ngettext(singular, plural, count)
            return forms[min(rule(count), len(forms) - 1)]

        return pick

    def locale(self, language: str | None) -> str:
        """The Babel locale for number, money and date formatting."""
        return str(Locale.parse(language or DEFAULT_LANGUAGE))

    def missing(self, language: str, message_ids: set[str]) -> set[str]:
        """Source strings with no translation in ``language`` (tests keep this empty)."""
        return (message_ids - set(self._messages.get(language, {}))
                - set(self._plurals.get(language, {})))
