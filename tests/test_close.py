"""Closing a month, in process: statements, expiry by plan, invoices, renewals, catching
up, idempotency, the close_month command and the demo's closed months."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import closing, demo
from billing.models import CreditPack, Organization, Purchase, PurchaseStatus
from ledger.checks import account_breaks, ledger_breaks
from ledger.models import DailyRollup, Entry, EntryKind, Lot, LotSource, Statement
from ledger.periods import add_months, current_period, month_start
from tests.close_helpers import backdate, past_months, post_month, statements_digest
from tests.factories import make_org

pytestmark = pytest.mark.django_db


def _org_with_history(plan: str = "standard", time_zone: str = "UTC", months: int = 2) -> Organization:
    org = make_org(plan, time_zone=time_zone)
    periods = past_months(org, months)
    backdate(org, month_start(periods[0], org.tzinfo))
    for period in periods:
        post_month(org, period)
    return org


def test_statements_hold_the_identity_and_carry_the_balance_forward() -> None:
    org = _org_with_history(months=3)
    closed = closing.close_organization(org)
    assert [c.period for c in closed] == past_months(org, 3)
    statements = list(Statement.objects.filter(account=org.account).order_by("period"))
    assert len(statements) == 3
    previous_closing = 0
    for statement in statements:
        assert statement.closing_balance == (
            statement.brought_forward + statement.top_ups - statement.credits_used
        )
        assert statement.brought_forward == previous_closing
        previous_closing = statement.closing_balance
        rollups = DailyRollup.objects.filter(
            account=org.account, date__gte=statement.period, date__lt=add_months(statement.period, 1)
        )
        assert statement.days.count() == rollups.count() > 0
        assert statement.closing_balance == rollups.order_by("-date").first().balance  # type: ignore[union-attr]
        assert statement.credits_used == sum(r.credits_used for r in rollups)
        assert statement.debits == sum(r.debits for r in rollups)
    assert account_breaks(org.account) == []


def test_statement_months_follow_the_organization_time_zone() -> None:
    org = _org_with_history(time_zone="Asia/Tokyo", months=1)
    (closed,) = closing.close_organization(org)
    statement = closed.statement
    assert statement.starts_at == month_start(statement.period, org.tzinfo)
    assert statement.starts_at.astimezone(dt.UTC).hour == 15  # Tokyo midnight is 15:00 UTC
    assert statement.last_day == add_months(statement.period, 1) - dt.timedelta(days=1)


def test_standard_credits_expire_at_month_end_and_the_close_renews() -> None:
    org = make_org("standard")
    first, second = past_months(org)
    backdate(org, month_start(first, org.tzinfo))
    post_month(org, first, debits=2)  # 10,000 + 300 promotional, 1,400 used, 175 refunded
    close_at = month_start(second, org.tzinfo) + dt.timedelta(minutes=5)
    result = closing.close_organization_month(org, first, now=close_at)
    assert result.closed_now
    expiry = Entry.objects.get(account=org.account, kind=EntryKind.EXPIRY)
    assert expiry.created_at == close_at and expiry.local_date == second
    # The promotion went first (sooner expiry); the subscription lot's unused rest expires.
    assert -expiry.amount == 10_000 + 300 - 1_400 + 175
    renewal = Entry.objects.get(account=org.account, operation="subscription_renewal", created_at=close_at)
    assert renewal.amount == 10_000
    assert Lot.objects.get(entry=renewal).expires_at == month_start(add_months(second, 1), org.tzinfo)
    post_month(org, second, debits=1)  # its renewal was the close's: a keyed no-op now
    assert Entry.objects.filter(account=org.account, operation="subscription_renewal").count() == 2
    closing.close_organization_month(org, second)
    statement = Statement.objects.get(account=org.account, period=second)
    assert statement.expired >= 9_075  # the expiry lands in the month it was posted
    assert account_breaks(org.account) == []


def test_professional_credits_roll_over_for_three_months() -> None:
    org = make_org("professional")
    first, second = past_months(org)
    backdate(org, month_start(first, org.tzinfo))
    post_month(org, first, debits=1)
    closing.close_organization_month(org, first, now=month_start(second, org.tzinfo))
    subscription_lot = Lot.objects.get(
        account=org.account, source=LotSource.SUBSCRIPTION, entry__created_at=month_start(first, org.tzinfo)
    )
    assert not subscription_lot.expired and subscription_lot.remaining > 0
    assert subscription_lot.expires_at == month_start(add_months(first, 3), org.tzinfo)
    assert not Entry.objects.filter(
        account=org.account, kind=EntryKind.EXPIRY, operation="expiry", memo__startswith="subscription"
    ).exists()


def test_invoice_has_the_plan_fee_and_the_packs_paid_that_month(manager: User) -> None:  # noqa: ARG001
    org = _org_with_history(months=1)
    (period,) = past_months(org, 1)
    pack = CreditPack.objects.get(slug="standard")
    inside = month_start(period, org.tzinfo) + dt.timedelta(days=5)
    for paid_at in (inside, inside + dt.timedelta(days=40)):  # the second is next month's
        Purchase.objects.create(
            organization=org,
            pack=pack,
            credits=1_000,
            price_cents=1_500,
            currency="USD",
            provider="local",
            status=PurchaseStatus.PAID,
            paid_at=paid_at,
        )
    Purchase.objects.create(
        organization=org,
        pack=pack,
        credits=1_000,
        price_cents=1_500,
        currency="USD",
        provider="local",
        status=PurchaseStatus.FAILED,
    )
    (closed,) = closing.close_organization(org)
    invoice = closed.invoice
    assert invoice is not None and invoice.period == period
    assert [(line.description, line.amount_cents) for line in invoice.lines.order_by("id")] == [
        (f"Standard plan, {period:%B %Y}", 4_900),
        ("Standard pack: 1,000 credits", 1_500),
    ]
    assert invoice.total_cents == 6_400
    assert invoice.number == f"TLY-{period:%Y%m}-{org.pk:06d}"


def test_missed_months_are_caught_up_in_order() -> None:
    org = _org_with_history(months=3)
    assert closing.months_to_close(org) == past_months(org, 3)
    assert org.pk in closing.organizations_due()
    closing.close_organization(org)
    periods = list(
        Statement.objects.filter(account=org.account).order_by("pk").values_list("period", flat=True)
    )
    assert periods == past_months(org, 3)
    assert closing.months_to_close(org) == []
    assert org.pk not in closing.organizations_due()


def test_a_batch_closes_each_organization_as_if_closed_alone() -> None:
    alone, batched = _org_with_history(months=3), _org_with_history(months=3)
    tokyo = _org_with_history(time_zone="Asia/Tokyo", months=1)
    closing.close_organization(alone)
    closed = closing.close_batch([batched, tokyo])
    assert sorted((c.organization, c.period) for c in closed) == sorted(
        [(batched.slug, p) for p in past_months(batched, 3)] + [(tokyo.slug, past_months(tokyo, 1)[0])]
    )
    assert statements_digest(batched) == statements_digest(alone)
    assert Statement.objects.filter(account=tokyo.account).count() == 1
    assert ledger_breaks() == []


def test_a_broken_ledger_does_not_hold_back_the_rest_of_its_batch() -> None:
    good, broken = _org_with_history(months=1), _org_with_history(months=1)
    DailyRollup.objects.filter(account=broken.account).update(balance=F("balance") + 1)
    with pytest.raises(closing.CloseFailed, match=broken.slug):
        closing.close_batch([good, broken])
    assert Statement.objects.filter(account=good.account).count() == 1
    assert good.invoices.count() == 1
    assert not Statement.objects.filter(account=broken.account).exists()
    assert not broken.invoices.exists()
    assert not Entry.objects.filter(
        account=broken.account,
        operation="subscription_renewal",
        created_at__gte=timezone.now() - dt.timedelta(minutes=5),
    ).exists()


def test_closing_a_closed_month_changes_nothing() -> None:
    org = _org_with_history(months=1)
    closing.close_organization(org)
    before = (statements_digest(org), Entry.objects.count(), Lot.objects.count())
    (period,) = past_months(org, 1)
    again = closing.close_organization_month(org, period)
    assert not again.closed_now
    assert closing.close_organization(org) == []
    assert (statements_digest(org), Entry.objects.count(), Lot.objects.count()) == before


def test_the_database_refuses_a_second_statement_for_a_month() -> None:
    org = _org_with_history(months=1)
    (closed,) = closing.close_organization(org)
    statement = closed.statement
    with pytest.raises(IntegrityError), transaction.atomic():
        Statement.objects.create(
            account=org.account,
            period=statement.period,
            starts_at=statement.starts_at,
            ends_at=statement.ends_at,
            brought_forward=0,
            closing_balance=0,
        )


def test_a_month_that_has_not_ended_is_not_closed() -> None:
    org = make_org("standard", credits=100)
    with pytest.raises(closing.MonthNotEnded):
        closing.close_organization_month(org, current_period(timezone.now(), org.tzinfo))
    assert not Statement.objects.filter(account=org.account).exists()


def test_close_month_command_closes_and_reports() -> None:
    org = _org_with_history(months=2)
    first, second = past_months(org)
    out = StringIO()
    call_command("close_month", "--org", org.slug, "--month", f"{first:%Y-%m}", stdout=out)
    assert f"{org.slug} {first:%Y-%m}: closed" in out.getvalue()
    assert list(Statement.objects.filter(account=org.account).values_list("period", flat=True)) == [first]
    out = StringIO()
    call_command("close_month", "--org", org.slug, stdout=out)
    assert f"{org.slug} {second:%Y-%m}: closed" in out.getvalue()
    out = StringIO()
    call_command("close_month", "--org", org.slug, "--month", f"{second:%Y-%m}", stdout=out)
    assert "nothing to close" in out.getvalue()
    current = current_period(timezone.now(), org.tzinfo)
    with pytest.raises(CommandError, match="has not ended"):
        call_command("close_month", "--org", org.slug, "--month", f"{current:%Y-%m}")
    with pytest.raises(CommandError, match="No organization"):
        call_command("close_month", "--org", "no-such-org")
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("close_month", "--month", "2026-13")


def test_demo_past_months_are_closed_by_the_close() -> None:
    demo.seed(log=lambda line: None)
    for demo_org in demo.ORGS:
        org = Organization.objects.get(slug=demo_org.slug)
        statements = list(Statement.objects.filter(account=org.account).order_by("period"))
        assert [s.period for s in statements] == past_months(org, 2)
        assert statements[1].brought_forward == statements[0].closing_balance
        assert org.invoices.count() == 2
        assert all(s.days.exists() for s in statements)
    assert ledger_breaks() == []
    client = Client()
    client.force_login(User.objects.get(username="demo-standard-manager"))
    org = Organization.objects.get(slug="demo-standard")
    for period in past_months(org, 2):
        page = client.get(reverse("usage", args=[org.slug]), {"period": f"{period:%Y-%m}"})
        assert f"Statement for {period:%B %Y}" in page.text
    entries = Entry.objects.count()
    demo.seed(log=lambda line: None)
    assert Entry.objects.count() == entries
    assert Statement.objects.count() == 8
