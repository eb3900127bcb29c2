"""The organization each person used last, so that ``/`` takes them back to it.

The middleware notes it after any organization page a signed-in person opened (status
200: they are a member), in the database so it outlives the session; the session keeps
the slug last noted, so only a switch costs a write.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse

from billing.models import Membership
from team.models import RecentOrganization

SESSION_KEY = "recent_organization"


def membership_for_home(user: AbstractBaseUser | AnonymousUser) -> Membership | None:
    """The membership ``/`` opens: of the organization used last, else the first by name."""
    memberships = Membership.objects.filter(user_id=user.pk or 0).select_related("organization")
    recent = RecentOrganization.objects.filter(user_id=user.pk or 0).values("organization_id")
    return (
        memberships.filter(organization_id__in=recent).first()
        or memberships.order_by("organization__name").first()
    )


def remember(request: HttpRequest, slug: str) -> None:
    if request.session.get(SESSION_KEY) == slug:
        return
    membership = Membership.objects.filter(user_id=request.user.pk or 0, organization__slug=slug).first()
    if membership is None:
        return
    RecentOrganization.objects.update_or_create(
        user_id=request.user.pk or 0, defaults={"organization_id": membership.organization_id}
    )
    request.session[SESSION_KEY] = slug


class RememberOrganizationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = request.resolver_match
        if (
            response.status_code == 200
            and request.method == "GET"
            and match is not None
            and match.route.startswith("orgs/")
            and request.user.is_authenticated
        ):
            remember(request, match.kwargs["slug"])
        return response
