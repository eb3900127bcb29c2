"""The price table: what each operation costs in credits. Every member may read it."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.access import get_membership
from ledger.models import Price


@login_required
@require_GET
def pricing(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_membership(request.user, slug)
    context = {"org": membership.organization, "membership": membership, "prices": Price.objects.all()}
    return render(request, "billing/pricing.html", context)
