"""How moments and waits read in each language: dates in the locale's own order (Chinese
"2026年12月6日 14:05", not "6 12月 2026"), and a short wait as a wait ("in 40 seconds")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.i18n import Translations
from handlers.common import Ui

NOW = datetime(2026, 12, 6, 7, 5, tzinfo=UTC)  # 14:05 in Phnom Penh


def ui(language: str) -> Ui:
    return Ui.of(Translations(), language, ZoneInfo("Asia/Phnom_Penh"), NOW)


@pytest.mark.parametrize(("language", "shown"), [
    ("en", "6 Dec 2026, 14:05"),
    ("km", "6 ធ្នូ 2026, 14:05"),
    ("zh_Hans", "2026年12月6日 14:05"),
])
def test_a_moment_reads_in_the_locales_own_order(language: str, shown: str) -> None:
    assert ui(language).when(NOW) == shown


@pytest.mark.parametrize(("language", "after", "shown"), [
    ("en", timedelta(seconds=40), "40 seconds"),
    ("en", timedelta(seconds=100), "2 minutes"),
    ("en", timedelta(0), "1 second"),
    ("zh_Hans", timedelta(seconds=40), "40秒钟"),
])
def test_a_wait_within_the_hour_reads_as_a_wait(language: str, after: timedelta,
                                               shown: str) -> None:
    assert ui(language).soon(NOW + after) == shown


def test_a_wait_of_an_hour_or_more_and_a_past_moment_are_dates_instead() -> None:
    assert ui("en").soon(NOW + timedelta(hours=1)) is None
    assert ui("en").soon(NOW - timedelta(seconds=5)) is None


@pytest.mark.parametrize(("language", "one", "three"), [
    ("en", "That code is not right. 1 try left.", "That code is not right. 3 tries left."),
    ("km", "លេខកូដនោះមិនត្រឹមត្រូវទេ។ នៅសល់ 1 ដងទៀត។",
     "លេខកូដនោះមិនត្រឹមត្រូវទេ។ នៅសល់ 3 ដងទៀត។"),
])
def test_counted_messages_take_the_languages_plural_form(language: str, one: str,
                                                         three: str) -> None:
    ngettext = ui(language).ngettext
    for count, shown in ((1, one), (3, three)):
        assert ngettext("That code is not right. {tries} try left.",
                        "That code is not right. {tries} tries left.",
                        count).format(tries=count) == shown
