"""Where the credits went: read-only views of an account's months, days and jobs.

The day table of a month reads the daily rollups (an open month) or the statement's frozen
rows (a closed month), so it costs O(days), never a scan of the month's entries. Only a
day's job detail and the CSV export read entries, through the (account, local_date) index.

Every figure has one meaning (``ledger.models.Figures``): on every day and month,
``balance == previous balance + top_ups - credits_used``, where credits used are the
jobs' debits less their refunds, plus expired credits and negative adjustments. A day's
job rows (and its expiry and adjustment rows) add up to its credits used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator

from django.db.models import Case, CharField, F, Sum, Value, When

from ledger.models import Account, DailyRollup, Entry, EntryKind, Figures, Statement, StatementDay
from ledger.periods import add_months, current_period, month_bounds

# The entries that make up "credits used": everything that is not a top-up (a negative
# adjustment is; a positive one is a top-up).
USED_KINDS = [EntryKind.DEBIT, EntryKind.REFUND, EntryKind.EXPIRY, EntryKind.ADJUSTMENT]
EXPORT_CHUNK = 2_000

Day = DailyRollup | StatementDay  # one day with activity: its figures and closing balance


@dataclasses.dataclass(frozen=True)
class JobUsage:
    """What one job (or, for postings without a job, one operation) used on a day."""

    date: dt.date
    name: str
    project: str
    user: str
    resource_class: str
    credits_used: int
    has_job: bool


@dataclasses.dataclass(frozen=True)
class PeriodUsage:
    """A month: its statement (the stored one, or for a month without one the same figures
    computed from the rollups, unsaved) and its days with activity, newest first."""

    period: dt.date
    is_current: bool
    first_day: dt.date
    last_day: dt.date
    days: list[Day]
    statement: Statement

    @property
    def closed(self) -> bool:
        return self.statement.pk is not None

    def credits_used_by_date(self) -> list[tuple[dt.date, int]]:
        """Every calendar day of the month, oldest first (days to come count zero)."""
        used = {day.date: day.credits_used for day in self.days}
        count = (add_months(self.period, 1) - self.first_day).days
        dates = (self.first_day + dt.timedelta(days=n) for n in range(count))
        return [(date, used.get(date, 0)) for date in dates]


def periods(account: Account, now: dt.datetime) -> list[dt.date]:
    """The months that can be shown, newest first: the current month back to the first
    month with any activity."""
    current = current_period(now, account.tzinfo)
    first_day = (
        DailyRollup.objects.filter(account=account).order_by("date").values_list("date", flat=True).first()
    )
    first = min(first_day.replace(day=1), current) if first_day else current
    months = []
    month = current
    while month >= first:
        months.append(month)
        month = add_months(month, -1)
    return months


def period_usage(account: Account, period: dt.date, now: dt.datetime) -> PeriodUsage:
    """The month starting ``period``, from its statement if it has one."""
    is_current = period == current_period(now, account.tzinfo)
    last_of_month = add_months(period, 1) - dt.timedelta(days=1)
    last_day = min(now.astimezone(account.tzinfo).date(), last_of_month) if is_current else last_of_month
    stored = Statement.objects.filter(account=account, period=period).prefetch_related("days")
    statement = None if is_current else stored.first()
    if statement is not None:
        days: list[Day] = sorted(statement.days.all(), key=lambda day: day.date, reverse=True)
    else:
        days = rollup_days(account, period, last_of_month)
        statement = month_figures(account, period, days)
    return PeriodUsage(
        period=period,
        is_current=is_current,
        first_day=period,
        last_day=last_day,
        days=days,
        statement=statement,
    )


def month_figures(account: Account, period: dt.date, days: list[Day]) -> Statement:
    """A month without a statement, as its statement would read today (unsaved)."""
    brought_forward = _balance_before(account, period, days)
    starts_at, ends_at = month_bounds(period, account.tzinfo)
    parts = {part: sum(getattr(day, part) for day in days) for part in Figures.PARTS}
    return Statement(
        account=account,
        period=period,
        starts_at=starts_at,
        ends_at=ends_at,
        brought_forward=brought_forward,
        closing_balance=days[0].balance if days else brought_forward,
        **parts,
    )


def rollup_days(account: Account, first: dt.date, last: dt.date) -> list[Day]:
    """Days with activity between ``first`` and ``last`` from the rollups, newest first."""
    rollups = DailyRollup.objects.filter(account=account, date__gte=first, date__lte=last)
    return list(rollups.order_by("-date"))


def _balance_before(account: Account, period: dt.date, days: list[Day]) -> int:
    if days:
        oldest = days[-1]
        return oldest.balance - oldest.top_ups + oldest.credits_used
    before = (
        DailyRollup.objects.filter(account=account, date__lt=period)
        .order_by("-date")
        .values_list("balance", flat=True)
        .first()
    )
    return before or 0


def day_jobs(account: Account, date: dt.date) -> list[JobUsage]:
    """The jobs that used credits on ``date``, heaviest first; one query on the
    (account, local_date) index."""
    return list(_job_rows(account, date, date))


def export_rows(account: Account, usage: PeriodUsage) -> Iterator[Day | JobUsage]:
    """The month oldest day first: each day with activity, followed by its jobs.

    The jobs are streamed from a server-side cursor and merged with the (few) days, so
    memory stays flat however many entries the month has."""
    days = iter(sorted(usage.days, key=lambda day: day.date))
    jobs = _job_rows(account, usage.first_day, usage.last_day, chunk_size=EXPORT_CHUNK)
    yield from _merge(days, jobs)


def _merge(days: Iterator[Day], jobs: Iterable[JobUsage]) -> Iterator[Day | JobUsage]:
    day = next(days, None)
    for job in jobs:
        while day is not None and day.date <= job.date:
            yield day
            day = next(days, None)
        yield job
    while day is not None:
        yield day
        day = next(days, None)


def _job_rows(
    account: Account, first: dt.date, last: dt.date, chunk_size: int | None = None
) -> Iterator[JobUsage]:
    # Postings without a job (an expiry, say) are grouped under their operation.
    unassigned = Case(
        When(job__isnull=True, then=F("operation")), default=Value(""), output_field=CharField()
    )
    rows = (
        Entry.objects.filter(account=account, local_date__range=(first, last), kind__in=USED_KINDS)
        .exclude(kind=EntryKind.ADJUSTMENT, amount__gt=0)
        .annotate(unassigned=unassigned)
        .values_list(
            "local_date",
            "job_id",
            "unassigned",
            "job__external_id",
            "job__name",
            "job__project",
            "job__user",
            "job__resource_class",
        )
        .annotate(change=Sum("amount"))
        .order_by("local_date", "change", "job_id", "unassigned")
    )
    iterator = rows.iterator(chunk_size=chunk_size) if chunk_size else iter(rows)
    for date, job_id, operation, external_id, name, project, user, resource_class, change in iterator:
        yield JobUsage(
            date=date,
            name=(name or external_id) if job_id else operation,
            project=project or "",
            user=user or "",
            resource_class=resource_class or "",
            credits_used=-change,
            has_job=job_id is not None,
        )
