"""The trends drawn: one panel per metric group, releases and restarts as labelled vertical lines, a PNG.

matplotlib's Agg canvas on a Figure of our own (no pyplot: no global state, safe on a runner's threads). A missing
minute breaks the line (a gap is drawn as a gap, never as a slope or a 0). A window with more minutes than the
panel has pixel columns comes as each column's minimum and maximum (bot/stack/trends.py read) and is drawn as a
band between them: every spike kept, one fill instead of thousands of strokes.
"""

from __future__ import annotations

import io
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from bot.stack.trends import Samples

WIDTH_PX, DPI = 1200, 100
COLUMNS = 1000  # about the panels' width in pixels: a longer window is read as each column's minimum and maximum

# (title, unit, which series): the panels, in order
GROUPS = [
    ("5xx error rate", "%", lambda name: name in ("edge_error_rate", "backend_error_rate")),
    ("CPU", "%", lambda name: name.startswith("cpu:")),
    ("Memory", "% of limit", lambda name: name.startswith("mem:")),
    ("Database connections", "connections", lambda name: name == "db_connections"),
    ("AI worker queue", "jobs", lambda name: name == "queue_length"),
]
LABELS = {"edge_error_rate": "edge (what users got)", "backend_error_rate": "backend"}


@dataclass(frozen=True)
class Mark:
    """A vertical line: a release or a restart."""

    at: datetime
    label: str
    kind: str = "release"  # release or restart


@dataclass
class Chart:
    png: bytes
    drawn: dict[str, Drawn] = field(default_factory=dict)  # what each series' line (or band) holds
    artists: dict[str, object] = field(default_factory=dict)  # each series' Line2D (or band) in the figure drawn
    marks: list[Mark] = field(default_factory=list)  # the vertical lines drawn
    points: int = 0  # samples read


@dataclass
class Drawn:
    """A series as drawn, x in seconds since the epoch; a row of NaN where the line breaks at a gap."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    dense: bool = False  # each pixel column's minimum and maximum, drawn as a band


def with_gaps(samples: Samples) -> Drawn:
    """NaN between two points further apart than their step: minutes nobody measured break the line."""
    import numpy as np

    at = np.flatnonzero(np.diff(samples.x) > 1.5 * samples.step) + 1
    return Drawn(np.insert(samples.x, at, np.nan), np.insert(samples.low, at, np.nan), np.insert(samples.high, at, np.nan),
                 dense=samples.bucketed)


def render(series: dict[str, Samples], start: datetime, end: datetime, marks: list[Mark],
           tz: tzinfo, title: str) -> Chart:
    # Imported when a chart is drawn, not with the commands: the process that acks Slack never draws one.
    from matplotlib import dates as mdates
    from matplotlib import transforms
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [(name, unit, [s for s in sorted(series) if belongs(s)]) for name, unit, belongs in GROUPS]
    shown = [group for group in groups if group[2]] or groups[:1]
    figure = Figure(figsize=(WIDTH_PX / DPI, 1.0 + 2.0 * len(shown)), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    x0, x1 = start.timestamp(), end.timestamp()
    epoch = mdates.date2num(datetime.fromtimestamp(0, tz))  # matplotlib's days, from seconds since the epoch
    chart = Chart(b"", marks=marks)
    for ax, (name, unit, names) in zip(axes, shown):
        ax.set_title(f"{name} ({unit})", loc="left", fontsize=9)
        ax.grid(True, alpha=0.3)
        if not names:
            ax.text(0.5, 0.5, "No samples in this window.", transform=ax.transAxes, ha="center", va="center")
        for series_name in names:
            chart.points += len(series[series_name].x)
            drawn = chart.drawn[series_name] = with_gaps(series[series_name])
            label = LABELS.get(series_name, series_name.partition(":")[2] or series_name)
            days = epoch + drawn.x / 86400.0
            if drawn.dense:  # a band from each column's minimum to its maximum: one fill, not thousands of strokes
                chart.artists[series_name] = ax.fill_between(days, drawn.low, drawn.high, linewidth=0.6, alpha=0.7, label=label)
            else:
                chart.artists[series_name], = ax.plot(days, drawn.low, linewidth=0.9, label=label)
        if names:
            ax.set_ylim(0, max(ax.get_ylim()[1], 1.0) * 1.25)  # headroom for the legend, above the curves
            ax.legend(loc="upper left", fontsize=7, ncol=min(len(names), 6), frameon=False)
        for mark in marks:
            ax.axvline(epoch + mark.at.timestamp() / 86400.0, color="tab:red" if mark.kind == "release" else "tab:purple",
                       linestyle="--", linewidth=0.8)
    top = axes[0]
    along = transforms.blended_transform_factory(top.transData, top.transAxes)
    for mark in marks:
        top.text(epoch + mark.at.timestamp() / 86400.0, 1.02, mark.label, transform=along, rotation=30, fontsize=7,
                 ha="left", va="bottom", clip_on=False, parse_math=False)
    bottom = axes[-1]
    bottom.set_xlim(epoch + x0 / 86400.0, epoch + x1 / 86400.0)
    locator = mdates.AutoDateLocator(tz=tz)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    figure.suptitle(title, x=0.01, ha="left", fontsize=11, parse_math=False)  # an incident's title may hold a $
    figure.subplots_adjust(left=0.06, right=0.99, top=1 - 0.9 / figure.get_figheight(), bottom=0.5 / figure.get_figheight(), hspace=0.35)
    out = io.BytesIO()
    figure.savefig(out, format="png", pil_kwargs={"compress_level": 3})  # zlib level 6 takes longer than the drawing
    chart.png = out.getvalue()
    return chart


def save(png: bytes, directory: Path, filename: str) -> Path:
    """The chart as a file where no Slack is (the console): under the bot's home, readable by its user alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / filename
    path.write_bytes(png)
    path.chmod(0o600)
    return path
