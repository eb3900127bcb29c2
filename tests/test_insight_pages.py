"""Pricing (members too), the top bar's credits, transactions (filters, keyset pages that
hold still while entries arrive) and the review's rules, each with a case that fires and
one that does not."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils import timezone

from billing import review
from billing.models import ApiKey, Organization, Scope
from ledger import postings
from ledger.models import Entry, LotSource
from tests.factories import fund
from tests.ledger_helpers import key

pytestmark = pytest.mark.django_db


def test_the_pricing_page_is_for_every_member(
    org: Organization, manager_client: Client, member_client: Client, outsider_client: Client
) -> None:
    url = f"/orgs/{org.slug}/pricing/"
    for client in (manager_client, member_client):
        page = client.get(url).content.decode()
        assert "Training on an A100 GPU" in page and "training_a100_per_minute" in page
    assert outsider_client.get(url).status_code == 404


def test_the_top_bar_shows_the_available_credits_to_members_too(
    org: Organization, manager_client: Client, member_client: Client
) -> None:
    fund(org, 12_345)
    postings.reserve(org.account, 345, key=key(), operation="op")
    for client, path in ((manager_client, "usage/"), (member_client, "")):
        page = client.get(f"/orgs/{org.slug}/{path}").content.decode()
        found = re.search(r'data-testid="topbar-credits">([^<]*)<', page)
        assert (
            found is not None
            and found.group(1) == f"{postings.credits_now(org.account).available:,} credits available"
        )
        assert postings.credits_now(org.account).available == org.account.balance - 345


def job(external_id: str, project: str = "vision") -> postings.JobInfo:
    return postings.JobInfo(external_id, project=project)


def test_transactions_filter_and_page_without_skipping_while_entries_arrive(
    org: Organization, manager_client: Client
) -> None:
    fund(org, 100_000)
    for n in range(60):
        postings.debit(
            org.account,
            10 + n,
            key=key(),
            operation="op",
            job=job(f"run-{n}", "vision" if n % 2 else "speech"),
        )
    url = f"/orgs/{org.slug}/usage/transactions/"
    there = Entry.objects.filter(account=org.account).count()
    first = manager_client.get(url).content.decode()
    ids = [int(i) for i in re.findall(r'data-entry="(\d+)"', first)]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'href="([^"]+)" data-testid="transactions-older"', first)
    assert older is not None
    for n in range(5):  # arrive while the manager reads the first page
        postings.debit(org.account, 1, key=key(), operation="op", job=job(f"late-{n}"))
    second = manager_client.get(older.group(1).replace("&amp;", "&")).content.decode()
    rest = [int(i) for i in re.findall(r'data-entry="(\d+)"', second)]
    assert rest and max(rest) < min(ids) and len(ids) + len(rest) == there
    vision = manager_client.get(url + "?project=vision").content.decode()
    assert vision.count('data-entry="') == 35  # the late ones are vision jobs too
    one = manager_client.get(url + "?job=run-7").content.decode()
    assert one.count('data-entry="') == 1 and "-17<" in one
    top_ups = manager_client.get(url + "?kind=top_up").content.decode()
    assert top_ups.count('data-entry="') == Entry.objects.filter(account=org.account, kind="top_up").count()
    assert manager_client.get(url + "?kind=gift").status_code == 400


def test_insight_pages_are_for_managers(
    org: Organization, manager_client: Client, member_client: Client, outsider_client: Client
) -> None:
    for path in ("usage/transactions/", "usage/review/"):
        assert manager_client.get(f"/orgs/{org.slug}/{path}").status_code == 200
        assert member_client.get(f"/orgs/{org.slug}/{path}").status_code == 403
        assert outsider_client.get(f"/orgs/{org.slug}/{path}").status_code == 404


def rules_fired(org: Organization, now: dt.datetime | None = None) -> set[str]:
    return {finding.rule for finding in review.review(org, now)}


def test_a_hold_that_expired_unsettled_is_found(org: Organization) -> None:
    fund(org, 10_000)
    now = timezone.now()
    postings.reserve(
        org.account,
        100,
        key=key(),
        operation="op",
        job=job("stuck-1"),
        ttl=dt.timedelta(hours=1),
        now=now - dt.timedelta(hours=3),
    )
    settled = postings.reserve(org.account, 100, key=key(), operation="op", job=job("fine-1"), now=now)
    postings.settle(org.account, settled.hold_id or 0, 90, key=key(), now=now)
    assert "expired_hold" not in rules_fired(org)
    postings.release_expired_holds(now)
    (finding,) = [f for f in review.review(org) if f.rule == "expired_hold"]
    assert "stuck-1" in finding.detail and finding.url.endswith("?job=stuck-1")


def test_a_hold_pending_far_longer_than_its_kind_runs_is_found(org: Organization) -> None:
    fund(org, 10_000)
    now = timezone.now()
    for n in range(5):  # jobs of this kind run ten minutes
        start = now - dt.timedelta(hours=5, minutes=n)
        hold = postings.reserve(org.account, 10, key=key(), operation="train", job=job(f"t-{n}"), now=start)
        postings.settle(org.account, hold.hold_id or 0, 10, key=key(), now=start + dt.timedelta(minutes=10))
    postings.reserve(
        org.account, 10, key=key(), operation="train", job=job("t-new"), now=now - dt.timedelta(minutes=20)
    )
    assert "old_hold" not in rules_fired(org)
    postings.reserve(
        org.account, 10, key=key(), operation="train", job=job("t-old"), now=now - dt.timedelta(hours=2)
    )
    (finding,) = [f for f in review.review(org) if f.rule == "old_hold"]
    assert "t-old" in finding.detail and "10 minutes" in finding.detail


def test_runs_of_refunds_by_resource_class_are_found(org: Organization) -> None:
    fund(org, 10_000)
    for n in range(3):
        external = f"r-{n}"
        postings.debit(
            org.account, 100, key=key(), operation="op", job=postings.JobInfo(external, resource_class="h100")
        )
        postings.refund(org.account, external, 50, key=key(), operation="refund")
        if n == 1:
            assert "refund_run" not in rules_fired(org)
    (finding,) = [f for f in review.review(org) if f.rule == "refund_run"]
    assert finding.title.startswith("3 refunds for h100")


def test_a_settle_far_above_its_estimate_is_found(org: Organization) -> None:
    fund(org, 10_000)
    near = postings.reserve(org.account, 100, key=key(), operation="op", job=job("near"))
    postings.settle(org.account, near.hold_id or 0, 140, key=key())
    assert "above_estimate" not in rules_fired(org)
    far = postings.reserve(org.account, 100, key=key(), operation="op", job=job("far"))
    postings.settle(org.account, far.hold_id or 0, 300, key=key())
    (finding,) = [f for f in review.review(org) if f.rule == "above_estimate"]
    assert finding.title == "Settled at 3.0x its estimate"


def test_new_job_patterns_and_api_keys_are_found(org: Organization) -> None:
    fund(org, 10_000)
    now = timezone.now()
    Organization.objects.filter(pk=org.pk).update(created_at=now - dt.timedelta(days=60))
    org.refresh_from_db()
    postings.debit(
        org.account, 1, key=key(), operation="op", job=job("nightly-0001"), now=now - dt.timedelta(days=20)
    )
    from ledger.models import Job

    Job.objects.filter(external_id="nightly-0001").update(created_at=now - dt.timedelta(days=20))
    postings.debit(org.account, 1, key=key(), operation="op", job=job("nightly-0002"))
    assert "new_job_pattern" not in rules_fired(org)
    postings.debit(org.account, 1, key=key(), operation="op", job=job("exfil-77"))
    (finding,) = [f for f in review.review(org) if f.rule == "new_job_pattern"]
    assert finding.title == "Jobs of a new kind: exfil-#"
    fresh, _ = ApiKey.issue(org, name="laptop", scopes=[Scope.USAGE_WRITE])
    assert "new_api_key" not in rules_fired(org)  # created, never used
    ApiKey.objects.filter(pk=fresh.pk).update(last_used_at=now)
    assert "new_api_key" in rules_fired(org)


def test_days_far_above_the_usual_are_found(org: Organization) -> None:
    postings.post_top_up(
        org.account,
        100_000,
        key=key(),
        source=LotSource.PURCHASE,
        operation="pack",
        now=timezone.now() - dt.timedelta(days=40),
    )
    today = org.account.local_date(timezone.now())
    for n in range(20, 0, -1):
        when = timezone.now() - dt.timedelta(days=n)
        postings.debit(org.account, 100, key=key(), operation="op", now=when)
    assert "unusual_day" not in rules_fired(org)
    postings.debit(org.account, 1_000, key=key(), operation="op")
    (finding,) = [f for f in review.review(org) if f.rule == "unusual_day"]
    assert "10.0x a usual day" in finding.detail and today.isoformat() in finding.url


def test_the_review_page_links_each_finding_and_the_menu_counts_them(
    org: Organization, manager_client: Client
) -> None:
    fund(org, 10_000)
    far = postings.reserve(org.account, 100, key=key(), operation="op", job=job("far"))
    postings.settle(org.account, far.hold_id or 0, 300, key=key())
    page = manager_client.get(f"/orgs/{org.slug}/usage/review/").content.decode()
    assert "Settled at 3.0x its estimate" in page and "usage/transactions/?job=far" in page
    assert 'data-testid="review-badge" aria-label="1 findings">1<' in page
