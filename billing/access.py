"""Who may see what. One helper per object kind: outsiders get 404, members without the
manager role get 403."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from billing.models import Membership, Organization


def get_membership(user: AbstractBaseUser | AnonymousUser, slug: str) -> Membership:
    """The user's membership of organization ``slug``; 404 for anyone outside it."""
    membership = (
        Membership.objects.select_related(
            "organization", "organization__account", "organization__subscription__plan"
        )
        .filter(organization__slug=slug, user_id=user.pk or 0)
        .first()
    )
    if membership is None:
        raise Http404("No such organization.")
    return membership


def get_managed_organization(user: AbstractBaseUser | AnonymousUser, slug: str) -> Organization:
    """Organization ``slug`` if the user manages it; 403 for its members, 404 for others."""
    return get_manager_membership(user, slug).organization


def get_manager_membership(user: AbstractBaseUser | AnonymousUser, slug: str) -> Membership:
    """As ``get_managed_organization``, returning the membership (pages that show the
    profile menu need both)."""
    membership = get_membership(user, slug)
    if not membership.is_manager:
        raise PermissionDenied("Only managers can open this page.")
    return membership
