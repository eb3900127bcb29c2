"""Staff work in the Django admin; a manual adjustment there is a new entry, never an edit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing.models import Organization, Plan
from ledger import postings
from ledger.models import Account, Entry, EntryKind

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    client = Client()
    client.force_login(staff)
    return client


def _adjust(client: Client, account: Account, amount: str, memo: str) -> Response:
    url = reverse("admin:ledger_account_change", args=[account.pk])
    return client.post(
        url, {"time_zone": account.time_zone, "adjust_by": amount, "adjust_memo": memo}, follow=True
    )


def test_a_manual_adjustment_in_the_admin_is_posted_as_an_entry(
    staff_client: Client, org: Organization
) -> None:
    before = list(Entry.objects.filter(account=org.account).values_list("id", "amount", "balance_after"))
    response = _adjust(staff_client, org.account, "-300", "Duplicate pack refunded by card")
    assert response.status_code == 200
    assert "Posted an adjustment of -300" in response.text
    entry = Entry.objects.filter(account=org.account).latest("id")
    assert (entry.kind, entry.amount, entry.balance_after) == (EntryKind.ADJUSTMENT, -300, 4_700)
    assert entry.memo.startswith("Duplicate pack refunded by card")
    # The earlier entries are exactly as they were.
    assert (
        list(
            Entry.objects.filter(account=org.account, id__lte=before[-1][0]).values_list(
                "id", "amount", "balance_after"
            )
        )
        == before
    )
    org.account.refresh_from_db()
    assert org.account.balance == 4_700


def test_an_adjustment_needs_a_reason_and_changes_nothing_without_one(
    staff_client: Client, org: Organization
) -> None:
    count = Entry.objects.count()
    response = _adjust(staff_client, org.account, "500", "")
    assert "Say why the balance is adjusted." in response.text
    assert Entry.objects.count() == count


def test_an_adjustment_beyond_the_available_credits_is_a_form_error(
    staff_client: Client, org: Organization
) -> None:
    postings.reserve(org.account, 1_000, key="running-job", operation="training_a10g_per_minute")
    entries = Entry.objects.count()
    url = reverse("admin:ledger_account_change", args=[org.account.pk])
    response = staff_client.post(
        url, {"time_zone": "Europe/Berlin", "adjust_by": "-4500", "adjust_memo": "Chargeback"}
    )
    # 5,000 credits, 1,000 of them held: the ledger refuses, and the form says why.
    assert response.status_code == 200
    assert "This needs 4500 credits; 4000 are available." in response.text
    assert "Please correct the error below." in response.text
    assert Entry.objects.count() == entries
    org.account.refresh_from_db()
    assert (org.account.balance, org.account.held, org.account.time_zone) == (5_000, 1_000, "UTC")
    # Within the available credits the same form posts it.
    response = _adjust(staff_client, org.account, "-4000", "Chargeback")
    assert "Posted an adjustment of -4000; balance 1000." in response.text


def test_entries_cannot_be_edited_or_deleted_in_the_admin(staff_client: Client, org: Organization) -> None:
    entry = Entry.objects.filter(account=org.account).first()
    assert entry is not None
    change = staff_client.post(reverse("admin:ledger_entry_change", args=[entry.pk]), {"amount": 1})
    delete = staff_client.post(reverse("admin:ledger_entry_delete", args=[entry.pk]), {"post": "yes"})
    assert change.status_code == 403 and delete.status_code == 403
    assert Entry.objects.get(pk=entry.pk).amount == entry.amount


def _edit_plan(client: Client, plan: Plan, monthly_credits: str) -> None:
    url = reverse("admin:billing_plan_change", args=[plan.pk])
    form = {
        field: getattr(plan, field)
        for field in (
            "slug",
            "name",
            "monthly_fee_cents",
            "currency",
            "rollover_months",
            "audit_window_days",
            "sort_order",
        )
    }
    form |= {
        "monthly_credits": monthly_credits,
        "storage_limit_gb": plan.storage_limit_gb or "",
        "deployments_limit": plan.deployments_limit or "",
        "seats_limit": plan.seats_limit or "",
    }
    response = client.post(url, form, follow=True)
    assert response.status_code == 200 and "was changed successfully" in response.text, response.text[:2000]


def test_a_plan_made_unlimited_in_the_admin_stops_refusing_its_subscribers(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    other_plan = Plan.objects.get(slug="free")
    other_org.subscription.plan = other_plan
    other_org.subscription.save()
    plan = org.subscription.plan
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(org.account, 6_000, key="before", operation="op")
    _edit_plan(staff_client, plan, "")
    org.account.refresh_from_db()
    assert org.account.unlimited
    assert postings.debit(org.account, 6_000, key="after", operation="op").balance == -1_000
    other_org.account.refresh_from_db()
    assert not other_org.account.unlimited  # on another plan: untouched
    _edit_plan(staff_client, plan, "10000")
    org.account.refresh_from_db()
    assert not org.account.unlimited
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(org.account, 1, key="limited-again", operation="op")
