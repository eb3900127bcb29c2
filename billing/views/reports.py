"""The usage report: credits used over any range of days, grouped by project, user,
resource class or operation, with a chart and the same as CSV. Managers only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from billing import charts, csv_files, formats
from billing.access import get_manager_membership
from billing.models import Organization
from billing.views.usage import BadPeriod, UsageProblem, problem_page
from ledger import reports
from ledger.periods import add_months

GROUP_NAMES = {
    "project": "Project",
    "user": "User",
    "resource_class": "Resource class",
    "operation": "Operation",
}
LONGEST = 3 * 366  # days a report may span


def _query(request: HttpRequest, org: Organization) -> tuple[dt.date, dt.date, str, dict[str, str]]:
    """The range (default: this month and the two before, to today), the grouping and the
    filters asked for; a problem (400) for anything malformed."""
    today = org.account.local_date(timezone.now())
    try:
        start = dt.date.fromisoformat(
            request.GET.get("from") or add_months(today.replace(day=1), -2).isoformat()
        )
        end = dt.date.fromisoformat(request.GET.get("to") or today.isoformat())
    except ValueError as error:
        raise BadPeriod(
            "Give dates in the form YYYY-MM-DD, for example from=2026-01-01&to=2026-03-31."
        ) from error
    group = request.GET.get("group") or "project"
    if group not in reports.GROUPS:
        raise BadPeriod(f"Group by one of: {', '.join(reports.GROUPS)}.")
    if end < start:
        raise BadPeriod(f"The report ends ({formats.day(end)}) before it starts ({formats.day(start)}).")
    if (end - start).days >= LONGEST:
        raise BadPeriod("A report spans at most three years.")
    filters = {name: request.GET[name] for name in reports.GROUPS if name != group and request.GET.get(name)}
    if any("\x00" in value for value in filters.values()):
        raise BadPeriod("A filter cannot hold a NUL character.")
    return start, end, group, filters


@login_required
@require_GET
def usage_report(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    try:
        start, end, group, filters = _query(request, org)
    except UsageProblem as problem:
        return problem_page(request, org, problem)
    report = reports.usage_report(org.account, start, end, group, filters)
    query = {"from": start.isoformat(), "to": end.isoformat(), "group": group, **filters}
    context: dict[str, Any] = {
        "org": org,
        "membership": membership,
        "report": report,
        "group_name": GROUP_NAMES[group],
        "groups": GROUP_NAMES,
        "filters": [
            (GROUP_NAMES[name], value, _url(org, {k: v for k, v in query.items() if k != name}))
            for name, value in filters.items()
        ],
        "chart": charts.stacked_chart(report.buckets, reports.chart_series(report), report.by_month),
        "csv_url": reverse("usage_report_csv", args=[org.slug]) + "?" + urlencode(query),
        # Each group's row links to the same range, that group only, by the next dimension.
        "table": [
            (g, _url(org, {**query, group: g.name, "group": _next_group(group, filters)}) if g.name else None)
            for g in report.groups
        ],
        "not_from_jobs": 0 if filters else sum(report.not_from_jobs),
        "no_name": reports.NO_NAME,
    }
    return render(request, "billing/usage_report.html", context)


@login_required
@require_GET
def usage_report_csv(request: HttpRequest, slug: str) -> StreamingHttpResponse | HttpResponse:
    """The report as CSV: one row per day (or month) and group, streamed."""
    org = get_manager_membership(request.user, slug).organization
    try:
        start, end, group, filters = _query(request, org)
    except UsageProblem as problem:
        return problem_page(request, org, problem)
    report = reports.usage_report(org.account, start, end, group, filters)

    rows = (
        (first.isoformat(), last.isoformat(), name, used) for first, last, name, used in reports.rows(report)
    )
    return csv_files.response(
        ["from", "to", group, "credits_used"], rows, f"tally-{org.slug}-{group}-{start}-{end}.csv"
    )


def _url(org: Organization, query: dict[str, str]) -> str:
    return reverse("usage_report", args=[org.slug]) + "?" + urlencode(query)


def _next_group(group: str, filters: dict[str, str]) -> str:
    """Where a click on a group leads: the same range, that group only, by the next dimension."""
    taken = {group, *filters}
    return next((g for g in reports.GROUPS if g not in taken), group)
