"""Team test data: an invitation and the token its link carries."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import RequestFactory

from billing.models import Organization, Role
from team import members
from team.models import Invitation


def invite(org: Organization, manager: User, email: str, role: Role = Role.MEMBER) -> tuple[Invitation, str]:
    """Invite ``email`` as ``manager`` would, without a page or an email."""
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.7")
    request.user = manager
    return members.invite(request, org, email, role)


def link(token: str) -> str:
    return f"/invitations/{token}/"
