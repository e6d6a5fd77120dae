"""Every flow in English, Khmer and Simplified Chinese: /start negotiates the language, and
the lines, balance and settings flows work (and format) in each of them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bot.domain.money import Money
from storage.readings import ReadingsRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import line_row, user_row
from tests.flow.recording import callback_update, contact_update, text_update

LANGUAGES = [("en", "en"), ("km", "km"), ("zh-hans", "zh_Hans")]
CELLCARD = "+85512345678"
SMS = "Your account balance is USD 4.80, valid to 05.01.2027 and 1.5GB of data remaining."


def no_errors(harness: BotHarness) -> None:
    assert not any("went wrong" in text for text in harness.api.texts())


@pytest.mark.parametrize(("telegram_code", "language"), LANGUAGES)
async def test_start_greets_in_the_users_language(harness: BotHarness, telegram_code: str,
                                                  language: str) -> None:
    await harness.send(text_update("/start", user_id=321, language=telegram_code,
                                   first_name="Sophea"))

    (greeting,) = harness.api.texts(chat_id=321)
    assert "Sophea" in greeting
    assert (await user_row(harness, 321)).language == language
    script = {"en": r"[A-Za-z]{4}", "km": "[\u1780-\u17ff]", "zh_Hans": "[\u4e00-\u9fff]"}
    assert len(re.findall(script[language], greeting)) >= 10, greeting
    if language != "en":
        assert "I keep your Cambodian prepaid" not in greeting


@pytest.mark.parametrize(("telegram_code", "language"), LANGUAGES)
async def test_every_flow_works_in_each_language(harness: BotHarness, telegram_code: str,
                                                 language: str) -> None:
    user = 4321

    async def say(text: str) -> None:
        before = len(harness.api.texts(chat_id=user))
        await harness.send(text_update(text, user_id=user, language=telegram_code))
        assert len(harness.api.texts(chat_id=user)) == before + 1, f"no reply to {text!r}"

    async def tap(data: str) -> None:
        before = len(harness.api.sent("answerCallbackQuery"))
        await harness.send(callback_update(data, user_id=user, language=telegram_code))
        assert len(harness.api.sent("answerCallbackQuery")) == before + 1, f"{data} unanswered"

    await say("/start")
    assert (await user_row(harness, user)).language == language

    # binding
    await say("/bind")
    await harness.send(contact_update(CELLCARD, user_id=user, contact_user_id=user,
                                      language=telegram_code))
    (line,) = await harness.components.lines.for_user(user)

    # lines: list, card, rename, plan
    await say("/lines")
    await tap(f"v1:ln:{line.id}:show")
    await tap(f"v1:ln:{line.id}:ren")
    await say("Dara")
    assert (await line_row(harness, line.id)).nickname == "Dara"
    await tap(f"v1:pl:{line.id}:0")
    await tap(f"v1:pc:{line.id}:cellcard-air-200")
    assert (await line_row(harness, line.id)).plan_product_id == "cellcard-air-200"

    # balance: typed (Khmer digits in Khmer), then the carrier's SMS
    await say("/balance")
    await say("១.២៥" if language == "km" else "1.25")
    await say("/balance")
    await say(SMS)
    async with harness.components.db.read() as conn:
        history = await ReadingsRepository(conn).history(
            line.id, since=datetime(2000, 1, 1, tzinfo=UTC))
    assert [r.balance for r in history] == [Money(125, "USD"), Money(480, "USD")]
    await tap(f"v1:ln:{line.id}:show")  # the card formats money, data, dates, age
    card = str(harness.api.sent("editMessageText")[-1]["text"])
    assert "012 345 678" in card

    # settings: menu, zone, quiet hours, warning
    await say("/settings")
    await tap("v1:st:tz")
    await say("Asia/Bangkok")
    await tap("v1:st:quiet")
    await say("22-7")
    await tap("v1:st:warn")
    await tap(f"v1:wl:{line.id}")
    await say("0.50")
    settings = await user_row(harness, user)
    assert settings.timezone == "Asia/Bangkok"
    assert (settings.quiet_start_minute, settings.quiet_end_minute) == (1320, 420)
    assert (await line_row(harness, line.id)).warn_balance_minor == 50
    await say("/settings")

    # language, and unbinding last
    await say("/language")
    await tap(f"v1:ln:{line.id}:unb")
    await tap(f"v1:ln:{line.id}:unbok")
    assert not (await line_row(harness, line.id)).is_bound
    assert (await user_row(harness, user)).language == language
    no_errors(harness)
