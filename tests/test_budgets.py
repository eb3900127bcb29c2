"""Budgets: enforced in the posting (debits, holds, settles, batches), given back by
refunds and releases, counted in the organization's month, watched with alerts, set on
the budgets page and over the API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from billing import notices
from billing.models import ApiKey, Organization, Role, Scope
from ledger import budgets, postings
from ledger.models import Budget, BudgetMonth, DailyRollup, Entry, Hold, IdempotencyRecord, LotSource, Notice
from team.models import AuditRecord
from tests.factories import catalog, make_org, make_user
from tests.ledger_helpers import assert_clean, key, new_account

pytestmark = pytest.mark.django_db

NOV = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)


def job(project: str = "vision", user: str = "ada", external_id: str | None = None) -> postings.JobInfo:
    return postings.JobInfo(external_id or key(), project=project, user=user)


def debit(account: Any, amount: int, **kw: Any) -> postings.Receipt:
    kw.setdefault("job", job())
    kw.setdefault("now", NOV)
    return postings.debit(account, amount, key=key(), operation="op", **kw)


def used(
    account: Any, name: str = "vision", scope: str = "project", now: dt.datetime = NOV
) -> tuple[int, int]:
    figures = budgets.find(account, scope, name, now)
    assert figures is not None
    return figures.used, figures.held


# --- Enforced in the posting ------------------------------------------------------------


def test_a_debit_that_would_pass_the_limit_is_refused_naming_the_budget_and_changes_nothing() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 500)
    debit(account, 300)
    before = (Entry.objects.count(), IdempotencyRecord.objects.count(), list(DailyRollup.objects.values()))

    with pytest.raises(postings.BudgetExceeded) as refused:
        debit(account, 201)

    assert refused.value.required == 201
    assert refused.value.budget == {
        "scope": "project",
        "name": "vision",
        "monthly_limit": 500,
        "used": 300,
        "held": 0,
        "remaining": 200,
    }
    assert (
        Entry.objects.count(),
        IdempotencyRecord.objects.count(),
        list(DailyRollup.objects.values()),
    ) == before
    account.refresh_from_db()
    assert account.balance == 9_700
    assert used(account) == (300, 0)
    debit(account, 200)  # exactly to the limit
    assert used(account) == (500, 0)
    debit(account, 50, job=job(project="other"))  # other projects are not limited by it
    assert_clean(account)


def test_budgets_of_the_project_the_user_and_the_key_all_apply() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 1_000)
    budgets.set_budget(account, "user", "ada", 1_000)
    budgets.set_budget(account, "api_key", "runner", 100)
    debit(account, 80, api_key="runner")
    with pytest.raises(postings.BudgetExceeded) as refused:
        debit(account, 30, api_key="runner")
    assert (refused.value.budget["scope"], refused.value.budget["name"]) == ("api_key", "runner")
    debit(account, 30, api_key="other-key")
    assert used(account) == (110, 0)
    assert used(account, "ada", "user") == (110, 0)
    assert used(account, "runner", "api_key") == (80, 0)


def test_a_job_keeps_the_project_it_was_first_described_with() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 100)
    debit(account, 100, job=job(project="vision", external_id="run-1"))
    with pytest.raises(postings.BudgetExceeded):
        debit(account, 1, job=job(project="elsewhere", external_id="run-1"))


def test_holds_count_against_the_budget_and_a_release_gives_them_back() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 500)
    hold = postings.reserve(account, 400, key=key(), operation="op", job=job(), now=NOV)
    assert used(account) == (0, 400)
    with pytest.raises(postings.BudgetExceeded):
        debit(account, 101)
    postings.release(account, hold.hold_id, key=key(), now=NOV)  # type: ignore[arg-type]
    assert used(account) == (0, 0)
    debit(account, 500)
    assert_clean(account)


def test_a_settle_within_its_hold_never_fails_and_one_above_it_is_checked() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 500)
    first = postings.reserve(account, 300, key=key(), operation="op", job=job(), now=NOV)
    second = postings.reserve(account, 200, key=key(), operation="op", job=job(), now=NOV)
    budgets.set_budget(account, "project", "vision", 100)  # lowered below what is held
    postings.settle(account, first.hold_id, 300, key=key(), now=NOV)  # type: ignore[arg-type]
    assert used(account) == (300, 200)
    with pytest.raises(postings.BudgetExceeded):
        postings.settle(account, second.hold_id, 201, key=key(), now=NOV)  # type: ignore[arg-type]
    assert Hold.objects.get(pk=second.hold_id or 0).status == "pending"
    budgets.set_budget(account, "project", "vision", 600)
    postings.settle(account, second.hold_id, 300, key=key(), now=NOV)  # type: ignore[arg-type]
    assert used(account) == (600, 0)
    assert_clean(account)


def test_an_expired_hold_gives_its_credits_back_to_the_budget() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 500)
    postings.reserve(account, 500, key=key(), operation="op", job=job(), now=NOV, ttl=dt.timedelta(hours=1))
    assert postings.release_expired_holds(now=NOV + dt.timedelta(hours=2)) == 1
    assert used(account) == (0, 0)


def test_a_refund_gives_budget_back_but_never_below_nothing() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 500)
    debit(account, 500, job=job(external_id="run-1"))
    postings.refund(account, "run-1", 200, key=key(), operation="refund", now=NOV)
    assert used(account) == (300, 0)
    debit(account, 200)
    # A refund in December of November's job gives December nothing below 0.
    dec = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    postings.refund(account, "run-1", 300, key=key(), operation="refund", now=dec)
    assert used(account, now=dec) == (0, 0)
    assert used(account) == (500, 0)


def test_a_replayed_debit_is_answered_again_even_once_the_budget_is_full() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 100)
    the_job = job()
    first = postings.debit(account, 100, key="k-1", operation="op", job=the_job, now=NOV)
    again = postings.debit(account, 100, key="k-1", operation="op", job=the_job, now=NOV)
    assert again == first
    assert used(account) == (100, 0)


def test_months_are_the_organizations_own() -> None:
    account = new_account(10_000, time_zone="Europe/Berlin")
    budgets.set_budget(account, "project", "vision", 100)
    # 23:30 UTC on Nov 30 is already December 1 in Berlin: December's budget.
    debit(account, 100, now=dt.datetime(2026, 11, 30, 22, 30, tzinfo=dt.UTC))
    debit(account, 100, now=dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC))
    months = dict(BudgetMonth.objects.values_list("month", "used"))
    assert months == {dt.date(2026, 11, 1): 100, dt.date(2026, 12, 1): 100}
    with pytest.raises(postings.BudgetExceeded):
        debit(account, 1, now=dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC))


def test_an_unlimited_account_is_still_held_to_its_budgets() -> None:
    account = new_account(unlimited=True)
    budgets.set_budget(account, "project", "vision", 50)
    debit(account, 50)
    with pytest.raises(postings.BudgetExceeded):
        debit(account, 1)


def test_a_removed_budget_no_longer_limits_and_its_holds_settle() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 100)
    hold = postings.reserve(account, 100, key=key(), operation="op", job=job(), now=NOV)
    assert budgets.remove_budget(account, "project", "vision")
    account.refresh_from_db()
    assert not account.budgeted
    debit(account, 1_000)
    postings.settle(account, hold.hold_id, 150, key=key(), now=NOV)  # type: ignore[arg-type]
    assert not budgets.remove_budget(account, "project", "vision")
    assert_clean(account)


def test_a_batch_refuses_only_the_items_past_the_budget() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 250)
    items = [
        postings.Posting.debit(account.pk, key=key(), operation="op", amount=100, job=job()) for _ in range(4)
    ]
    results = postings.post_batch(items, now=NOV)
    assert [type(r).__name__ for r in results] == ["Receipt", "Receipt", "BudgetExceeded", "BudgetExceeded"]
    assert used(account) == (200, 0)


def test_estimates_say_when_a_budget_would_refuse() -> None:
    catalog()
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", 5)
    estimate = postings.estimate(account, "image_inference", 6, NOV, project="vision")
    assert estimate.total_credits == 6 and not estimate.sufficient
    assert estimate.budget is not None and estimate.budget["name"] == "vision"
    assert postings.estimate(account, "image_inference", 5, NOV, project="vision").sufficient
    elsewhere = postings.estimate(account, "image_inference", 6, NOV, project="other")
    assert elsewhere.sufficient and elsewhere.budget is None


def test_the_largest_limit_is_counted_without_overflow() -> None:
    account = new_account(10_000)
    budgets.set_budget(account, "project", "vision", budgets.MAX_LIMIT)
    debit(account, 9_000)
    assert used(account) == (9_000, 0)


def test_bad_budgets_are_refused() -> None:
    account = new_account()
    for scope, name, limit in [
        ("team", "x", 1),
        ("project", " ", 1),
        ("project", "x", -1),
        ("project", "x", 1.5),
    ]:
        with pytest.raises(budgets.InvalidBudget):
            budgets.set_budget(account, scope, name, limit)  # type: ignore[arg-type]
    assert not Budget.objects.exists()


# --- Alerts -----------------------------------------------------------------------------


def test_each_alert_level_emails_the_managers_once_a_month() -> None:
    org = make_org(credits=100_000)
    make_user(org, role=Role.MANAGER)
    account = org.account
    budgets.set_budget(account, "project", "vision", 1_000)
    now = dt.datetime.now(dt.UTC)

    def spend(amount: int) -> list[str]:
        mail.outbox.clear()
        debit(account, amount, now=now)
        notices.process(account.pk)
        return [str(message.subject) for message in mail.outbox]

    assert spend(400) == []
    assert spend(100) == [f'{org.name}: the project budget "vision" reached 50% this month']
    assert spend(100) == []
    assert spend(250) == [f'{org.name}: the project budget "vision" reached 80% this month']
    sent = spend(150)
    assert sent == [f'{org.name}: the project budget "vision" is used up this month']
    assert "refused (budget_exceeded)" in mail.outbox[0].body
    # Given back and crossed again: the same month says nothing twice.
    first_job = Entry.objects.filter(job__isnull=False).values_list("job__external_id", flat=True).first()
    assert first_job is not None
    postings.refund(
        account,
        first_job,
        300,
        key=key(),
        operation="refund",
        now=now,
    )
    notices.process(account.pk)
    assert spend(300) == []
    assert not Notice.objects.exists()


# --- Over the API -----------------------------------------------------------------------


def api(method: str, path: str, raw_key: str, body: Any = None) -> Any:
    return getattr(Client(), method)(
        f"/api/v1/{path}",
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )


def test_budgets_over_the_api() -> None:
    org = make_org(credits=10_000)
    ops, writer = ApiKey.issue(org, name="ops", scopes=[Scope.ACCOUNT_READ, Scope.BUDGETS_WRITE])
    _, runner = ApiKey.issue(org, name="runner", scopes=[Scope.USAGE_WRITE, Scope.ACCOUNT_READ])

    assert api("put", "budgets/project/vision", runner, {"monthly_limit": 500}).status_code == 403
    made = api("put", "budgets/project/vision", writer, {"monthly_limit": 500})
    assert made.status_code == 201
    assert made.json() == {
        "scope": "project",
        "name": "vision",
        "monthly_limit": 500,
        "used": 0,
        "held": 0,
        "remaining": 500,
    }
    assert api("put", "budgets/api_key/runner", writer, {"monthly_limit": 10_000}).status_code == 201
    assert api("put", "budgets/project/vision", writer, {"monthly_limit": 400}).status_code == 200
    for bad in [{"monthly_limit": "400"}, {"monthly_limit": -1}, {"monthly_limit": 1, "x": 1}, {}]:
        assert api("put", "budgets/project/vision", writer, bad).status_code == 422
    assert api("put", "budgets/team/vision", writer, {"monthly_limit": 1}).status_code == 422
    assert api("put", "budgets/project/a%00b", writer, {"monthly_limit": 1}).status_code == 422

    body: dict[str, Any] = {
        "operation": "image_inference",
        "quantity": 1,
        "job": {"external_id": "j-1", "project": "vision"},
    }
    spent = 0
    while True:
        answer = api("post", "debits", runner, body | {"job": {"external_id": key(), "project": "vision"}})
        if answer.status_code != 201:
            break
        spent += -answer.json()["amount"]
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["budget"] == {
        "scope": "project",
        "name": "vision",
        "monthly_limit": 400,
        "used": spent,
        "held": 0,
        "remaining": 400 - spent,
    }
    listed = api("get", "budgets", runner).json()["budgets"]
    assert [(b["scope"], b["name"], b["used"]) for b in listed] == [
        ("api_key", "runner", spent),
        ("project", "vision", spent),
    ]
    estimate = api(
        "get", "credits/estimate?operation=image_inference&quantity=1&project=vision", runner
    ).json()
    assert estimate["sufficient"] is False and estimate["budget"]["name"] == "vision"
    assert (
        api("get", "credits/estimate?operation=image_inference&quantity=1&project=a%00b", runner).status_code
        == 422
    )

    batch = api(
        "post",
        "batch",
        runner,
        {
            "postings": [
                {"kind": "debit", "idempotency_key": key(), **body},
                {
                    "kind": "debit",
                    "idempotency_key": key(),
                    "operation": "image_inference",
                    "quantity": 1,
                    "job": {"external_id": key(), "project": "other"},
                },
            ]
        },
    ).json()["results"]
    assert [r["status"] for r in batch] == [402, 201]
    assert batch[0]["error"]["code"] == "budget_exceeded"

    assert api("delete", "budgets/project/vision", writer).status_code == 204
    assert api("delete", "budgets/project/vision", writer).status_code == 404
    assert list(
        AuditRecord.objects.filter(organization=org).order_by("id").values_list("action", "actor", "detail")
    ) == [
        ("budget.set", f"ops ({ops.prefix}…)", "Monthly limit 500 credits."),
        ("budget.set", f"ops ({ops.prefix}…)", "Monthly limit 10,000 credits."),
        ("budget.set", f"ops ({ops.prefix}…)", "Monthly limit 400 credits (was 500)."),
        ("budget.removed", f"ops ({ops.prefix}…)", ""),
    ]
    assert (
        api("post", "debits", runner, body | {"job": {"external_id": key(), "project": "vision"}}).status_code
        == 201
    )
    other = make_org()
    _, stranger = ApiKey.issue(other, name="ops", scopes=[Scope.ACCOUNT_READ, Scope.BUDGETS_WRITE])
    assert api("delete", "budgets/api_key/runner", stranger).status_code == 404
    assert api("get", "budgets", stranger).json() == {"budgets": []}


# --- The page ---------------------------------------------------------------------------


def test_the_budgets_page_is_for_managers(
    org: Organization, manager_client: Client, member_client: Client, outsider_client: Client
) -> None:
    url = f"/orgs/{org.slug}/budgets/"
    assert manager_client.get(url).status_code == 200
    assert member_client.get(url).status_code == 403
    assert outsider_client.get(url).status_code == 404
    assert member_client.post(url, {"scope": "project", "name": "x", "monthly_limit": 5}).status_code == 403
    assert outsider_client.post(url, {"scope": "project", "name": "x", "monthly_limit": 5}).status_code == 404
    assert not Budget.objects.exists()
    budget, _ = budgets.set_budget(org.account, "project", "x", 5)
    assert member_client.post(f"/orgs/{org.slug}/budgets/{budget.pk}/delete/").status_code == 403
    assert outsider_client.post(f"/orgs/{org.slug}/budgets/{budget.pk}/delete/").status_code == 404
    assert Budget.objects.count() == 1


def test_a_manager_sets_watches_and_removes_a_budget(org: Organization, manager_client: Client) -> None:
    url = f"/orgs/{org.slug}/budgets/"
    answer = manager_client.post(url, {"scope": "project", "name": "vision", "monthly_limit": "500"})
    assert answer.status_code == 302 and answer["Location"] == url
    postings.post_top_up(org.account, 1_000, key=key(), source=LotSource.PURCHASE, operation="pack")
    postings.debit(org.account, 200, key=key(), operation="op", job=job())
    postings.reserve(org.account, 100, key=key(), operation="op", job=job())
    page = manager_client.get(url).content.decode()
    assert "200 used + 100 held of 500 credits" in page
    assert "200 left" in page
    assert 'aria-valuenow="60"' in page
    assert "usage/report/?from=" in page and "group=user&amp;project=vision" in page
    bad = manager_client.post(url, {"scope": "project", "name": "vision", "monthly_limit": "-5"})
    assert bad.status_code == 422
    assert Budget.objects.get().monthly_limit == 500
    budget = Budget.objects.get()
    assert manager_client.post(f"{url}{budget.pk}/delete/").status_code == 302
    assert not Budget.objects.exists()
    assert list(
        AuditRecord.objects.filter(organization=org).order_by("id").values_list("action", "target")
    ) == [
        ("budget.set", "project vision"),
        ("budget.removed", "project vision"),
    ]
