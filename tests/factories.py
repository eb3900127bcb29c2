"""Small factories for tests: organizations on a plan, people with roles, funded accounts."""

from __future__ import annotations

import itertools
import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from billing import demo
from billing.models import Membership, Organization, Plan, Role, Subscription
from ledger import postings
from ledger.models import LotSource

PASSWORD = "test-password"
_numbers = itertools.count(1)


def catalog() -> None:
    """Plans, packs and prices, as the demo defines them."""
    demo.seed_catalog()


def make_org(
    plan: str = "standard", *, slug: str | None = None, time_zone: str = "UTC", credits: int = 0
) -> Organization:
    catalog()
    slug = slug or f"org-{next(_numbers)}-{uuid.uuid4().hex[:6]}"
    org = Organization.objects.create(name=slug.replace("-", " ").title(), slug=slug, time_zone=time_zone)
    Subscription.objects.create(organization=org, plan=Plan.objects.get(slug=plan))
    org.account.refresh_from_db()
    if credits:
        fund(org, credits)
    return org


def fund(org: Organization, credits: int, source: LotSource = LotSource.PURCHASE) -> None:
    postings.post_top_up(
        org.account, credits, key=f"fund-{uuid.uuid4()}", source=source, operation="credit_pack_test"
    )
    org.account.refresh_from_db()


def make_user(org: Organization | None = None, role: Role = Role.MEMBER, username: str | None = None) -> User:
    user = get_user_model().objects.create_user(
        username or f"user-{next(_numbers)}-{uuid.uuid4().hex[:6]}",
        password=PASSWORD,
        email=f"{uuid.uuid4().hex[:8]}@example.com",
    )
    if org is not None:
        Membership.objects.create(organization=org, user=user, role=role)
    return user
