from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from billing.models import Membership


def organization_menu(request: HttpRequest) -> dict[str, Any]:
    """The profile menu: the user's organizations, for switching between them."""
    if not request.user.is_authenticated:
        return {}
    memberships = Membership.objects.filter(user_id=request.user.pk or 0).select_related("organization")
    return {"menu_memberships": list(memberships)}
