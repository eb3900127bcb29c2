"""Usage reports: credits used over any range of days, grouped by the jobs' project, user,
resource class or operation, per day or per month.

Served from the group rollups the posting functions keep (``GroupDay``, per day) and the
month close sums (``GroupMonth``, per closed month), so a report never scans entries, and
a year's report, month by month, reads twelve rows per group plus the open month's days.
Credits used that no job accounts for (expired credits and negative adjustments) come from
the daily rollups, so a report's total is the day table's credits used over the same days,
to the credit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator

from django.db.models import F, Sum
from django.db.models.functions import TruncMonth

from ledger.models import Account, DailyRollup, GroupDay, GroupMonth, Statement
from ledger.periods import add_months

GROUPS = GroupDay.GROUPS  # project, user, resource_class, operation
# Ranges up to this many days are shown day by day; longer ones month by month.
DAILY_UP_TO = 62
TOP = 6  # groups drawn on the chart; the rest are added up as "other"


@dataclasses.dataclass(frozen=True)
class GroupUsage:
    name: str  # "" when the jobs did not say
    credits_used: int  # debits less refunds over the range
    series: list[int]  # per bucket, as Report.buckets


@dataclasses.dataclass(frozen=True)
class Report:
    start: dt.date
    end: dt.date  # inclusive
    group: str
    filters: dict[str, str]
    by_month: bool
    buckets: list[dt.date]  # each day, or each month's first day
    groups: list[GroupUsage]  # largest first
    not_from_jobs: list[int]  # expired credits and negative adjustments, per bucket
    day_table_total: int  # the day table's credits used over the same days (no filters)

    @property
    def total(self) -> int:
        return sum(g.credits_used for g in self.groups) + (0 if self.filters else sum(self.not_from_jobs))

    def bucket_end(self, bucket: dt.date) -> dt.date:
        last = add_months(bucket, 1) - dt.timedelta(days=1) if self.by_month else bucket
        return min(last, self.end)


def usage_report(
    account: Account, start: dt.date, end: dt.date, group: str, filters: dict[str, str] | None = None
) -> Report:
    """Credits used from ``start`` to ``end`` (inclusive, the account's days) by ``group``,
    only jobs matching ``filters`` (e.g. ``{"project": "vision"}``) if given."""
    if group not in GROUPS:
        raise ValueError(f"A report groups by one of {', '.join(GROUPS)}.")
    filters = {name: value for name, value in (filters or {}).items() if name in GROUPS}
    by_month = (end - start).days + 1 > DAILY_UP_TO
    buckets = _buckets(start, end, by_month)
    index = {bucket: n for n, bucket in enumerate(buckets)}
    bucket = TruncMonth("date") if by_month else F("date")

    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(buckets))
    # Closed months wholly in the range are read from their month sums; the days around
    # them (and every day, for a filtered or day-by-day report) from the group days.
    whole = _closed_months(account, start, end) if by_month and not filters else []
    if whole:
        sums = GroupMonth.objects.filter(account=account, dimension=group, month__in=whole)
        for name, month, debits, refunds in sums.values_list("name", "month", "debits", "refunds"):
            series[name][index[month]] += debits - refunds
        spans = [(start, whole[0] - dt.timedelta(days=1)), (add_months(whole[-1], 1), end)]
    else:
        spans = [(start, end)]
    for first, last in spans:
        if first > last:
            continue
        rows = (
            GroupDay.objects.filter(account=account, date__range=(first, last), **filters)
            .values(name=F(group), bucket=bucket)
            .annotate(debits=Sum("debits"), refunds=Sum("refunds"))
            .order_by()
        )
        for row in rows:
            series[row["name"]][index[row["bucket"]]] += row["debits"] - row["refunds"]
    groups = sorted(
        (GroupUsage(name, sum(values), values) for name, values in series.items()),
        key=lambda g: (-g.credits_used, g.name),
    )

    not_from_jobs = [0] * len(buckets)
    day_table_total = 0
    days = DailyRollup.objects.filter(account=account, date__range=(start, end)).values(bucket=bucket)
    for day in days.annotate(
        debits=Sum("debits"), refunds=Sum("refunds"), expired=Sum("expired"), adjustments=Sum("adjustments")
    ).order_by():
        not_from_jobs[index[day["bucket"]]] += day["expired"] + day["adjustments"]
        day_table_total += day["debits"] - day["refunds"] + day["expired"] + day["adjustments"]
    return Report(start, end, group, filters, by_month, buckets, groups, not_from_jobs, day_table_total)


def chart_series(report: Report) -> list[tuple[str, list[int]]]:
    """The largest groups, each with its series, then the rest added up as "Other"."""
    shown = [(g.name, g.series) for g in report.groups[:TOP]]
    rest = report.groups[TOP:]
    if rest:
        shown.append(("Other", [sum(values) for values in zip(*(g.series for g in rest), strict=True)]))
    return shown


NOT_FROM_JOBS = "(not from jobs: expired credits and adjustments)"
NO_NAME = "(none given)"


def rows(report: Report) -> Iterator[tuple[dt.date, dt.date, str, int]]:
    """(first day, last day, group, credits used) per bucket and group with usage, and then
    per bucket what no job accounts for: the report as a table (its CSV)."""
    for n, bucket in enumerate(report.buckets):
        end = report.bucket_end(bucket)
        start = max(bucket, report.start)
        for group in report.groups:
            if group.series[n]:
                yield start, end, group.name or NO_NAME, group.series[n]
        if report.not_from_jobs[n] and not report.filters:
            yield start, end, NOT_FROM_JOBS, report.not_from_jobs[n]


def _closed_months(account: Account, start: dt.date, end: dt.date) -> list[dt.date]:
    """The closed months (with a statement) that lie wholly within the range, in order:
    consecutive, since months close in order."""
    months = Statement.objects.filter(account=account, period__gte=start, period__lte=end).order_by("period")
    return [
        month
        for month in months.values_list("period", flat=True)
        if add_months(month, 1) <= end + dt.timedelta(days=1)
    ]


def _buckets(start: dt.date, end: dt.date, by_month: bool) -> list[dt.date]:
    if not by_month:
        return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    months, month = [], start.replace(day=1)
    while month <= end:
        months.append(month)
        month = add_months(month, 1)
    return months
