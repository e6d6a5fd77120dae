"""The chart picture: what is plotted is the model's points, source by source, with the
top-ups marked; the PNG has the fixed size; matplotlib is loaded only to draw."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from matplotlib.lines import Line2D
from PIL import Image

from bot.domain.money import Money
from bot.domain.readings import ReadingSource
from bot.services.charts import ChartMetric, ChartPoint, ChartSeries, LineChart, TopUpMark
from handlers import chart_png
from handlers.chart_png import ChartText, Drawing, figure, render_png, x
from handlers.charts import chart_caption, chart_text, ticks, too_few_text
from handlers.common import Ui

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
START = NOW - timedelta(days=30)
PHNOM_PENH = ZoneInfo("Asia/Phnom_Penh")
UI = Ui(language="en", _=lambda message: message, locale="en", zone=PHNOM_PENH, now=NOW)
NO_FONT_HAS_IT = "\ue000"  # a private-use character: drawn by no font


def make_chart(*, metric: ChartMetric = ChartMetric.BALANCE, unit: str = "USD",
               title: str = "Home", scale: int = 1) -> LineChart:
    carrier = tuple(ChartPoint(START + timedelta(days=2 * i, hours=3),
                               (Decimal(500) - 25 * i) * scale / 100) for i in range(10))
    typed = tuple(ChartPoint(START + timedelta(days=3 * i + 1), Decimal("1.25") * scale + i)
                  for i in range(3))
    return LineChart(
        line_id=7, title=title, is_esim=False, read_by=None, metric=metric,
        metrics=(ChartMetric.BALANCE, ChartMetric.DATA), unit=unit, days=30, start=START,
        end=NOW, series=(ChartSeries(ReadingSource.PROVIDER, carrier),
                         ChartSeries(ReadingSource.USER, typed)),
        top_ups=(TopUpMark(START + timedelta(days=9), Money(500, "USD")),
                 TopUpMark(START + timedelta(days=21), Money(200, "USD"))))


def drawing(chart: LineChart, text: ChartText | None = None) -> Drawing:
    english = chart_text(UI._, "en", chart)
    return Drawing(chart, text or english, english, ticks(UI, chart))


def plotted(chart_drawing: Drawing) -> dict[str, Line2D]:
    axes = figure(chart_drawing).axes[0]
    return {str(line.get_gid()): line for line in axes.get_lines()
            if line.get_gid() != "top-up"}


def test_each_source_is_plotted_with_exactly_its_points() -> None:
    chart = make_chart()

    lines = plotted(drawing(chart))

    assert set(lines) == {"provider", "user"}
    for series in chart.series:
        line = lines[series.source.value]
        assert list(line.get_xdata()) == [x(point.at) for point in series.points]
        assert list(line.get_ydata()) == [float(point.value) for point in series.points]
    assert x(START + timedelta(days=1)) - x(START) == 1  # one day is one unit, in any zone
    styles = {(line.get_linestyle(), line.get_marker(), line.get_color())
              for line in lines.values()}
    assert len(styles) == 2  # the sources are told apart


def test_top_ups_are_vertical_marks_with_their_amounts_and_a_legend() -> None:
    chart = make_chart()

    axes = figure(drawing(chart)).axes[0]

    marks = [line for line in axes.get_lines() if line.get_gid() == "top-up"]
    assert [list(line.get_xdata()) for line in marks] == [[x(m.at), x(m.at)]
                                                         for m in chart.top_ups]
    assert [text.get_text() for text in axes.texts] == ["$5.00", "$2.00"]
    legend = axes.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == [
        "read from the carrier", "reported by you", "Top-up"]
    assert axes.get_ylabel() == "Balance (USD)"
    assert axes.get_xlim() == (x(START), x(NOW))


def test_the_amounts_and_the_legend_keep_clear_of_the_points() -> None:
    chart = make_chart()
    fig = figure(drawing(chart))
    fig.canvas.draw()
    axes = fig.axes[0]
    highest = max(point.value for series in chart.series for point in series.points)

    [_, top] = axes.get_ylim()
    assert top == float(highest) * chart_png.HEADROOM
    frame = axes.get_window_extent()
    data_top = axes.transData.transform((x(START), float(highest)))[1]
    for amount in axes.texts:  # written in the headroom, above every point
        assert amount.get_window_extent().y0 > data_top
    legend = axes.get_legend()
    assert legend is not None
    assert legend.get_window_extent().y1 <= frame.y0  # under the plot, not over the points


def test_dates_are_the_users_days_counted_back_from_today() -> None:
    chart = make_chart()

    marks = ticks(UI, chart)

    assert marks[-1] == (datetime(2026, 11, 25, tzinfo=PHNOM_PENH), "11/25")
    assert [label for _, label in marks] == ["10/31", "11/5", "11/10", "11/15", "11/20",
                                             "11/25"]
    assert all(at.astimezone(PHNOM_PENH).hour == 0 for at, _ in marks)
    axes = figure(drawing(chart)).axes[0]
    assert list(axes.get_xticks()) == [x(at) for at, _ in marks]
    assert [label.get_text() for label in axes.get_xticklabels()] == [
        label for _, label in marks]


def test_much_data_is_plotted_in_gigabytes() -> None:
    chart = make_chart(metric=ChartMetric.DATA, unit="MB", scale=1000)

    chart_drawing = drawing(chart)
    lines = plotted(chart_drawing)

    assert list(lines["provider"].get_ydata()) == [
        float(point.value / 1024) for point in chart.series[0].points]
    assert figure(chart_drawing).axes[0].get_ylabel() == "Data left (GB)"


def test_words_no_installed_font_can_draw_fall_back_to_english() -> None:
    chart = make_chart(title=f"Home {NO_FONT_HAS_IT}📱")
    english = chart_text(UI._, "en", chart)
    unreadable = ChartText(y_label=NO_FONT_HAS_IT + " ({unit})",
                           sources=dict.fromkeys(ReadingSource, NO_FONT_HAS_IT),
                           top_up=NO_FONT_HAS_IT, top_up_amounts=english.top_up_amounts)

    axes = figure(drawing(chart, unreadable)).axes[0]

    assert axes.get_ylabel() == "Balance (USD)"
    legend = axes.get_legend()
    assert legend is not None and legend.get_texts()[0].get_text() == "read from the carrier"
    assert axes.get_title(loc="left") == "Home"  # what no font draws is left out


def test_the_png_is_valid_and_of_the_fixed_size() -> None:
    png = render_png(drawing(make_chart()))

    image = Image.open(io.BytesIO(png))
    image.verify()
    assert (image.format, image.size) == ("PNG", (chart_png.WIDTH, chart_png.HEIGHT))
    assert image.size == (1000, 600)


def test_a_line_name_with_dollars_and_backslashes_is_drawn_as_written() -> None:
    # Read as maths, "$\\foo$" fails the drawing ("Unknown symbol") and "$5 $" loses its signs.
    chart = make_chart(title=r"Mom $\foo$ $5 $")
    axes = chart_png.figure(drawing(chart)).axes[0]
    assert axes.get_title(loc="left") == r"Mom $\foo$ $5 $"
    Image.open(io.BytesIO(render_png(drawing(chart)))).verify()


def test_matplotlib_is_not_loaded_when_the_bot_starts() -> None:
    code = ("import sys, bot.app, bot.wiring, handlers.charts, handlers.chart_png, "
            "bot.services.charts; print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "False"


def test_the_caption_names_the_line_the_window_and_the_sources() -> None:
    caption = chart_caption(UI, make_chart())

    assert caption.splitlines() == [
        "📈 Home: balance over the last 30 days",
        "Readings: read from the carrier (10), reported by you (3)",
        "Top-ups marked: 2"]


def test_an_esim_with_too_few_readings_is_told_how_they_arrive() -> None:
    chart = dataclasses.replace(make_chart(metric=ChartMetric.DATA, unit="MB"), is_esim=True,
                                read_by="Airalo", series=(), top_ups=(),
                                metrics=(ChartMetric.DATA,))

    text = too_few_text(UI, chart)

    assert text.startswith("Not enough readings yet for a chart of Home: it needs at least 2 "
                           "in the last 30 days.")
    assert "from Airalo" in text and "/balance" not in text
