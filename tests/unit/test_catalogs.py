"""The shipped Khmer and Chinese catalogs: every string the code marks is translated, and no
translation drops or renames a {placeholder} (``str.format`` would raise at runtime)."""

from __future__ import annotations

import re
import string

import pytest

from bot.i18n import Translations
from bot.locales.update_catalogs import (
    LANGUAGES,
    catalog_path,
    extract_messages,
    merge,
    source_ids,
)

SOURCE_IDS = sorted(source_ids())


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_code_marks_strings() -> None:
    assert len(SOURCE_IDS) > 100


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_source_string_is_translated(language: str) -> None:
    missing = Translations().missing(language, set(SOURCE_IDS))
    assert not missing, (f"{len(missing)} strings lack a {language} translation; run "
                         f"`python -m bot.locales.update_catalogs` and fill them in: "
                         f"{sorted(missing)[:5]}")


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_their_placeholders(language: str) -> None:
    gettext = Translations().gettext(language)
    wrong = [msgid for msgid in SOURCE_IDS
             if placeholders(gettext(msgid)) != placeholders(msgid)]
    assert not wrong, wrong


@pytest.mark.parametrize("language", LANGUAGES)
def test_translations_keep_commands(language: str) -> None:
    gettext = Translations().gettext(language)
    command = re.compile(r"(?<![\w/])/[a-z_]+\b")  # /cancel, not and/or or Asia/Phnom_Penh
    wrong = [msgid for msgid in SOURCE_IDS
             if set(command.findall(msgid)) - set(command.findall(gettext(msgid)))]
    assert not wrong, wrong


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalog_file_has_every_string_of_the_code_and_no_other(language: str) -> None:
    """Source line numbers may drift (they are only comments); the strings may not."""
    _catalog, added, removed = merge(language, extract_messages(), catalog_path(language))
    assert not added, f"run `python -m bot.locales.update_catalogs`: new strings {added[:5]}"
    assert not removed, f"run `python -m bot.locales.update_catalogs`: gone {removed[:5]}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_plural_translations_keep_their_placeholders(language: str) -> None:
    """Each plural form names only the placeholders of the English forms, and every one
    both English forms name (the count among them)."""
    from babel.messages.pofile import read_po

    with catalog_path(language).open("rb") as po:
        catalog = read_po(po, locale=language)
    plurals = [message for message in catalog if message.pluralizable]
    assert plurals  # the code has some (ngettext): this test reads them
    wrong = []
    for message in plurals:
        singular, plural = (placeholders(form) for form in message.id)
        for form in message.string:
            if not singular & plural <= placeholders(form) <= singular | plural:
                wrong.append((message.id[0], form))
    assert not wrong, wrong
