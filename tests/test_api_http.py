"""The API over real HTTP: gunicorn with several workers on the test database, driven by
concurrent requests and by the Python client."""

from __future__ import annotations

import collections
import http.client
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from pytest_django import DjangoDbBlocker

from billing.client import (
    BudgetExceededError,
    Client,
    InsufficientCreditsError,
    Job,
    TallyError,
    debit_item,
    refund_item,
    release_item,
    settle_item,
)
from billing.models import ApiKey, Scope
from ledger import postings
from ledger.models import Entry
from tests.close_helpers import database_url
from tests.factories import make_org

ROOT = Path(__file__).resolve().parent.parent
HOST, PORT = "127.0.0.1", int(os.environ.get("API_TEST_PORT", "8161"))
BASE_URL = f"http://{HOST}:{PORT}"


@pytest.fixture(scope="module")
def gunicorn(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "API_RATE_LIMIT": "0",
        "DJANGO_SETTINGS_MODULE": "billing.settings",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "billing.wsgi:application",
            "--workers",
            "4",
            "--bind",
            f"{HOST}:{PORT}",
            "--log-level",
            "warning",
            "--backlog",
            "512",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection(HOST, PORT, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().read() == b"ok":
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield BASE_URL
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def post(path: str, key: str, body: dict[str, object], idempotency_key: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Idempotency-Key": idempotency_key,
            },
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_debits_on_150_credits_give_150_successes_and_50_refusals(gunicorn: str) -> None:
    org = make_org("standard", credits=150)
    _, key = ApiKey.issue(org, name="runner", scopes=[Scope.USAGE_WRITE])

    def debit(n: int) -> tuple[int, dict[str, Any]]:
        return post(
            "/api/v1/debits",
            key,
            {"operation": "image_inference", "quantity": 1, "job": {"external_id": f"img-{n}"}},
            f"img-{n}",
        )

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(debit, range(200)))
    assert collections.Counter(status for status, _ in results) == {201: 150, 402: 50}
    refusal = next(body for status, body in results if status == 402)["error"]
    assert (refusal["code"], refusal["required"], refusal["remaining"]) == (
        "insufficient_credits",
        1,
        0,
    )
    org.account.refresh_from_db()
    assert (org.account.balance, org.account.held) == (0, 0)
    assert Entry.objects.filter(account=org.account, kind="debit").count() == 150
    out = io.StringIO()
    call_command("check_ledger", stdout=out)  # raises CommandError on any break
    assert "Ledger clean" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_client_pages_through_the_whole_ledger_and_it_sums_to_the_balance(gunicorn: str) -> None:
    org = make_org("professional", credits=20_000)
    _, key = ApiKey.issue(org, name="runner", scopes=[Scope.ACCOUNT_READ, Scope.USAGE_WRITE])
    for n in range(180):
        postings.debit(
            org.account, 7 + n % 5, key=f"bulk-{n}", operation="image_inference", quantity=7 + n % 5
        )
    client = Client(gunicorn, key)
    job = Job("train-42", name="yolox", project="shelf-detector", user="ada", resource_class="a100")
    estimate = client.credits.estimate("training_a100_per_minute", quantity=30)
    assert (estimate.total_credits, estimate.sufficient) == (1_800, True)
    assert sum(lot.credits for lot in estimate.lots) == 1_800
    hold = client.reserve("training_a100_per_minute", 30, job=job)
    settled = client.settle(hold.hold_id or 0, quantity=25)
    assert (settled.amount, settled.credits_held) == (-1_500, 0)
    refund = client.refund(job, 300, "training_refund_a100")
    assert refund.amount == 300
    released = client.release(client.reserve("sam3_per_minute", amount=50).hold_id or 0)
    assert released.credits_held == 0
    debit = client.debit("image_generate_imagen_fast", 4, idempotency_key="imagen-4")
    assert client.debit("image_generate_imagen_fast", 4, idempotency_key="imagen-4") == debit

    walked = client.credits.iter(page_size=25)
    first_page = [next(walked) for _ in range(25)]
    # An entry posted mid-walk neither repeats an entry nor shifts the pages.
    balance_before = client.credits.balance().credits_remaining
    client.debit("image_inference", 1)
    entries = first_page + list(walked)
    assert len(entries) == Entry.objects.filter(account=org.account).count() - 1
    assert len({e.id for e in entries}) == len(entries)
    assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
    assert sum(e.amount for e in entries) == balance_before
    assert entries[-1].amount == 20_000 and entries[0].balance_after == balance_before
    assert client.credits.balance().credits_remaining == balance_before - 1

    with pytest.raises(InsufficientCreditsError) as refused:
        client.debit("training_h100_per_minute", 10_000)
    assert refused.value.required == 1_200_000
    assert refused.value.remaining == balance_before - 1
    assert refused.value.upgrade_url.endswith(f"/orgs/{org.slug}/billing/")


@pytest.mark.django_db(transaction=True)
def test_client_posts_a_batch_each_item_answered_in_its_place(gunicorn: str) -> None:
    org = make_org("professional", credits=1_000)
    _, key = ApiKey.issue(org, name="runner", scopes=[Scope.ACCOUNT_READ, Scope.USAGE_WRITE])
    client = Client(gunicorn, key)
    hold = client.reserve("image_inference", amount=100, idempotency_key="h")
    job = Job("render-1", project="catalog")
    items = [
        debit_item("image_generate_imagen_fast", 20, idempotency_key="b-1", job=job),  # 100
        debit_item("training_h100_per_minute", 100, idempotency_key="b-2"),  # 12,000: refused
        settle_item(hold.hold_id or 0, 60, idempotency_key="b-3"),
        refund_item(job, 30, "image_refund", idempotency_key="b-4"),
        release_item(hold.hold_id or 0, idempotency_key="b-5"),  # settled already
    ]
    first = client.batch(items)
    assert [type(r).__name__ for r in first] == [
        "Posting",
        "InsufficientCreditsError",
        "Posting",
        "Posting",
        "TallyError",
    ]
    assert isinstance(first[4], TallyError) and first[4].code == "hold_not_pending"
    again = client.batch(items)  # a retry replays each posting
    assert [again[n] for n in (0, 2, 3)] == [first[n] for n in (0, 2, 3)]
    assert client.credits.balance().credits_remaining == 1_000 - 100 - 60 + 30
    assert [(d.top_ups, d.credits_used) for d in client.usage(days=1)] == [(1_000, 130)]


@pytest.mark.django_db(transaction=True)
def test_client_sets_a_budget_and_is_refused_past_it(gunicorn: str) -> None:
    org = make_org("professional", credits=10_000)
    scopes: list[str] = [Scope.ACCOUNT_READ, Scope.USAGE_WRITE, Scope.BUDGETS_WRITE]
    client = Client(gunicorn, ApiKey.issue(org, name="runner", scopes=scopes)[1])
    assert client.set_budget("project", "shelf detector/v2", 500).remaining == 500
    job = Job("run-1", project="shelf detector/v2")
    client.debit("image_inference", 400, job=job)
    estimate = client.credits.estimate("image_inference", 101, project="shelf detector/v2")
    assert not estimate.sufficient and estimate.budget is not None and estimate.budget.remaining == 100
    with pytest.raises(BudgetExceededError) as refused:
        client.debit("image_inference", 101, job=Job("run-2", project="shelf detector/v2"))
    assert (refused.value.status, refused.value.required) == (402, 101)
    assert (refused.value.budget.name, refused.value.budget.used) == ("shelf detector/v2", 400)
    (item,) = client.batch([debit_item("image_inference", 101, idempotency_key="b", job=job)])
    assert isinstance(item, BudgetExceededError)
    assert [(b.name, b.used, b.remaining) for b in client.budgets()] == [("shelf detector/v2", 400, 100)]
    client.remove_budget("project", "shelf detector/v2")
    assert client.budgets() == []
