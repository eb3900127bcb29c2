"""Usage: the plan gauges, a month's day-by-day ledger with expandable jobs, past
statements, and the ledger CSV. Managers only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from billing import charts, csv_files, formats, gauges
from billing.access import get_manager_membership
from billing.models import Organization
from ledger import usage
from ledger.periods import parse_period
from team import members

CSV_HEADER = [
    "row_type",
    "date",
    "top_ups",
    "credits_used",
    "balance",
    "experiment",
    "project",
    "user",
    "resource_class",
]


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class UsageProblem(ValueError):
    """A month or day asked for that cannot be shown; the page says why, with its status."""

    status = 400
    title = "That is not a month or a day"


class BadPeriod(UsageProblem):
    pass


class NoUsage(UsageProblem):
    status = 404
    title = "No usage to show"


def problem_page(request: HttpRequest, org: Organization, problem: UsageProblem) -> HttpResponse:
    context = {"org": org, "title": problem.title, "message": str(problem)}
    return render(request, "billing/usage_problem.html", context, status=problem.status)


@login_required
@require_GET
def usage_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    now = timezone.now()
    try:
        period, months = _chosen_period(request, org, now)
        day = _date(request.GET["day"]) if request.GET.get("day") else None
    except UsageProblem as problem:
        return problem_page(request, org, problem)
    month = usage.period_usage(org.account, period, now)
    if day is not None and not month.first_day <= day <= month.last_day:
        return problem_page(request, org, NoUsage(f"{formats.day(day)} is not in {formats.month(period)}."))
    context: dict[str, Any] = {
        "org": org,
        "membership": membership,
        "month": month,
        "months": months,
        "chart": charts.daily_chart(month.credits_used_by_date()),
        "open_day": day,
        "open_day_jobs": usage.day_jobs(org.account, day) if day else [],
        "export_url": _with_query(reverse("usage_export", args=[org.slug]), period=f"{period:%Y-%m}"),
    }
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "billing/usage.html#period", context)  # no gauges there
    context["gauges"] = gauges.plan_gauges(org, seats_used=members.seats(org).used)
    return render(request, "billing/usage.html", context)


@login_required
@require_GET
def usage_day(request: HtmxHttpRequest, slug: str, day: str) -> HttpResponse:
    """One day's jobs, loaded when its row is expanded; without htmx, the page with it open."""
    org = get_manager_membership(request.user, slug).organization
    try:
        date = _date(day)
    except UsageProblem as problem:
        return problem_page(request, org, problem)
    period = date.replace(day=1)
    if period not in usage.periods(org.account, timezone.now()):
        return problem_page(request, org, NoUsage(f"{org.name} has no usage on {formats.day(date)}."))
    if not request.htmx:
        url = _with_query(reverse("usage", args=[org.slug]), period=f"{period:%Y-%m}", day=day)
        return redirect(f"{url}#day-{day}")
    context = {"org": org, "date": date, "jobs": usage.day_jobs(org.account, date)}
    return render(request, "billing/usage.html#day-jobs", context)


@login_required
@require_GET
def usage_export(request: HttpRequest, slug: str) -> StreamingHttpResponse | HttpResponse:
    """The month's ledger as CSV, streamed: day rows, each followed by its job rows."""
    org = get_manager_membership(request.user, slug).organization
    now = timezone.now()
    try:
        period, _ = _chosen_period(request, org, now)
    except UsageProblem as problem:
        return problem_page(request, org, problem)
    month = usage.period_usage(org.account, period, now)
    rows = (csv_row(row) for row in usage.export_rows(org.account, month))
    return csv_files.response(CSV_HEADER, rows, f"tally-{org.slug}-{period:%Y-%m}.csv")


def csv_row(row: usage.Day | usage.JobUsage) -> list[str | int]:
    date = row.date.isoformat()
    if isinstance(row, usage.JobUsage):
        return ["job", date, "", row.credits_used, "", row.name, row.project, row.user, row.resource_class]
    return ["day", date, row.top_ups, row.credits_used, row.balance, "", "", "", ""]


def _chosen_period(
    request: HttpRequest, org: Organization, now: dt.datetime
) -> tuple[dt.date, list[dt.date]]:
    """The month asked for (default: the current one) and the months there are; a problem
    for a malformed month (400) or one outside the organization's history (404)."""
    months = usage.periods(org.account, now)
    text = request.GET.get("period", "").strip()
    if not text:
        return months[0], months
    try:
        period = parse_period(text)
    except ValueError as error:
        raise BadPeriod(
            f"Invalid period {text!r}: use a month in the form YYYY-MM, for example {months[0]:%Y-%m}."
        ) from error
    if period not in months:
        raise NoUsage(
            f"{org.name} has no usage in {formats.month(period)}: its history runs from "
            f"{formats.month(months[-1])} to {formats.month(months[0])}."
        )
    return period, months


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise BadPeriod(f"Invalid day {text!r}: use a date in the form YYYY-MM-DD.") from error


def _with_query(url: str, **params: str) -> str:
    return f"{url}?{urlencode(params)}"
