"""When an account's credits run out at its recent pace, and what expires unused first.

The pace is the net daily burn of the last ``WINDOW`` days, from the daily rollups: debits
less refunds (expired credits and adjustments are not burn, and top-ups are not negative
burn). Its range is the mean's 95% interval from the days' spread (mean +- 2 standard
errors), so a steady history gives a tight range and a bursty one a wide range.

From the credits available now, the walk goes day by day through the account's lots the
way debits draw them (soonest expiry first): each day burns the pace, a lot past its expiry
loses what is left in it (wasted, not burnt), and scheduled renewals (given by the caller:
the ledger does not know plans) add lots. The day the lots cannot cover the burn is the
run-out. Nothing within ``HORIZON`` days: no run-out in sight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections.abc import Sequence

from django.db.models import F, Sum

from ledger.models import Account, DailyRollup
from ledger.postings import live_lots

WINDOW = 14  # days of history the pace is taken from
MIN_HISTORY = 7  # days of history needed before saying anything
HORIZON = 366  # days looked ahead
EXPIRING_WITHIN = 60  # days ahead for which expiring lots are listed


@dataclasses.dataclass(frozen=True)
class Renewal:
    """Credits the plan will grant on ``date`` (a local day), counting until the local day
    ``expires_on`` (None: they never expire)."""

    date: dt.date
    credits: int
    expires_on: dt.date | None


@dataclasses.dataclass(frozen=True)
class Expiring:
    date: dt.date  # the local day the credits stop counting
    credits: int  # what is left in those lots now (less what holds stand on)
    likely_unused: int  # what the walk at the pace leaves in them when they expire


@dataclasses.dataclass(frozen=True)
class Forecast:
    history_days: int  # days since the account's first activity, up to WINDOW
    daily_burn: int | None  # None: not enough history yet
    run_out_at: dt.date | None
    run_out_low: dt.date | None  # the earliest likely day (at the fast end of the range)
    run_out_high: dt.date | None  # the latest likely day
    expiring: list[Expiring]

    @property
    def enough_history(self) -> bool:
        return self.daily_burn is not None


@dataclasses.dataclass
class _Lot:
    remaining: int
    expires_on: dt.date | None  # the first local day it no longer counts
    key: int  # its place in the draw order (renewals after the lots there are)


def forecast(
    account: Account, now: dt.datetime, renewals: Sequence[Renewal] = (), window: int = WINDOW
) -> Forecast:
    today = account.local_date(now)
    first = (
        DailyRollup.objects.filter(account=account).order_by("date").values_list("date", flat=True).first()
    )
    history_days = min((today - first).days, window) if first else 0
    lots = _lots(account, now)
    if history_days < MIN_HISTORY:
        return Forecast(history_days, None, None, None, None, _expiring(lots, today, 0, renewals))
    since = today - dt.timedelta(days=history_days)
    burnt = dict(
        DailyRollup.objects.filter(account=account, date__gte=since, date__lt=today)
        .values_list("date")
        .annotate(burn=Sum(F("debits") - F("refunds")))
        .values_list("date", "burn")
    )
    days = [max(burnt.get(since + dt.timedelta(days=n), 0), 0) for n in range(history_days)]
    pace = statistics.fmean(days)
    margin = 2 * statistics.stdev(days) / math.sqrt(len(days)) if len(days) > 1 else 0.0
    run_out = None if account.unlimited else _run_out(lots, today, pace, renewals)
    fast = None if account.unlimited else _run_out(lots, today, pace + margin, renewals)
    slow = None if account.unlimited else _run_out(lots, today, max(pace - margin, 0), renewals)
    return Forecast(
        history_days,
        round(pace),
        run_out,
        fast,
        slow,
        _expiring(lots, today, pace, renewals),
    )


def _lots(account: Account, now: dt.datetime) -> list[_Lot]:
    """The live lots in draw order, less what pending holds stand on (their settles draw
    first, so the held credits come off the front)."""
    held = account.held
    lots = []
    for key, lot in enumerate(live_lots(account, now)):
        take = min(held, lot.remaining)
        held -= take
        expires_on = None
        if lot.expires_at is not None:
            local = lot.expires_at.astimezone(account.tzinfo)
            # A lot that expires at local midnight is gone that day; later in a day, the next.
            expires_on = expires_on_day(local)
        lots.append(_Lot(lot.remaining - take, expires_on, key))
    return lots


def expires_on_day(local: dt.datetime) -> dt.date:
    """The first local day on which credits expiring at ``local`` no longer count: that day
    when they expire at midnight, else the next."""
    return local.date() if local.time() == dt.time(0) else local.date() + dt.timedelta(days=1)


def _walk(
    lots: list[_Lot], today: dt.date, pace: float, renewals: Sequence[Renewal], days: int
) -> tuple[dt.date | None, dict[int, int]]:
    """Burn ``pace`` a day for ``days`` days from ``today``: the first day the lots cannot
    cover it (None if none), and what each lot (by key) still held when it expired."""
    pool = [dataclasses.replace(lot) for lot in lots]
    wasted: dict[int, int] = {}
    owed = 0.0  # fractions of a credit carried from day to day
    for n in range(days):
        day = today + dt.timedelta(days=n)
        for renewal in renewals:
            if renewal.date == day:
                pool.append(_Lot(renewal.credits, renewal.expires_on, 10**9 + n))
        for lot in pool:
            if lot.expires_on is not None and lot.expires_on <= day and lot.remaining:
                wasted[lot.key] = lot.remaining
                lot.remaining = 0
        pool.sort(key=lambda lot: (lot.expires_on is None, lot.expires_on or day, lot.key))
        owed += pace
        need = int(owed)
        owed -= need
        for lot in pool:
            take = min(lot.remaining, need)
            lot.remaining -= take
            need -= take
        if need > 0:
            return day, wasted
    return None, wasted


def _run_out(lots: list[_Lot], today: dt.date, pace: float, renewals: Sequence[Renewal]) -> dt.date | None:
    if pace <= 0:
        return None
    return _walk(lots, today, pace, renewals, HORIZON)[0]


def _expiring(lots: list[_Lot], today: dt.date, pace: float, renewals: Sequence[Renewal]) -> list[Expiring]:
    """The lots that expire within EXPIRING_WITHIN days, by day: what they hold now and
    what the walk at ``pace`` leaves in them when they expire."""
    limit = today + dt.timedelta(days=EXPIRING_WITHIN)
    soon = [lot for lot in lots if lot.expires_on is not None and lot.expires_on <= limit and lot.remaining]
    if not soon:
        return []
    _, wasted = _walk(lots, today, pace, renewals, EXPIRING_WITHIN + 1)
    by_day: dict[dt.date, list[int]] = {}
    for lot in soon:
        assert lot.expires_on is not None
        figures = by_day.setdefault(lot.expires_on, [0, 0])
        figures[0] += lot.remaining
        figures[1] += wasted.get(lot.key, 0)
    return [Expiring(day, credits, unused) for day, (credits, unused) in sorted(by_day.items())]
