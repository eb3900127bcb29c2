"""Dates and times as every page writes them: one format, here, for templates (the
``when`` filters) and for messages written in Python alike.

A day is "6 Dec 2026", a moment "6 Dec 2026, 14:02" (in the time zone the caller gives,
or the template's current one), a month "December 2026", and a moment within the last
minute "just now", never "0 minutes ago".
"""

from __future__ import annotations

import datetime as dt

from django.utils import dateformat, timezone
from django.utils.timesince import timesince

DAY = "j M Y"  # 6 Dec 2026
MOMENT = "j M Y, H:i"  # 6 Dec 2026, 14:02
MONTH = "F Y"  # December 2026
DAY_IN_MONTH = "j M"  # 6 Dec: where the month and year are already said
WEEKDAY = "D j M"  # Sun 6 Dec: the usage table's days
JUST_NOW = dt.timedelta(minutes=1)


def day(value: dt.date) -> str:
    return dateformat.format(value, DAY)


def moment(value: dt.datetime, tz: dt.tzinfo | None = None) -> str:
    """``value`` in ``tz`` (default: the current time zone, which a template's
    ``{% timezone %}`` sets)."""
    return dateformat.format(timezone.localtime(value, tz), MOMENT)


def month(value: dt.date) -> str:
    return dateformat.format(value, MONTH)


def ago(value: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long ago, in words: "just now" within the minute, else "3 hours ago"."""
    now = now or timezone.now()
    if now - value < JUST_NOW:
        return "just now"
    return f"{timesince(value, now)} ago"


def duration(value: dt.timedelta) -> str:
    """A length of time in its largest whole unit: "3 days", "5 hours", "12 minutes"."""
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "under a minute"
