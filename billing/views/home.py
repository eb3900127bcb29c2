from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from billing.access import get_membership
from billing.models import Membership
from ledger import postings


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send a signed-in user to their first organization."""
    membership = (
        Membership.objects.filter(user_id=request.user.pk or 0)
        .select_related("organization")
        .order_by("organization__name")
        .first()
    )
    if membership is None:
        return render(request, "billing/no_organization.html")
    return redirect("organization", slug=membership.organization.slug)


@login_required
def organization(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_membership(request.user, slug)
    org = membership.organization
    return render(
        request,
        "billing/organization.html",
        {
            "org": org,
            "membership": membership,
            "account": org.account,
            "credits": postings.credits_now(org.account),
        },
    )
