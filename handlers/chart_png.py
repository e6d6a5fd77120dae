"""A line's chart as a PNG (matplotlib's object API on the Agg canvas, no pyplot: no global
figure state, so threads can draw at once). Called off the event loop; matplotlib is
imported on first use, never when the bot starts.

Every word is worked out before (``Drawing``): here is only drawing, in a fixed size.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from bot.domain.readings import ReadingSource
from bot.services.charts import DATA_UNIT, LineChart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 1000, 600, 100  # pixels: Telegram shows a photo up to 1280 wide
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GB_FROM_MB = 2048  # data above this many MB is plotted in GB
# Searched in order for each character: Latin first, then Khmer and Chinese where installed.
FONT_FAMILIES = ("DejaVu Sans", "Noto Sans", "Noto Sans Khmer", "Khmer OS System", "Khmer OS",
                 "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                 "Droid Sans Fallback")


@dataclass(frozen=True)
class Style:
    color: str
    linestyle: str
    marker: str


# Distinct by shape and dash as well as colour, so they part in grey too.
STYLES: Mapping[ReadingSource, Style] = {
    ReadingSource.PROVIDER: Style("#1f77b4", "-", "o"),
    ReadingSource.USER: Style("#ff7f0e", "--", "s"),
    ReadingSource.ESTIMATE: Style("#7f7f7f", ":", "^"),
}
TOP_UP_COLOR = "#2ca02c"
HEADROOM = 1.25  # the y axis reaches this far above the highest point
LEGEND_BELOW = -0.07  # the legend's top, in axes heights below the plot (under the dates)


@dataclass(frozen=True)
class ChartText:
    """The words in the picture, in one language."""

    y_label: str  # "Balance (USD)"; "{unit}" is filled with the plotted unit
    sources: Mapping[ReadingSource, str]  # the legend of each source
    top_up: str  # the legend of the top-up marks
    top_up_amounts: tuple[str, ...]  # one per top-up mark, in order

    def words(self) -> str:
        return "".join((self.y_label, *self.sources.values(), self.top_up,
                        *self.top_up_amounts))


@dataclass(frozen=True)
class Drawing:
    chart: LineChart
    text: ChartText  # in the user's language
    fallback: ChartText  # in English: drawn when no installed font has the user's script
    ticks: tuple[tuple[datetime, str], ...]  # local midnights along the window, labelled


@functools.cache
def _fonts() -> tuple[tuple[str, ...], frozenset[int]]:
    """The installed families of FONT_FAMILIES, and every character they can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    paths = {font.name: font.fname for font in font_manager.fontManager.ttflist}
    families = tuple(family for family in FONT_FAMILIES if family in paths)
    characters: set[int] = set()
    for family in families:
        characters.update(FT2Font(paths[family]).get_charmap())
    return families, frozenset(characters)


def _drawable(text: str) -> bool:
    characters = _fonts()[1]
    return all(char.isspace() or ord(char) in characters for char in text)


def _scale(chart: LineChart) -> tuple[str, Decimal]:
    """The unit on the axis and what a value is divided by to be in it."""
    if chart.unit == DATA_UNIT and any(point.value > GB_FROM_MB for series in chart.series
                                       for point in series.points):
        return "GB", Decimal(1024)
    return chart.unit, Decimal(1)


def x(moment: datetime) -> float:
    """Where a moment is on the time axis: days since 1970 UTC (matplotlib's own day
    numbers), so every zone's moments line up; the tick labels say the user's days."""
    return (moment - EPOCH) / timedelta(days=1)


def figure(drawing: Drawing) -> Figure:
    """The chart as a matplotlib Figure (tests read the plotted data from it)."""
    import matplotlib

    # Texts as written: a line's name is the user's, and "$...$" in it would be read as
    # maths (and "\\foo" between dollars fails the drawing).
    with matplotlib.rc_context({"text.parse_math": False}):
        return _figure(drawing)


def _figure(drawing: Drawing) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chart = drawing.chart
    text = drawing.text if _drawable(drawing.text.words()) else drawing.fallback
    families = list(_fonts()[0])
    unit, divisor = _scale(chart)
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, named: no GUI backend is ever looked for
    axes = fig.add_subplot()
    title = "".join(char for char in chart.title if _drawable(char)).strip()
    axes.set_title(title, fontfamily=families, loc="left")
    for series in chart.series:
        style = STYLES[series.source]
        axes.plot([x(point.at) for point in series.points],
                  [float(point.value / divisor) for point in series.points],
                  label=text.sources[series.source], color=style.color,
                  linestyle=style.linestyle, marker=style.marker, markersize=5, linewidth=1.6,
                  gid=series.source.value)
    for index, (mark, amount) in enumerate(zip(chart.top_ups, text.top_up_amounts,
                                               strict=True)):
        axes.axvline(x(mark.at), color=TOP_UP_COLOR, linestyle="-.", linewidth=1.2, alpha=0.8,
                     label=text.top_up if index == 0 else None, gid="top-up")
        axes.annotate(amount, xy=(x(mark.at), 1), xycoords=("data", "axes fraction"),
                      xytext=(3, -4), textcoords="offset points", rotation=90, va="top",
                      ha="left", fontsize=9, color=TOP_UP_COLOR, fontfamily=families,
                      bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                            "edgecolor": "none", "alpha": 0.8})
    axes.set_xlim(x(chart.start), x(chart.end))  # the whole window, even where nothing was read
    highest = max((float(point.value / divisor) for series in chart.series
                   for point in series.points), default=0.0)
    # Headroom over the highest point: the top-ups' amounts are written there, clear of the
    # line (a top-up's point is the highest near its mark).
    axes.set_ylim(0, highest * HEADROOM if highest > 0 else 1)
    axes.set_xticks([x(at) for at, _ in drawing.ticks], [label for _, label in drawing.ticks])
    axes.set_ylabel(text.y_label.format(unit=unit), fontfamily=families)
    axes.grid(alpha=0.3)
    # Under the plot, in one row: over the plot it hid the points of a busy window.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, LEGEND_BELOW), ncols=4,
                prop={"family": families, "size": 9}, frameon=False)
    return fig


def render_png(drawing: Drawing) -> bytes:
    """The chart as a WIDTH x HEIGHT PNG. Blocking (~0.1 s of CPU): run it in a thread."""
    image = io.BytesIO()
    figure(drawing).savefig(image, format="png", dpi=DPI)
    return image.getvalue()
