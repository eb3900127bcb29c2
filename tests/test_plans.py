"""Plan terms: Enterprise custom terms keep it unlimited; overrides set the monthly grant."""

from __future__ import annotations

import datetime as dt

import pytest

from billing.models import Plan
from ledger import postings
from ledger.models import Lot, LotSource
from tests.factories import make_org

pytestmark = pytest.mark.django_db

OCTOBER = dt.date(2026, 10, 1)


def test_an_enterprise_allocation_is_granted_and_the_account_is_still_never_refused() -> None:
    org = make_org("enterprise")
    subscription = org.subscription
    subscription.monthly_credits_override = 1_000
    subscription.save()
    org.account.refresh_from_db()
    assert org.account.unlimited
    subscription.renew(OCTOBER, now=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    lot = Lot.objects.get(account=org.account)
    assert (lot.source, lot.amount) == (LotSource.SUBSCRIPTION, 1_000)
    receipt = postings.debit(
        org.account,
        1_500,
        key="overage",
        operation="training_h100_per_minute",
        now=dt.datetime(2026, 10, 2, tzinfo=dt.UTC),
    )
    assert receipt.balance == -500  # the overage is invoiced, never refused


def test_a_standard_override_changes_the_grant_but_not_the_limit() -> None:
    org = make_org("standard")
    subscription = org.subscription
    subscription.monthly_credits_override = 12_000
    subscription.save()
    org.account.refresh_from_db()
    assert not org.account.unlimited
    subscription.renew(OCTOBER, now=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    lot = Lot.objects.get(account=org.account)
    assert lot.amount == 12_000
    # Standard credits expire at the end of their month, in the organization's time zone.
    assert lot.expires_at == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(
            org.account, 12_001, key="too-much", operation="op", now=dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
        )


def test_plans_are_data_with_the_audit_windows_of_the_brief() -> None:
    make_org("free")
    windows = dict(Plan.objects.values_list("slug", "audit_window_days"))
    assert windows == {"free": 30, "standard": 90, "professional": 180, "enterprise": 365}
