from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from billing.access import get_membership
from billing.api.reads import visible_entries
from ledger import postings, usage
from ledger.periods import current_period
from team import recent

# The overview's "Recent activity": the newest ledger entries, within the plan's audit
# window as the API's history is.
RECENT_ACTIVITY = 6


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send a signed-in user to the organization they used last (else their first)."""
    membership = recent.membership_for_home(request.user)
    if membership is None:
        return render(request, "billing/no_organization.html")
    return redirect("organization", slug=membership.organization.slug)


@login_required
def organization(request: HttpRequest, slug: str) -> HttpResponse:
    """The overview: everyone sees the credits; managers also this month's usage (the
    Usage page's figures, from the same read) and the latest ledger entries."""
    membership = get_membership(request.user, slug)
    org = membership.organization
    now = timezone.now()
    context: dict[str, Any] = {
        "org": org,
        "membership": membership,
        "account": org.account,
        "credits": postings.credits_now(org.account, now),
    }
    if membership.is_manager:
        context["month"] = usage.period_usage(org.account, current_period(now, org.account.tzinfo), now)
        since = now - dt.timedelta(days=org.audit_window_days)
        context["activity"] = visible_entries(org, since, RECENT_ACTIVITY)
    return render(request, "billing/organization.html", context)
