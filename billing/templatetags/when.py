"""``{% load when %}``: dates and times in the one format of ``billing.formats``.

``{{ d|day }}`` 6 Dec 2026, ``{{ t|moment }}`` 6 Dec 2026, 14:02 (in the template's time
zone: wrap the page in ``{% timezone org.account.time_zone %}``), ``{{ d|month }}``
December 2026, ``{{ d|day_in_month }}`` 6 Dec, ``{{ d|weekday }}`` Sun 6 Dec, and
``{{ t|ago }}`` "just now" or "3 hours ago".
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import dateformat

from billing import formats

register = template.Library()


@register.filter(expects_localtime=True)
def day(value: dt.date | None) -> str:
    return formats.day(value) if value else ""


@register.filter(expects_localtime=True)
def moment(value: dt.datetime | None) -> str:
    return formats.moment(value) if value else ""


@register.filter
def month(value: dt.date | None) -> str:
    return formats.month(value) if value else ""


@register.filter(expects_localtime=True)
def day_in_month(value: dt.date | None) -> str:
    return dateformat.format(value, formats.DAY_IN_MONTH) if value else ""


@register.filter(expects_localtime=True)
def weekday(value: dt.date | None) -> str:
    return dateformat.format(value, formats.WEEKDAY) if value else ""


@register.filter
def ago(value: dt.datetime | None) -> str:
    return formats.ago(value) if value else ""
