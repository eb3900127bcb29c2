"""Time in the ledger: months in an account's own time zone."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

PERIOD_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def add_months(period: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after the month of ``period``."""
    index = period.year * 12 + period.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def month_start(period: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Local midnight on the first day of ``period``'s month, as an aware datetime."""
    return dt.datetime(period.year, period.month, 1, tzinfo=tz)


def month_bounds(period: dt.date, tz: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The instants a month starts and ends (exclusive) in time zone ``tz``."""
    return month_start(period, tz), month_start(add_months(period, 1), tz)


def current_period(now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.date:
    """The first day of the month that ``now`` falls in, locally."""
    return now.astimezone(tz).date().replace(day=1)


def next_month_start(now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Local midnight on the 1st of the month after ``now``'s: when monthly credits reset."""
    return month_start(add_months(current_period(now, tz), 1), tz)


def parse_period(text: str) -> dt.date:
    """``YYYY-MM`` to the month's first day; ValueError for anything else."""
    match = PERIOD_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a month in the form YYYY-MM.")
    return dt.date(int(match[1]), int(match[2]), 1)
