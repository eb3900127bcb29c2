"""Outgoing webhooks on a real Celery worker (real Redis, real PostgreSQL) and a real
HTTP receiver on 127.0.0.1: a new user's first endpoint hearing the demo's credits run
dry through the API, retries after 500s and timeouts, and a worker killed mid-delivery."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from billing.models import ApiKey, Role, Scope
from ledger import postings
from tests.close_helpers import celery_worker, database_url, wait_for
from tests.factories import make_org, make_user
from tests.webhook_receiver import Answer, Receiver, running_receiver
from webhooks import tasks
from webhooks.models import Delivery, DeliveryStatus, Endpoint

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker retries after a second, and waits a second for an answer (the schedule
    and the 10 s limit are the settings' defaults, tested in tests/test_webhooks.py)."""
    monkeypatch.setenv("WEBHOOKS_RETRY_DELAYS", "1,1,1")
    monkeypatch.setenv("WEBHOOKS_TIMEOUT", "1")


def _add_endpoint(client: Client, slug: str, url: str, events: list[str]) -> str:
    response = client.post(reverse("webhooks", args=[slug]), {"url": url, "events": events}, follow=True)
    match = re.search(r'data-testid="webhook-secret">(whsec_[^<]+)<', response.text)
    assert match is not None, response.text
    return match.group(1)


def _debit(client: Client, key: str, quantity: int, idempotency_key: str) -> int:
    response = client.post(
        "/api/v1/debits",
        data=json.dumps(
            {
                "operation": "training_a10g_per_minute",
                "quantity": quantity,
                "job": {"external_id": idempotency_key},
            }
        ),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
    )
    return response.status_code


def test_a_new_endpoint_hears_the_credits_run_low_then_out_signed(receiver: Receiver) -> None:
    org = make_org("standard", credits=5_000)
    manager = make_user(org, Role.MANAGER)
    browser = Client()
    browser.force_login(manager)
    secret = _add_endpoint(
        browser, org.slug, receiver.url, ["credits.low", "credits.exhausted", "credits.restored"]
    )
    _, key = ApiKey.issue(org, name="job-runner", scopes=[Scope.ACCOUNT_READ, Scope.USAGE_WRITE])
    api = Client()
    with celery_worker(concurrency=2):
        with pytest.raises(RuntimeError), transaction.atomic():
            postings.debit(org.account, 5_000, key="rolled-back", operation="training_a100_per_minute")
            raise RuntimeError("rolled back")
        # 10 credits a minute: 4,200 leaves 800 (below the Standard plan's 1,000), 800 none.
        assert _debit(api, key, 420, "run-1") == 201
        wait_for(lambda: receiver.types(secret) == ["credits.low"], timeout=30)
        assert _debit(api, key, 80, "run-2") == 201
        assert _debit(api, key, 1, "run-3") == 402  # refused: no notice, no event
        wait_for(lambda: receiver.types(secret) == ["credits.low", "credits.exhausted"], timeout=30)
        # The receiver has answered; the worker records the answer just after.
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 2, timeout=30)
    low, exhausted = receiver.payloads(secret)
    assert low["data"]["available"] == 800 and exhausted["data"]["available"] == 0
    assert {r.headers["webhook-signature"].startswith("v1,") for r in receiver.received} == {True}
    assert len(receiver.received) == 2  # the rolled-back debit sent nothing
    page = browser.get(reverse("webhook_endpoint", args=[org.slug, Endpoint.objects.get().pk])).text
    assert page.count("Succeeded") == 2
    assert "credits.low" in page and "credits.exhausted" in page


def test_retries_after_500s_and_timeouts_until_a_2xx(receiver: Receiver, quick_retries: None) -> None:
    org = make_org("standard", credits=5_000)
    browser = Client()
    browser.force_login(make_user(org, Role.MANAGER))
    secret = _add_endpoint(browser, org.slug, receiver.url, ["credits.low"])
    endpoint = Endpoint.objects.get()
    receiver.script = [Answer(500), Answer(200, delay=2.5), Answer(502)]
    with celery_worker():
        browser.post(reverse("webhook_test", args=[org.slug, endpoint.pk]))
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists(), timeout=40)
    delivered = Delivery.objects.get()
    assert (delivered.attempts, delivered.response_code, delivered.error) == (4, 200, "")
    assert len({r.id for r in receiver.received}) == 1 and len(receiver.received) == 4
    for request in receiver.received:
        assert request.verify(secret)["type"] == "webhook.test"


def test_a_worker_killed_mid_delivery_delivers_exactly_once_more(receiver: Receiver) -> None:
    org = make_org("standard", credits=5_000)
    browser = Client()
    browser.force_login(make_user(org, Role.MANAGER))
    secret = _add_endpoint(browser, org.slug, receiver.url, ["credits.low"])
    endpoint = Endpoint.objects.get()
    hung = threading.Event()
    receiver.script = [Answer(200, hold=hung)]
    with celery_worker() as worker:
        browser.post(reverse("webhook_test", args=[org.slug, endpoint.pk]))
        wait_for(lambda: len(receiver.received) == 1, timeout=30)
        worker.kill()  # while the receiver has the request and has not answered
    hung.set()
    connection.close()
    wait_for(lambda: not _busy_sessions(), timeout=30)
    pending = Delivery.objects.get()
    assert (pending.status, pending.attempts) == (DeliveryStatus.PENDING, 0)  # the attempt left nothing
    with celery_worker():
        assert tasks.retry_deliveries.delay(0).get(timeout=30) == 1  # the sweep finds it
        wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists(), timeout=30)
        assert tasks.retry_deliveries.delay(0).get(timeout=30) == 0
        time.sleep(1)
    assert len(receiver.received) == 2
    assert receiver.received[0].id == receiver.received[1].id  # the receiver drops the repeat
    assert len(receiver.payloads(secret)) == 1
    assert Delivery.objects.get().attempts == 1


def _busy_sessions() -> int:
    """Sessions on the test database besides this probe still in a transaction (the killed
    worker's ends once PostgreSQL finds its client gone, rolling its attempt back)."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        ).fetchone()
    return int(row[0]) if row else 0
