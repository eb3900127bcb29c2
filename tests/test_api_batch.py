"""``POST batch``: many postings in one request, each answered exactly as if sent alone."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from billing import closing
from billing.models import Invoice, Organization
from ledger import postings
from ledger.checks import account_breaks
from ledger.models import Entry, EntryKind, Statement
from ledger.periods import add_months, current_period, month_start
from tests.close_helpers import backdate, post_month
from tests.factories import fund, make_org
from tests.test_api import JOB, call, error, issue

pytestmark = pytest.mark.django_db


def batch(key: str, *items: dict[str, Any]) -> Any:
    return call("post", "batch", key, {"postings": list(items)})


def test_each_posting_of_a_batch_answers_as_its_endpoint_would(org: Organization) -> None:
    """The same postings sent alone (to a twin organization) and in one batch get the same
    statuses and bodies, refusals included."""
    twin = make_org("standard", credits=5_000)
    alone, together = issue(twin), issue(org)
    held = postings.reserve(org.account, 100, key="h", operation="image_inference")
    twin_held = postings.reserve(twin.account, 100, key="h", operation="image_inference")
    items: list[tuple[str, dict[str, Any] | None, str, str]] = [
        ("debits", {"operation": "image_inference", "quantity": 30, "job": JOB}, "k1", "debit"),
        ("debits", {"operation": "image_inference", "quantity": 10**6}, "k2", "debit"),  # 402
        ("debits", {"operation": "no_such_op", "quantity": 1}, "k3", "debit"),  # 422
        ("debits", {"operation": "image_inference", "quantity": "1"}, "k4", "debit"),  # 422: strict
        ("holds", {"operation": "image_inference", "amount": 50}, "k5", "hold"),
        ("holds/{hold}/settle", {"amount": 40}, "k6", "settle"),
        ("holds/{hold}/settle", {"amount": 40}, "k7", "settle"),  # 422: no longer pending
        ("holds/999999999/release", None, "k8", "release"),  # 404
        ("refunds", {"job": JOB["external_id"], "amount": 10, "operation": "image_refund"}, "k9", "refund"),
        ("debits", {"operation": "image_inference", "quantity": 31, "job": JOB}, "k1", "debit"),  # 409
    ]
    singles, batched = [], []
    for path, body, key, kind in items:
        single = call("post", path.format(hold=twin_held.hold_id), alone, body, idempotency_key=key)
        singles.append((single.status_code, _comparable(single.json())))
        item: dict[str, Any] = {"kind": kind, "idempotency_key": key, **(body or {})}
        if "{hold}" in path or "999999999" in path:
            item["hold_id"] = held.hold_id if "{hold}" in path else 999999999
        batched.append(item)
    response = batch(together, *batched)
    assert response.status_code == 200
    results = [
        (r["status"], _comparable({k: v for k, v in r.items() if k != "status"}))
        for r in response.json()["results"]
    ]
    assert [status for status, _ in results] == [201, 402, 422, 422, 201, 200, 422, 404, 201, 409]
    assert results == singles
    for account in (org.account, twin.account):
        account.refresh_from_db()
        assert account_breaks(account) == []


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A body without what differs between two organizations: ids, times, links, balances."""
    if "error" in body:
        found = dict(body["error"])
        found.pop("upgrade_url", None)
        found.pop("remaining", None)
        found["message"] = re.sub(r"\d+", "N", found["message"])
        found.pop("errors", None)  # located in the body, or in the batch
        return {"error": found}
    return {
        k: v
        for k, v in body.items()
        if k not in {"entry_id", "hold_id", "created_at", "credits_remaining", "credits_available"}
    }


def test_a_retried_batch_replays_each_posting(org: Organization) -> None:
    key = issue(org)
    items = [
        {"kind": "debit", "idempotency_key": f"d-{n}", "operation": "image_inference", "quantity": 1000}
        for n in range(7)
    ]  # 5,000 credits: five fit
    first = batch(key, *items).json()["results"]
    again = batch(key, *items).json()["results"]
    assert [r["status"] for r in first] == [201] * 5 + [402] * 2
    assert first[:5] == again[:5]
    assert Entry.objects.filter(account=org.account, kind=EntryKind.DEBIT).count() == 5


def test_a_batch_of_more_than_a_thousand_or_of_none_is_refused_whole(org: Organization) -> None:
    key = issue(org)
    item = {"kind": "debit", "idempotency_key": "x", "operation": "image_inference", "quantity": 1}
    for items in ([item] * 1_001, []):
        response = batch(key, *items)
        assert response.status_code == 422
        assert error(response)["code"] == "validation_error"
    assert not Entry.objects.filter(account=org.account, kind=EntryKind.DEBIT).exists()


def test_an_item_of_no_known_kind_is_refused_alone(org: Organization) -> None:
    key = issue(org)
    response = batch(
        key,
        {"kind": "mint", "idempotency_key": "m", "amount": 10**6},
        {"kind": "debit", "idempotency_key": "d", "operation": "image_inference", "quantity": 1},
    )
    assert [r["status"] for r in response.json()["results"]] == [422, 201]


def test_a_client_key_cannot_stop_the_month_close(db: None) -> None:
    """The attack: a client sends the Idempotency-Key the close uses for next month's renewal
    on a one-credit hold. The close still renews, freezes the statement and invoices."""
    org = make_org("standard")
    now = dt.datetime.now(dt.UTC)
    last = add_months(current_period(now, org.tzinfo), -1)
    backdate(org, month_start(last, org.tzinfo))
    post_month(org, last)
    fund(org, 100)  # purchased credits, which never expire
    current = current_period(now, org.tzinfo)
    attack = call(
        "post",
        "holds",
        issue(org),
        {"operation": "image_inference", "amount": 1},
        idempotency_key=f"subscription_renewal:{current:%Y-%m}",
    )
    assert attack.status_code == 201
    closed = closing.close_organization(org)
    assert [c.period for c in closed] == [last]
    assert Statement.objects.filter(account=org.account, period=last).exists()
    assert Invoice.objects.filter(organization=org, period=last).exists()
    assert (
        Entry.objects.filter(
            account=org.account, operation="subscription_renewal", local_date__gte=current
        ).count()
        == 1
    )
    assert account_breaks(org.account) == []
