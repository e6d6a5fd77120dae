"""Language negotiation from Telegram's language_code, and the gettext catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po

from bot.i18n import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES, Translations, negotiate

HELLO_KM = "សួស្តី"


# --- negotiate ---------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "language"), [
    ("km", "km"), ("km-KH", "km"), ("KM", "km"), ("km_KH", "km"),
    ("zh-hans", "zh_Hans"), ("zh-Hans", "zh_Hans"), ("zh-CN", "zh_Hans"), ("zh", "zh_Hans"),
    ("zh-TW", "zh_Hans"), ("zh-hant", "zh_Hans"), ("zh_Hans", "zh_Hans"),
    ("en", "en"), ("en-US", "en"), ("en-GB", "en"), ("EN", "en"),
    (None, "en"), ("", "en"), ("fr", "en"), ("th", "en"), ("vi-VN", "en"), ("   ", "en"),
])
def test_negotiate(code: str | None, language: str) -> None:
    assert negotiate(code) == language


def test_negotiated_languages_are_supported() -> None:
    assert DEFAULT_LANGUAGE == "en"
    for code in ["km", "zh", "en", "de", None]:
        assert negotiate(code) in SUPPORTED_LANGUAGES


@pytest.mark.parametrize("code", ["kmr", "zha"])
def test_other_languages_sharing_a_prefix_get_english(code: str) -> None:
    assert negotiate(code) == "en"


# --- Translations ------------------------------------------------------------------------

def write_catalog(root: Path, language: str, catalog: Catalog) -> None:
    folder = root / language / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "messages.po").open("wb") as handle:
        write_po(handle, catalog)


@pytest.fixture
def translations(tmp_path: Path) -> Translations:
    catalog = Catalog(locale="km")
    catalog.add("Hello", HELLO_KM)
    catalog.add("Maybe", "ប្រហែល", flags=["fuzzy"])
    catalog.add("Untranslated", "")
    catalog.add("Balance: {amount}", "សមតុល្យ៖ {amount}")
    write_catalog(tmp_path, "km", catalog)
    return Translations(tmp_path)


def test_translation_is_used(translations: Translations) -> None:
    assert translations.gettext("km")("Hello") == HELLO_KM


def test_placeholders_survive(translations: Translations) -> None:
    assert translations.gettext("km")("Balance: {amount}").format(amount="$5.00") == \
        "សមតុល្យ៖ $5.00"


@pytest.mark.parametrize("message", ["Bye", "Untranslated", ""])
def test_untranslated_strings_fall_back_to_english(translations: Translations,
                                                   message: str) -> None:
    assert translations.gettext("km")(message) == message


def test_fuzzy_entries_are_ignored(translations: Translations) -> None:
    assert translations.gettext("km")("Maybe") == "Maybe"
    assert translations.missing("km", {"Maybe"}) == {"Maybe"}


def test_missing(translations: Translations) -> None:
    assert translations.missing("km", {"Hello", "Bye"}) == {"Bye"}
    assert translations.missing("km", {"Hello"}) == set()
    assert translations.missing("km", set()) == set()


@pytest.mark.parametrize("language", ["en", None, "zh_Hans", "fr"])
def test_english_missing_catalogs_and_unknown_languages_are_the_source_text(
        translations: Translations, language: str | None) -> None:
    assert translations.gettext(language)("Hello") == "Hello"


def test_a_language_without_a_catalog_misses_everything(translations: Translations) -> None:
    assert translations.missing("zh_Hans", {"Hello", "Bye"}) == {"Hello", "Bye"}


def test_an_empty_locales_folder_gives_english_everywhere(tmp_path: Path) -> None:
    empty = Translations(tmp_path)
    assert empty.gettext("km")("Hello") == "Hello"
    assert empty.languages() == SUPPORTED_LANGUAGES


def test_babel_locales(translations: Translations) -> None:
    assert translations.locale("km") == "km"
    assert translations.locale("zh_Hans") == "zh_Hans"
    assert translations.locale(None) == "en"
