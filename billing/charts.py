"""A server-rendered bar chart of credits used per day, laid out here and drawn as SVG by
the template: no JavaScript, readable at a glance."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 12, 26


@dataclasses.dataclass(frozen=True)
class Bar:
    date: dt.date
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclasses.dataclass(frozen=True)
class Gridline:
    y: float
    label: str


@dataclasses.dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclasses.dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    gridlines: list[Gridline]
    ticks: list[Tick]
    peak: Bar | None
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 10
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return int(step * power)
    return 10 * power


def short_number(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return str(value)


def daily_chart(points: list[tuple[dt.date, int]]) -> BarChart:
    """Bars for ``points`` (oldest first); days that gave credits back draw as zero."""
    top = nice_ceiling(max((value for _, value in points), default=0))
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(points), 1)
    gap = min(slot * 0.25, 4)
    bars = []
    for index, (date, value) in enumerate(points):
        height = plot_height * max(value, 0) / top
        bars.append(
            Bar(date, value, LEFT + index * slot + gap / 2, HEIGHT - BOTTOM - height, slot - gap, height)
        )
    gridlines = [
        Gridline(HEIGHT - BOTTOM - plot_height * share, short_number(int(top * share)))
        for share in (0, 0.5, 1)
    ]
    ticked = [bar for bar in bars if bar.date.day == 1 or bar.date.day % 5 == 0]
    if bars and (not ticked or bars[-1].date.day - ticked[-1].date.day >= 3):
        ticked.append(bars[-1])
    ticks = [Tick(bar.x + bar.width / 2, str(bar.date.day)) for bar in ticked]
    busiest = max(bars, key=lambda bar: bar.value, default=None)
    return BarChart(bars, gridlines, ticks, busiest if busiest and busiest.value > 0 else None)


@dataclasses.dataclass(frozen=True)
class Segment:
    """One group's share of one bucket's bar."""

    series: int  # which series (its colour)
    name: str
    start: dt.date
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclasses.dataclass(frozen=True)
class StackedChart:
    segments: list[Segment]
    names: list[str]  # the legend, in series order
    gridlines: list[Gridline]
    ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM


def stacked_chart(
    buckets: list[dt.date], series: list[tuple[str, list[int]]], by_month: bool
) -> StackedChart:
    """A bar per bucket (a day or a month), stacked by series, largest series at the bottom.
    Negative values (more refunded than used) draw as zero."""
    totals = [sum(max(values[n], 0) for _, values in series) for n in range(len(buckets))]
    top = nice_ceiling(max(totals, default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(buckets), 1)
    gap = min(slot * 0.25, 6)
    segments = []
    for n, start in enumerate(buckets):
        base: float = HEIGHT - BOTTOM
        for index, (name, values) in enumerate(series):
            value = max(values[n], 0)
            if not value:
                continue
            height = plot_height * value / top
            base -= height
            segments.append(
                Segment(index, name, start, value, LEFT + n * slot + gap / 2, base, slot - gap, height)
            )
    gridlines = [
        Gridline(HEIGHT - BOTTOM - plot_height * share, short_number(int(top * share)))
        for share in (0, 0.5, 1)
    ]
    every = max(1, round(len(buckets) / 8))
    ticks = [
        Tick(LEFT + n * slot + slot / 2, f"{start:%b}" if by_month else f"{start:%-d %b}")
        for n, start in enumerate(buckets)
        if n % every == 0
    ]
    return StackedChart(segments, [name for name, _ in series], gridlines, ticks)
