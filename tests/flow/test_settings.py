"""/settings and /language through the real Application: language, time zone, quiet hours
and low-balance warnings, and input that must change nothing."""

from __future__ import annotations

import json

import pytest

from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard, last_answer, line_row, user_row
from tests.flow.recording import callback_update, text_update

CELLCARD = "+85512345678"  # 012 345 678
SMART = "+85510345678"  # 010 345 678
NOT_A_ZONE = "not a time zone name"
STALE = "no longer active"


async def start(harness: BotHarness, user_id: int = 555) -> None:
    await harness.send(text_update("/start", user_id=user_id))


# --- language --------------------------------------------------------------------------------


async def test_language_shows_three_buttons(harness: BotHarness) -> None:
    await harness.send(text_update("/language"))

    reply = harness.api.sent()[-1]
    assert "Choose your language" in reply["text"]
    assert keyboard(reply) == [("English", "v1:lg:en"), ("ភាសាខ្មែរ", "v1:lg:km"),
                               ("简体中文", "v1:lg:zh")]


@pytest.mark.parametrize(("token", "language"), [("km", "km"), ("zh", "zh_Hans")])
async def test_pressing_a_language_switches_it(harness: BotHarness, token: str,
                                               language: str) -> None:
    await start(harness)
    assert (await user_row(harness)).language == "en"

    await harness.send(callback_update(f"v1:lg:{token}"))

    assert (await user_row(harness)).language == language
    assert len(harness.api.texts()) == 2  # the greeting, then the confirmation
    # later replies follow the stored choice, whatever Telegram says the app language is
    await harness.send(text_update("/help", language="en"))
    assert len(harness.api.texts()) == 3
    assert "/start" in harness.api.texts()[-1]
    assert (await user_row(harness)).language == language


async def test_back_to_english(harness: BotHarness) -> None:
    await harness.send(text_update("/start", language="km"))
    await harness.send(callback_update("v1:lg:en", language="km"))

    assert (await user_row(harness)).language == "en"
    assert "English" in harness.api.texts()[-1]


@pytest.mark.parametrize("data", ["v1:lg:xx", "v1:lg:zh_Hans", "v1:lg", "v1:lg:en:en"])
async def test_an_unknown_language_button_is_answered_as_stale(
        harness: BotHarness, data: str) -> None:
    await start(harness)

    await harness.send(callback_update(data))

    assert STALE in last_answer(harness)["text"]
    assert (await user_row(harness)).language == "en"
    assert len(harness.api.texts()) == 1  # only the greeting


# --- the menu --------------------------------------------------------------------------------


async def test_settings_shows_the_menu(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(text_update("/settings"))

    reply = harness.api.sent()[-1]
    assert "Your settings:" in reply["text"]
    assert "Language: English" in reply["text"]
    assert "Time zone: Asia/Phnom_Penh" in reply["text"]
    assert "Quiet hours: off" in reply["text"]
    assert "Promotions: off" in reply["text"]
    assert [data for _, data in keyboard(reply)] == ["v1:st:lang", "v1:st:tz", "v1:st:quiet",
                                                     "v1:st:warn", "v1:st:promo_on"]


async def test_the_menus_language_item_shows_the_language_buttons(harness: BotHarness) -> None:
    await harness.send(callback_update("v1:st:lang"))

    assert [data for _, data in keyboard(harness.api.sent()[-1])] == [
        "v1:lg:en", "v1:lg:km", "v1:lg:zh"]


# --- time zone -------------------------------------------------------------------------------


async def test_time_zone_by_button(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))
    buttons = keyboard(harness.api.sent()[-1])
    assert ("Asia/Bangkok", "v1:tz:1") in buttons

    await harness.send(callback_update("v1:tz:1"))

    assert "Time zone set: Asia/Bangkok" in harness.api.texts()[-1]
    assert (await user_row(harness)).timezone == "Asia/Bangkok"
    await harness.send(text_update("/settings"))
    assert "Time zone: Asia/Bangkok" in harness.api.texts()[-1]


async def test_time_zone_by_typing(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))

    await harness.send(text_update("  Asia/Bangkok "))

    assert "Time zone set: Asia/Bangkok" in harness.api.texts()[-1]
    assert (await user_row(harness)).timezone == "Asia/Bangkok"


@pytest.mark.parametrize("typed", ["Mars/Olympus", "Z" * 4000, "Bangkok", "../../etc/passwd",
                                   "Asia/Bangkok/../../x", "🙂/🙂"])
async def test_a_bad_zone_is_refused_and_the_flow_stays(harness: BotHarness, typed: str) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))

    await harness.send(text_update(typed))

    assert NOT_A_ZONE in harness.api.texts()[-1]
    assert (await user_row(harness)).timezone is None
    await harness.send(text_update("Asia/Tokyo"))
    assert (await user_row(harness)).timezone == "Asia/Tokyo"


@pytest.mark.parametrize("data", ["v1:tz:99", "v1:tz:abc", "v1:tz:" + "9" * 24])
async def test_a_forged_zone_button_stores_nothing(harness: BotHarness, data: str) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))

    await harness.send(callback_update(data))

    assert STALE in harness.api.texts()[-1]
    assert (await user_row(harness)).timezone is None
    assert "went wrong" not in " ".join(harness.api.texts())


@pytest.mark.parametrize("data", ["v1:tz", "v1:tz:1:2", "v1:tz:"])
async def test_a_zone_button_that_does_not_decode_stores_nothing(harness: BotHarness,
                                                                 data: str) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))
    shown = len(harness.api.texts())

    await harness.send(callback_update(data))

    assert STALE in last_answer(harness)["text"]
    assert len(harness.api.texts()) == shown
    assert (await user_row(harness)).timezone is None


async def test_cancel_while_choosing_a_zone_changes_nothing(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:tz"))
    await harness.send(text_update("/cancel"))
    await harness.send(text_update("Asia/Bangkok"))

    assert (await user_row(harness)).timezone is None


# --- quiet hours -----------------------------------------------------------------------------


async def test_quiet_hours_are_stored_as_minutes_and_off_clears_them(
        harness: BotHarness) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:quiet"))
    await harness.send(text_update("22-7"))

    assert "Quiet hours: 22:00–07:00" in harness.api.texts()[-1]
    user = await user_row(harness)
    assert (user.quiet_start_minute, user.quiet_end_minute) == (1320, 420)
    await harness.send(text_update("/settings"))
    assert "Quiet hours: 22:00–07:00" in harness.api.texts()[-1]

    await harness.send(callback_update("v1:st:quiet"))
    await harness.send(text_update("off"))

    assert "Quiet hours are off" in harness.api.texts()[-1]
    user = await user_row(harness)
    assert (user.quiet_start_minute, user.quiet_end_minute) == (None, None)


@pytest.mark.parametrize("typed", ["25-99", "22-22", "10pm to 7am", "x" * 4000, "-"])
async def test_bad_quiet_hours_are_refused_and_the_flow_stays(
        harness: BotHarness, typed: str) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:quiet"))
    await harness.send(text_update("23-6"))
    await harness.send(callback_update("v1:st:quiet"))

    await harness.send(text_update(typed))

    assert "like 22-7" in harness.api.texts()[-1]
    user = await user_row(harness)
    assert (user.quiet_start_minute, user.quiet_end_minute) == (1380, 360)  # unchanged
    await harness.send(text_update("22:30-06:00"))
    user = await user_row(harness)
    assert (user.quiet_start_minute, user.quiet_end_minute) == (1350, 360)


# --- low-balance warning ---------------------------------------------------------------------


async def choose_warning_line(harness: BotHarness, line_id: int, user_id: int = 555) -> None:
    await harness.send(callback_update("v1:st:warn", user_id=user_id))
    assert "Which line?" in harness.api.texts(chat_id=user_id)[-1]
    await harness.send(callback_update(f"v1:wl:{line_id}", user_id=user_id))
    assert "Warn me when" in harness.api.texts(chat_id=user_id)[-1]


async def test_a_low_balance_warning_is_stored_and_off_clears_it(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await harness.send(callback_update("v1:st:warn"))
    assert keyboard(harness.api.sent()[-1]) == [("012 ••• 678", f"v1:wl:{line_id}")]
    await harness.send(callback_update(f"v1:wl:{line_id}"))

    await harness.send(text_update("0.50"))

    assert "below $0.50" in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).warn_balance_minor == 50

    await choose_warning_line(harness, line_id)
    await harness.send(text_update("off"))

    assert "warnings are off" in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).warn_balance_minor is None


@pytest.mark.parametrize(("typed", "expected"), [
    ("abc", "like 1 or $0.50"),
    ("0", "like 1 or $0.50"),
    ("-1", "like 1 or $0.50"),
    ("1" * 4000, "like 1 or $0.50"),
    ("20000 KHR", "US dollars"),
])
async def test_a_bad_warning_amount_is_refused_and_the_flow_stays(
        harness: BotHarness, typed: str, expected: str) -> None:
    line_id = await bind(harness, CELLCARD)
    await choose_warning_line(harness, line_id)

    await harness.send(text_update(typed))

    assert expected in harness.api.texts()[-1]
    assert (await line_row(harness, line_id)).warn_balance_minor is None
    await harness.send(text_update("$1"))
    assert (await line_row(harness, line_id)).warn_balance_minor == 100


async def test_the_warning_of_another_users_line_is_refused(harness: BotHarness) -> None:
    victim = await bind(harness, CELLCARD, user_id=111)
    await bind(harness, SMART, user_id=222)
    await harness.send(callback_update("v1:st:warn", user_id=222))
    start_at = len(harness.api.calls)

    await harness.send(callback_update(f"v1:wl:{victim}", user_id=222))
    await harness.send(text_update("0.50", user_id=222))

    assert "not yours" in harness.api.texts(chat_id=222)[-2]
    assert (await line_row(harness, victim)).warn_balance_minor is None
    sent_to_b = "\n".join(json.dumps(call.params, ensure_ascii=False)
                          for call in harness.api.calls[start_at:])
    for form in ("+85512345678", "012 345 678", "012 ••• 678", "12345678"):
        assert form not in sent_to_b


async def test_a_warning_line_button_outside_the_flow_is_stale(harness: BotHarness) -> None:
    victim = await bind(harness, CELLCARD, user_id=111)

    await harness.send(callback_update(f"v1:wl:{victim}", user_id=222))
    await harness.send(text_update("0.50", user_id=222))

    assert STALE in last_answer(harness)["text"]
    assert (await line_row(harness, victim)).warn_balance_minor is None


async def test_warning_without_lines_says_so(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(callback_update("v1:st:warn"))
    assert "no lines yet" in harness.api.texts()[-1]


async def test_cancel_while_setting_a_warning_changes_nothing(harness: BotHarness) -> None:
    line_id = await bind(harness, CELLCARD)
    await choose_warning_line(harness, line_id)
    await harness.send(text_update("/cancel"))
    await harness.send(text_update("0.50"))

    assert (await line_row(harness, line_id)).warn_balance_minor is None


async def test_another_menu_item_mid_flow_switches_to_it(harness: BotHarness) -> None:
    await start(harness)
    await harness.send(text_update("/settings"))
    await harness.send(callback_update("v1:st:quiet"))
    await harness.send(callback_update("v1:st:tz"))  # changed their mind

    await harness.send(text_update("Asia/Bangkok"))

    assert (await user_row(harness)).timezone == "Asia/Bangkok"
    assert STALE not in last_answer(harness).get("text", "")
