"""The balance chart through the real Application: "📈 Chart" on a line's card sends a PNG of
the readings with the top-ups marked, drawn off the event loop; its buttons switch window
and metric in place; too few readings get a sentence; anyone else's line gets nothing."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image

from bot.domain.charges import ChargeState
from bot.domain.money import Money
from bot.domain.readings import LineReading, ReadingSource
from bot.services.charts import ChartPoint, ChartSeries, TopUpMark
from handlers import chart_png
from storage.charges import ChargesRepository
from storage.lines import LinesRepository
from storage.readings import ReadingsRepository
from tests.flow.conftest import BotHarness
from tests.flow.helpers import bind, keyboard, last_answer, last_edit
from tests.flow.recording import callback_update

CELLCARD = "+85512345678"  # 012 345 678
SMART = "+85510345678"
STRANGER = 777
NO_LONGER_ACTIVE = "That button is no longer active."


def usd(cents: int) -> Money:
    return Money(cents, "USD")


class RenderSpy:
    """Wraps the renderer: which thread drew, and what it was given to draw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self.drawings: list[chart_png.Drawing] = []
        real = chart_png.render_png

        def render(drawing: chart_png.Drawing) -> bytes:
            self.threads.append(threading.get_ident())
            self.drawings.append(drawing)
            return real(drawing)

        monkeypatch.setattr(chart_png, "render_png", render)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> RenderSpy:
    return RenderSpy(monkeypatch)


async def store(harness: BotHarness, line_id: int, *readings: LineReading) -> None:
    """Stores the readings, and keeps the balance sweep (which runs whenever the loop is
    free, a chart being drawn say) from reading the simulated line: the points are then
    exactly these."""
    c = harness.components
    async with c.db.write() as conn:
        await ReadingsRepository(conn).add_many([(line_id, r) for r in readings],
                                                recorded_at=c.clock.now())
        await LinesRepository(conn, c.cipher).set_next_check(
            line_id, c.clock.now() + timedelta(days=365), now=c.clock.now())


async def succeeded_top_up(harness: BotHarness, line_id: int, amount: Money) -> None:
    c = harness.components
    now = c.clock.now()
    async with c.db.write() as conn:
        repo = ChargesRepository(conn, c.cipher)
        charge, _ = await repo.create(idempotency_key=f"test:{now.isoformat()}", user_id=555,
                                      line_id=line_id, amount=amount, cause="manual",
                                      state=ChargeState.APPROVED, now=now)
        assert await repo.transition(charge.id, ChargeState.APPROVED, ChargeState.SUBMITTED,
                                     now)
        assert await repo.transition(charge.id, ChargeState.SUBMITTED, ChargeState.SUCCEEDED,
                                     now)


async def line_with_history(harness: BotHarness) -> tuple[int, list[LineReading],
                                                          list[TopUpMark]]:
    """A line read by the carrier every 3 days and reported twice by its owner over 20
    days, topped up twice; the clock ends a day after the last reading."""
    clock = harness.components.clock
    line_id = await bind(harness, CELLCARD)
    readings: list[LineReading] = []
    marks: list[TopUpMark] = []
    for day in range(1, 21):
        clock.advance(timedelta(days=1))
        if day % 3 == 0:
            readings.append(LineReading(ReadingSource.PROVIDER, clock.now(),
                                        balance=usd(600 - 20 * day), data_mb=3000 - 100 * day))
        if day in (5, 14):
            readings.append(LineReading(ReadingSource.USER, clock.now(), balance=usd(333)))
        if day in (8, 16):
            await succeeded_top_up(harness, line_id, usd(200 * (day // 8)))
            marks.append(TopUpMark(clock.now(), usd(200 * (day // 8))))
    await store(harness, line_id, *readings)
    clock.advance(timedelta(days=1))
    return line_id, readings, marks


def photo_press(data: str, *, user_id: int = 555) -> dict[str, Any]:
    """A press of a button under one of the bot's photos (a chart)."""
    update = callback_update(data, user_id=user_id)
    message = update["callback_query"]["message"]
    del message["text"]
    message["photo"] = [{"file_id": "chart", "file_unique_id": "chart", "width": 1000,
                         "height": 600}]
    return update


def png_of(params: dict[str, Any]) -> Image.Image:
    (data,) = params["_files"].values()
    image = Image.open(io.BytesIO(data))
    image.verify()
    return image


def sent_count(harness: BotHarness) -> int:
    return sum(len(harness.api.sent(method)) for method in
               ("sendPhoto", "sendMessage", "editMessageMedia", "editMessageText"))


async def test_the_card_chart_button_sends_a_png_of_the_readings_and_top_ups(
        harness: BotHarness, spy: RenderSpy) -> None:
    line_id, readings, marks = await line_with_history(harness)
    await harness.send(callback_update(f"v1:ln:{line_id}:show"))
    (chart_data,) = [data for text, data in keyboard(last_edit(harness)) if text == "📈 Chart"]
    assert chart_data == f"v1:cht:{line_id}:auto:30"

    await harness.send(callback_update(chart_data))

    (photo,) = harness.api.sent("sendPhoto")
    image = png_of(photo)
    assert (image.format, image.size) == ("PNG", (1000, 600))
    caption = photo["caption"]
    assert "012 ••• 678: balance over the last 30 days" in caption
    assert "read from the carrier (6), reported by you (2)" in caption
    assert "Top-ups marked: 2" in caption
    # What was drawn is the readings, source by source, and the top-ups.
    (drawn,) = spy.drawings
    assert drawn.chart.series == (
        ChartSeries(ReadingSource.PROVIDER, tuple(
            ChartPoint(r.read_at, r.balance.as_decimal()) for r in readings
            if r.source is ReadingSource.PROVIDER and r.balance is not None)),
        ChartSeries(ReadingSource.USER, tuple(
            ChartPoint(r.read_at, Decimal("3.33")) for r in readings
            if r.source is ReadingSource.USER)))
    assert drawn.chart.top_ups == tuple(marks)
    # ... and it was drawn off the event loop's thread.
    assert spy.threads and threading.get_ident() not in spy.threads
    assert [data for _, data in keyboard(photo)] == [f"v1:cht:{line_id}:bal:90",
                                                     f"v1:cht:{line_id}:data:30"]


async def test_the_charts_buttons_replace_it_with_90_days_and_with_data(
        harness: BotHarness, spy: RenderSpy) -> None:
    line_id, readings, _ = await line_with_history(harness)

    await harness.send(photo_press(f"v1:cht:{line_id}:bal:90"))
    await harness.send(photo_press(f"v1:cht:{line_id}:data:30"))

    assert harness.api.sent("sendPhoto") == []  # both replaced the picture in place
    longer, data = harness.api.sent("editMessageMedia")
    assert png_of(longer).size == png_of(data).size == (1000, 600)
    assert "balance over the last 90 days" in longer["media"]["caption"]
    assert "data left over the last 30 days" in data["media"]["caption"]
    assert [d for _, d in keyboard(data)] == [f"v1:cht:{line_id}:data:90",
                                              f"v1:cht:{line_id}:bal:30"]
    assert spy.drawings[1].chart.series == (ChartSeries(ReadingSource.PROVIDER, tuple(
        ChartPoint(r.read_at, Decimal(r.data_mb)) for r in readings
        if r.data_mb is not None)),)
    assert spy.drawings[1].text.y_label == "Data left ({unit})"


async def test_too_few_readings_get_a_sentence_instead_of_a_chart(
        harness: BotHarness, spy: RenderSpy) -> None:
    line_id = await bind(harness, CELLCARD)
    harness.components.clock.advance(timedelta(hours=2))
    await store(harness, line_id, LineReading(ReadingSource.USER,
                                              harness.components.clock.now(),
                                              balance=usd(150)))

    await harness.send(callback_update(f"v1:cht:{line_id}:auto:30"))

    assert harness.api.sent("sendPhoto") == [] and spy.drawings == []
    text = harness.api.texts()[-1]
    assert text.startswith("Not enough readings yet for a chart of 012 ••• 678")
    assert "/balance" in text and "forward the carrier's balance SMS" in text


@pytest.mark.parametrize("data", [
    "v1:cht:{line}:auto:30",  # pressed by someone else
    "v1:cht:{line}:bal:90",
])
async def test_someone_elses_line_gets_nothing(harness: BotHarness, spy: RenderSpy,
                                               data: str) -> None:
    line_id, _, _ = await line_with_history(harness)
    before = sent_count(harness)

    await harness.send(callback_update(data.format(line=line_id), user_id=STRANGER))

    assert last_answer(harness)["text"] == NO_LONGER_ACTIVE
    assert sent_count(harness) == before and spy.drawings == []


@pytest.mark.parametrize("data", [
    "v1:cht:{line}:auto:7",  # a window we do not offer
    "v1:cht:{line}:hours:30",  # a metric we do not have
    "v1:cht:{line}x:auto:30",
    "v1:cht:{missing}:auto:30",  # no such line
])
async def test_a_tampered_chart_button_changes_nothing(harness: BotHarness, spy: RenderSpy,
                                                       data: str) -> None:
    line_id, _, _ = await line_with_history(harness)
    before = sent_count(harness)

    await harness.send(callback_update(data.format(line=line_id, missing=line_id + 50)))

    assert last_answer(harness)["text"] == NO_LONGER_ACTIVE
    assert sent_count(harness) == before and spy.drawings == []


async def test_an_unbound_lines_chart_button_is_no_longer_active(
        harness: BotHarness, spy: RenderSpy) -> None:
    line_id, _, _ = await line_with_history(harness)
    await harness.send(callback_update(f"v1:ln:{line_id}:unbok"))
    before = sent_count(harness)

    await harness.send(photo_press(f"v1:cht:{line_id}:bal:90"))

    assert last_answer(harness)["text"] == NO_LONGER_ACTIVE
    assert sent_count(harness) == before and spy.drawings == []
