"""The review: what in the ledger deserves a look, each finding linked to its transactions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing import review as rules
from billing.access import get_manager_membership


@login_required
@require_GET
def review(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    findings = rules.review(org, timezone.now())
    cache.set(f"review-count:{org.pk}", len(findings), rules.BADGE_SECONDS)  # the badge follows
    context = {"org": org, "membership": membership, "findings": findings, "lookback": rules.LOOKBACK.days}
    return render(request, "billing/review.html", context)
