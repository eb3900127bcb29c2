"""One meaning for every number: the Usage page, the CSV, the statement and ``GET usage``
agree on every day and month, and no page or endpoint counts credits past their expiry."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import closing
from billing.models import Organization, Role
from ledger import postings
from ledger.models import LotSource
from ledger.periods import add_months, month_start
from tests.close_helpers import backdate
from tests.factories import make_org, make_user
from tests.test_api import call, issue
from tests.usage_helpers import at, last_month

pytestmark = pytest.mark.django_db

Day = tuple[int, int, int]  # top_ups, credits_used, balance

# One posting: (day of the month, kind, credits)
POSTINGS = st.lists(
    st.tuples(
        st.integers(1, 28),
        st.sampled_from(["purchase", "promotional", "debit", "refund", "adjust-", "adjust+"]),
        st.integers(1, 400),
    ),
    min_size=1,
    max_size=14,
)


def _post(org: Organization, period: dt.date, postings_: list[tuple[int, str, int]]) -> None:
    """The postings, in day order; refusals (too few credits, nothing to refund) are skipped,
    as the job runner would see them refused."""
    jobs: list[str] = []
    postings.post_top_up(
        org.account,
        1_000,
        key="start",
        source=LotSource.SUBSCRIPTION,
        operation="subscription_renewal",
        expires_at=month_start(add_months(period, 1), org.tzinfo),
        now=at(org, period, 1, 0, 1),
    )
    for n, (day, kind, credits) in enumerate(sorted(postings_)):
        when = at(org, period, day, 9, n)
        key = str(uuid.uuid4())
        try:
            if kind in {"purchase", "promotional"}:
                expires = at(org, period, min(day + 3, 28), 23) if kind == "promotional" else None
                postings.post_top_up(
                    org.account,
                    credits,
                    key=key,
                    source=LotSource(kind),
                    operation="credit_pack_test",
                    expires_at=expires,
                    now=when,
                )
            elif kind == "debit":
                job = f"job-{n}"
                postings.debit(
                    org.account,
                    credits,
                    key=key,
                    operation="image_inference",
                    job=postings.JobInfo(job, project="p"),
                    now=when,
                )
                jobs.append(job)
            elif kind == "refund" and jobs:
                postings.refund(org.account, jobs[-1], credits, key=key, operation="image_refund", now=when)
            elif kind.startswith("adjust"):
                amount = credits if kind == "adjust+" else -credits
                postings.adjust(org.account, amount, key=key, memo="correction", now=when)
        except (postings.InsufficientCredits, postings.InvalidPosting):
            continue
    # the month's last expiries, posted by the sweep before the month ends
    postings.expire_lots(org.account, now=at(org, period, 28, 23, 59))


def _page(client: Client, org: Organization, period: dt.date) -> dict[dt.date, Day]:
    response = client.get(reverse("usage", args=[org.slug]), {"period": f"{period:%Y-%m}"})
    assert response.status_code == 200
    return {d.date: (d.top_ups, d.credits_used, d.balance) for d in response.context["month"].days}


def _csv(client: Client, org: Organization, period: dt.date) -> tuple[dict[dt.date, Day], dict[dt.date, int]]:
    response = client.get(reverse("usage_export", args=[org.slug]), {"period": f"{period:%Y-%m}"})
    assert isinstance(response, StreamingHttpResponse)
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))[1:]
    days: dict[dt.date, Day] = {}
    jobs: dict[dt.date, int] = {}
    for row in rows:
        date = dt.date.fromisoformat(row[1])
        if row[0] == "day":
            days[date] = (int(row[2]), int(row[3]), int(row[4]))
        else:
            jobs[date] = jobs.get(date, 0) + int(row[3])
    return days, jobs


def _api(org: Organization, period: dt.date) -> dict[dt.date, Day]:
    response = call("get", "usage?days=120", issue(org))
    rows = [
        row
        for row in response.json()["days"]
        if period <= dt.date.fromisoformat(row["date"]) < add_months(period, 1)
    ]
    for row in rows:
        assert row["credits_used"] == row["debits"] - row["refunds"] + row["expired"] + row["adjustments"]
    return {
        dt.date.fromisoformat(row["date"]): (row["top_ups"], row["credits_used"], row["balance"])
        for row in rows
        if row["top_ups"] or row["credits_used"]
    }


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(postings_=POSTINGS)
def test_the_page_the_csv_the_statement_and_the_api_agree(postings_: list[tuple[int, str, int]]) -> None:
    org = make_org("professional")
    period = last_month(org)
    backdate(org, month_start(period, org.tzinfo))
    _post(org, period, postings_)
    client = Client()
    client.force_login(make_user(org, Role.MANAGER))
    before_close = _page(client, org, period)
    closing.close_organization_month(org, period, now=month_start(add_months(period, 1), org.tzinfo))
    page, (csv_days, csv_jobs), api = _page(client, org, period), _csv(client, org, period), _api(org, period)
    assert page == before_close == csv_days == api
    # Each day's job rows (and its expiry and adjustment rows) add up to its credits used.
    assert {date: used for date, (_, used, _) in page.items() if used} == {
        d: u for d, u in csv_jobs.items() if u
    }
    # The days add up to the statement, whose figures chain.
    statement = (
        client.get(reverse("usage", args=[org.slug]), {"period": f"{period:%Y-%m}"})
        .context["month"]
        .statement
    )
    assert statement.pk is not None
    assert statement.top_ups == sum(top_ups for top_ups, _, _ in page.values())
    assert statement.credits_used == sum(used for _, used, _ in page.values())
    previous = statement.brought_forward
    for date in sorted(page):
        top_ups, used, balance = page[date]
        assert balance == previous + top_ups - used
        previous = balance
    assert statement.closing_balance == previous


def _with_a_lot_past_expiry() -> tuple[Organization, Client]:
    org = make_org("standard")
    now = timezone.now()
    postings.post_top_up(
        org.account,
        500,
        key="promo",
        source=LotSource.PROMOTIONAL,
        operation="promo",
        expires_at=now - dt.timedelta(minutes=5),
        now=now - dt.timedelta(hours=1),
    )
    postings.post_top_up(
        org.account,
        200,
        key="pack",
        source=LotSource.PURCHASE,
        operation="pack",
        now=now - dt.timedelta(hours=1),
    )
    client = Client()
    client.force_login(make_user(org, Role.MANAGER))
    return org, client


def test_pages_do_not_count_credits_past_their_expiry_before_the_sweep() -> None:
    org, client = _with_a_lot_past_expiry()
    for url, prefix in (
        (reverse("organization", args=[org.slug]), "credits"),
        (reverse("billing", args=[org.slug]), "billing"),
    ):
        text = client.get(url).content.decode()
        assert f'data-testid="{prefix}-remaining">200<' in text, url
        assert f'data-testid="{prefix}-available">200<' in text, url


def test_the_api_balance_does_not_count_credits_past_their_expiry_before_the_sweep() -> None:
    org, _ = _with_a_lot_past_expiry()
    body: dict[str, Any] = call("get", "credits/balance", issue(org)).json()
    assert (body["credits_remaining"], body["credits_available"]) == (200, 200)


def test_usage_keeps_to_the_plans_audit_window() -> None:
    org = make_org("free")
    backdate(org, timezone.now() - dt.timedelta(days=400))
    postings.post_top_up(
        org.account,
        100,
        key="old",
        source=LotSource.PURCHASE,
        operation="pack",
        now=timezone.now() - dt.timedelta(days=200),
    )
    rows = call("get", "usage?days=366", issue(org)).json()["days"]
    assert len(rows) == 30
    assert all(row["top_ups"] == 0 for row in rows)
    assert rows[-1]["balance"] == 100  # the balance carried in, not the activity
