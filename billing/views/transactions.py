"""Transactions: every ledger entry within the plan's audit window, newest first, filtered
by kind, project or job, a page at a time. Pages are keyed by entry id (``before``), so
entries posted while a manager pages through never repeat or skip a row."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from billing.access import get_manager_membership
from billing.views.usage import BadPeriod, UsageProblem, problem_page
from ledger.models import Entry, EntryKind

PAGE = 50


@login_required
@require_GET
def transactions(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    window = org.audit_window_days
    since = timezone.now() - dt.timedelta(days=window)
    try:
        filters = _filters(request)
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except (UsageProblem, ValueError):
        return problem_page(
            request,
            org,
            BadPeriod("Filter by a kind of entry, a project or a job id, and page with before=<entry id>."),
        )
    entries = Entry.objects.filter(account=org.account, created_at__gte=since).select_related("job")
    if filters.get("kind"):
        entries = entries.filter(kind=filters["kind"])
    if filters.get("project"):
        entries = entries.filter(job__project=filters["project"])
    if filters.get("job"):
        entries = entries.filter(job__external_id=filters["job"])
    if before is not None:
        entries = entries.filter(id__lt=before)
    rows = list(entries.order_by("-id")[: PAGE + 1])
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    base = reverse("transactions", args=[org.slug])
    context = {
        "org": org,
        "membership": membership,
        "entries": rows,
        "filters": filters,
        "kinds": EntryKind.choices,
        "window_days": window,
        "next_url": f"{base}?{urlencode({**filters, 'before': str(rows[-1].pk)})}" if more else None,
        "first_url": f"{base}?{urlencode(filters)}" if before is not None else None,
    }
    return render(request, "billing/transactions.html", context)


def _filters(request: HttpRequest) -> dict[str, str]:
    filters = {name: request.GET.get(name, "").strip() for name in ("kind", "project", "job")}
    if filters["kind"] and filters["kind"] not in EntryKind.values:
        raise BadPeriod(f"No kind of entry {filters['kind']!r}.")
    if any("\x00" in value for value in filters.values()):
        raise BadPeriod("A filter cannot hold a NUL character.")
    return {name: value for name, value in filters.items() if value}
