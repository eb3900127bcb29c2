"""Outgoing webhooks in process: the pages and their access rules, each event kind
arriving signed at a real HTTP receiver on 127.0.0.1, retries, giving up, secret
rotation and the refusal of private addresses. (tests/test_webhooks_worker.py runs the
same path on a real Celery worker.)"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from billing import closing, notices, purchases
from billing.celery import app
from billing.models import AlertKind, AlertThreshold, Organization, Purchase, PurchaseStatus, Role
from ledger import budgets, postings
from ledger.models import Notice
from ledger.periods import month_start
from team.models import AuditRecord
from tests.close_helpers import backdate, past_months, post_month
from tests.factories import fund, make_org, make_user
from tests.webhook_receiver import Answer, Receiver, running_receiver
from webhooks import delivery, events
from webhooks.models import Delivery, DeliveryStatus, Endpoint, Event, EventType

pytestmark = pytest.mark.django_db

CREDITS = ["credits.low", "credits.exhausted", "credits.restored"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Deliveries sent in this process as soon as what stored them commits."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def sent(
    eager_tasks: None, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> DjangoCaptureOnCommitCallbacks:
    """``with sent(execute=True):`` runs what commits inside, deliveries included."""
    return django_capture_on_commit_callbacks


def add_endpoint(client: Client, org: Organization, url: str, event_types: list[str]) -> tuple[Endpoint, str]:
    """Add an endpoint through the page; it and its secret, as the page shows it once."""
    response = client.post(reverse("webhooks", args=[org.slug]), {"url": url, "events": event_types})
    assert response.status_code == 302, response.text
    page = client.get(response["Location"]).text
    match = re.search(r'data-testid="webhook-secret">(whsec_[^<]+)<', page)
    assert match is not None
    return Endpoint.objects.get(organization=org, url=url), match.group(1)


def debit(org: Organization, amount: int, project: str = "") -> None:
    key = f"debit-{uuid.uuid4()}"
    job = postings.JobInfo(key, project=project)
    postings.debit(org.account, amount, key=key, operation="training_a10g_per_minute", job=job)


def process(org: Organization, sent: DjangoCaptureOnCommitCallbacks) -> None:
    """What the worker does after a posting commits: act on its notices (and deliver)."""
    with sent(execute=True):
        notices.process(org.account_id)


# --- Events ---------------------------------------------------------------------------


def test_credits_low_exhausted_and_restored_arrive_signed_once_per_crossing(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    endpoint, secret = add_endpoint(manager_client, org, receiver.url, CREDITS)
    org.account.refresh_from_db()
    assert org.account.notify  # the ledger now notices each posting
    # The Standard plan's 10,000 credits a month, no alert thresholds: low is below 1,000.
    for amount in (3_000, 1_500, 200):  # 2,000 left, then 500, then 300
        debit(org, amount)
        process(org, sent)
    debit(org, 300)  # none left
    process(org, sent)
    fund(org, 200)  # some, still low
    fund(org, 5_000)  # plenty
    process(org, sent)
    debit(org, 5_200)  # straight to zero: low and exhausted both crossed
    process(org, sent)
    payloads = receiver.payloads(secret)
    assert [(p["type"], p["data"]["available"]) for p in payloads] == [
        ("credits.low", 500),
        ("credits.exhausted", 0),
        ("credits.low", 200),
        ("credits.restored", 5_200),
        ("credits.low", 0),
        ("credits.exhausted", 0),
    ]
    low = payloads[0]
    assert low["data"]["organization"] == org.slug and low["data"]["low_level"] == 1_000
    assert low["data"]["posting"]["action"] == "debit" and low["data"]["posting"]["amount"] == -1_500
    assert Delivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.SUCCEEDED).count() == 6
    assert not Notice.objects.exists()


def test_the_lowest_alert_threshold_sets_the_low_level(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=3_000)
    AlertThreshold.objects.create(organization=org, kind=AlertKind.PERCENT, value=40)  # 4,000
    _, secret = add_endpoint(manager_client, org, receiver.url, ["credits.low"])
    assert "below 3,000" in manager_client.get(reverse("webhooks", args=[org.slug])).text
    debit(org, 1_500)  # 3,500: below 4,000 but not 3,000
    process(org, sent)
    assert receiver.payloads(secret) == []
    debit(org, 600)
    process(org, sent)
    assert [p["data"]["available"] for p in receiver.payloads(secret)] == [2_900]


def test_a_rolled_back_posting_stores_and_sends_nothing(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    add_endpoint(manager_client, org, receiver.url, CREDITS)
    with pytest.raises(RuntimeError), transaction.atomic():
        debit(org, 5_000)
        raise RuntimeError("rolled back")
    process(org, sent)
    assert not Notice.objects.exists() and not Event.objects.exists()
    assert receiver.received == []


def test_hold_expired_arrives_with_the_hold(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    _, secret = add_endpoint(manager_client, org, receiver.url, ["hold.expired"])
    long_ago = timezone.now() - dt.timedelta(days=2)
    job = postings.JobInfo("run-7", name="yolox")
    hold = postings.reserve(
        org.account, 400, key="hold", operation="training_a10g_per_minute", job=job, now=long_ago
    )
    assert postings.release_expired_holds() == 1
    process(org, sent)
    (payload,) = receiver.payloads(secret)
    assert payload["type"] == "hold.expired"
    data = payload["data"]
    assert (data["hold_id"], data["amount"], data["job"], data["operation"]) == (
        hold.hold_id,
        400,
        "run-7",
        "training_a10g_per_minute",
    )


def test_budget_exceeded_arrives_once_a_month(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    _, secret = add_endpoint(manager_client, org, receiver.url, ["budget.exceeded"])
    budgets.set_budget(org.account, "project", "vision", 1_000)
    debit(org, 800, project="vision")  # 80%: the managers' email, no webhook
    process(org, sent)
    assert receiver.received == []
    debit(org, 200, project="vision")
    process(org, sent)
    (payload,) = receiver.payloads(secret)
    assert payload["type"] == "budget.exceeded"
    assert payload["data"]["budget"]["name"] == "vision"
    assert payload["data"]["budget"]["monthly_limit"] == 1_000
    assert payload["data"]["budget"]["remaining"] == 0
    assert payload["data"]["month"] == f"{timezone.now():%Y-%m}"
    budgets.set_budget(org.account, "project", "vision", 1_100)  # raised, then used up again
    debit(org, 100, project="vision")
    process(org, sent)
    assert len(receiver.received) == 1


def test_statement_closed_arrives_for_each_month_closed(
    manager: User, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    org = make_org("standard")
    make_user(org, Role.MANAGER)
    periods = past_months(org)
    backdate(org, month_start(periods[0], org.tzinfo))
    for period in periods:
        post_month(org, period)
    client = Client()
    client.force_login(make_user(org, Role.MANAGER))
    _, secret = add_endpoint(client, org, receiver.url, ["statement.closed"])
    with sent(execute=True):
        closing.close_organization(org)
    payloads = receiver.payloads(secret)
    assert [p["data"]["period"] for p in payloads] == [f"{period:%Y-%m}" for period in periods]
    for payload in payloads:
        data = payload["data"]
        assert data["closing_balance"] == data["brought_forward"] + data["top_ups"] - data["credits_used"]
        assert data["invoice"]["period"] == data["period"]
    assert payloads[1]["data"]["brought_forward"] == payloads[0]["data"]["closing_balance"]


def test_top_up_succeeded_and_failed_arrive_for_credit_packs(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    _, secret = add_endpoint(manager_client, org, receiver.url, ["top_up.succeeded", "top_up.failed"])
    manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]))
    purchase = Purchase.objects.get()
    with sent(execute=True):
        manager_client.post(reverse("checkout_pay", args=[org.slug, purchase.provider_session_id]))
    manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]))
    declined = Purchase.objects.exclude(pk=purchase.pk).get()
    with sent(execute=True):
        purchases.close_unpaid(declined, status=PurchaseStatus.FAILED)
    paid, failed = receiver.payloads(secret)
    assert paid["type"] == "top_up.succeeded"
    assert (paid["data"]["purchase_id"], paid["data"]["credits"], paid["data"]["available"]) == (
        purchase.pk,
        1_000,
        6_000,
    )
    assert (paid["data"]["amount_cents"], paid["data"]["currency"]) == (1_500, "USD")
    assert failed["type"] == "top_up.failed" and failed["data"]["purchase_id"] == declined.pk


def test_invoice_events_are_recorded_by_the_function_payments_call(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    _, secret = add_endpoint(manager_client, org, receiver.url, ["invoice.paid"])
    invoice = org.invoices.create(period=dt.date(2025, 1, 1), number="T-2025-01", total_cents=2_900)
    with sent(execute=True), transaction.atomic():
        events.record(org, EventType.INVOICE_PAID, events.invoice_data(invoice))
        events.record(org, EventType.INVOICE_PAYMENT_FAILED, events.invoice_data(invoice))  # not chosen
    (payload,) = receiver.payloads(secret)
    assert payload["type"] == "invoice.paid"
    assert payload["data"] == {
        "organization": org.slug,
        "number": "T-2025-01",
        "period": "2025-01",
        "total_cents": 2_900,
        "currency": "USD",
        "status": "open",
    }


def test_test_event_button_and_secret_rotation_with_overlap(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    endpoint, old = add_endpoint(manager_client, org, receiver.url, ["credits.low"])
    page = reverse("webhook_endpoint", args=[org.slug, endpoint.pk])
    assert "whsec_" not in manager_client.get(page).text.replace(endpoint.secret_hint, "")  # shown once
    with sent(execute=True):
        response = manager_client.post(reverse("webhook_test", args=[org.slug, endpoint.pk]), follow=True)
    assert "Test event sent" in response.text
    (first,) = receiver.payloads(old)
    assert first["type"] == "webhook.test" and first["data"]["organization"] == org.slug
    response = manager_client.post(reverse("webhook_rotate", args=[org.slug, endpoint.pk]), follow=True)
    new = re.search(r'data-testid="webhook-secret">(whsec_[^<]+)<', response.text)
    assert new is not None and new.group(1) != old
    with sent(execute=True):
        manager_client.post(reverse("webhook_test", args=[org.slug, endpoint.pk]))
    second = receiver.received[-1]
    assert second.verify(old)["type"] == second.verify(new.group(1))["type"] == "webhook.test"
    endpoint.refresh_from_db()
    later = timezone.now() + dt.timedelta(hours=25)
    assert endpoint.signing_secrets(later) == [new.group(1)]  # the overlap is over
    log = manager_client.get(page).text
    assert log.count("webhook.test") == 2 and "Succeeded" in log


# --- Retries, giving up ---------------------------------------------------------------


def test_a_failed_delivery_is_retried_when_due_and_keeps_1_kib_of_the_answer(
    manager_client: Client, org: Organization, receiver: Receiver, sent: DjangoCaptureOnCommitCallbacks
) -> None:
    endpoint, secret = add_endpoint(manager_client, org, receiver.url, CREDITS)
    receiver.script = [Answer(500, body=b"x" * 5_000)]
    with sent(execute=True):
        events.send_test(endpoint)
    sent_once = Delivery.objects.get()
    assert (sent_once.status, sent_once.attempts, sent_once.response_code) == ("pending", 1, 500)
    assert sent_once.response_body == "x" * 1024
    assert sent_once.next_attempt_at is not None and sent_once.last_attempt_at is not None
    assert sent_once.next_attempt_at - sent_once.last_attempt_at == dt.timedelta(seconds=30)
    assert delivery.attempt(sent_once.pk) == "not due"
    assert len(receiver.received) == 1
    assert delivery.attempt(sent_once.pk, now=sent_once.next_attempt_at) == "succeeded after attempt 2"
    assert [r.id for r in receiver.received] == [sent_once.event.message_id] * 2
    assert len(receiver.payloads(secret)) == 1  # the receiver dedupes the repeat


def test_a_dead_endpoint_is_disabled_and_its_managers_emailed(
    manager_client: Client,
    manager: User,
    org: Organization,
    receiver: Receiver,
    sent: DjangoCaptureOnCommitCallbacks,
    settings: Settings,
) -> None:
    settings.WEBHOOKS_RETRY_DELAYS = (60, 3_600)
    endpoint, _ = add_endpoint(manager_client, org, receiver.url, CREDITS)
    receiver.script = [Answer(503)] * 3
    with sent(execute=True):
        events.send_test(endpoint)
    failing = Delivery.objects.get()
    with sent(execute=True):
        assert delivery.attempt(failing.pk, now=timezone.now() + dt.timedelta(seconds=61)) == (
            "pending after attempt 2"
        )
        assert delivery.attempt(failing.pk, now=timezone.now() + dt.timedelta(hours=2)) == (
            "failed after attempt 3"
        )
    endpoint.refresh_from_db()
    org.account.refresh_from_db()
    assert not endpoint.enabled and "every delivery failed" in endpoint.disabled_reason
    assert not org.account.notify  # nothing else listens to its postings
    (email,) = mail.outbox
    assert email.to == [manager.email] and "webhook endpoint disabled" in str(email.subject)
    assert receiver.url in str(email.body)
    page = manager_client.get(reverse("webhook_endpoint", args=[org.slug, endpoint.pk])).text
    assert "Disabled" in page and "every delivery failed" in page
    debit(org, 5_000)
    assert not Event.objects.filter(type="credits.exhausted").exists()  # no notice, no event
    response = manager_client.post(
        reverse("webhook_resend", args=[org.slug, endpoint.pk, failing.pk]), follow=True
    )
    assert "Enable the endpoint to resend to it." in response.text
    manager_client.post(
        reverse("webhook_endpoint", args=[org.slug, endpoint.pk]),
        {"url": receiver.url, "events": CREDITS, "enabled": "on"},
    )
    endpoint.refresh_from_db()
    org.account.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_reason == "" and org.account.notify
    with sent(execute=True):
        manager_client.post(reverse("webhook_resend", args=[org.slug, endpoint.pk, failing.pk]))
    assert Delivery.objects.filter(event=failing.event, status=DeliveryStatus.SUCCEEDED).count() == 1


def test_the_retry_schedule_lasts_three_days() -> None:
    from billing import settings as tally_settings

    delays = tally_settings.WEBHOOKS_RETRY_DELAYS
    assert 2.5 * 86_400 < sum(delays) <= 3 * 86_400
    assert list(delays) == sorted(delays) and delays[0] == 30
    assert tally_settings.WEBHOOKS_TIMEOUT == 10


def test_notify_is_on_while_an_endpoint_is_enabled_or_a_threshold_is_set(
    manager_client: Client, org: Organization, receiver: Receiver
) -> None:
    def notify() -> bool:
        org.account.refresh_from_db()
        return org.account.notify

    endpoint, _ = add_endpoint(manager_client, org, receiver.url, CREDITS)
    threshold = AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=100)
    manager_client.post(reverse("webhook_delete", args=[org.slug, endpoint.pk]))
    assert notify()  # the threshold still needs it
    threshold.delete()
    assert not notify()
    add_endpoint(manager_client, org, receiver.url, CREDITS)
    assert notify()


# --- Safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
    ],
)
def test_private_addresses_and_other_schemes_are_refused(
    manager_client: Client, org: Organization, settings: Settings, url: str
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    response = manager_client.post(reverse("webhooks", args=[org.slug]), {"url": url, "events": CREDITS})
    assert response.status_code == 422
    assert not Endpoint.objects.exists()
    refusals = ("public addresses only", "Use an http:// or https:// URL", "Enter a valid URL")
    assert any(refusal in response.text for refusal in refusals)


def test_a_public_address_is_accepted(manager_client: Client, org: Organization, settings: Settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    response = manager_client.post(
        reverse("webhooks", args=[org.slug]), {"url": "https://93.184.215.14/hook", "events": CREDITS}
    )
    assert response.status_code == 302
    assert Endpoint.objects.get().url == "https://93.184.215.14/hook"


def test_a_connection_that_reaches_a_private_address_is_refused_before_sending(
    manager_client: Client,
    org: Organization,
    receiver: Receiver,
    sent: DjangoCaptureOnCommitCallbacks,
    settings: Settings,
) -> None:
    # Saved while allowed; since then its name points somewhere private (DNS rebinding).
    endpoint, _ = add_endpoint(manager_client, org, receiver.url.replace("127.0.0.1", "localhost"), CREDITS)
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    with sent(execute=True):
        events.send_test(endpoint)
    refused = Delivery.objects.get()
    assert refused.status == "pending" and refused.response_code is None
    assert "not a public address" in refused.error
    assert receiver.received == []


# --- Access ---------------------------------------------------------------------------


def test_members_get_403_and_other_organizations_404(
    manager_client: Client,
    member_client: Client,
    outsider_client: Client,
    org: Organization,
    other_org: Organization,
    receiver: Receiver,
) -> None:
    endpoint, _ = add_endpoint(manager_client, org, receiver.url, CREDITS)
    ev = events.send_test(endpoint)
    sent_one = Delivery.objects.get(event=ev)
    pages = [
        reverse("webhooks", args=[org.slug]),
        reverse("webhook_endpoint", args=[org.slug, endpoint.pk]),
    ]
    actions = [
        reverse("webhook_rotate", args=[org.slug, endpoint.pk]),
        reverse("webhook_test", args=[org.slug, endpoint.pk]),
        reverse("webhook_resend", args=[org.slug, endpoint.pk, sent_one.pk]),
        reverse("webhook_delete", args=[org.slug, endpoint.pk]),
    ]
    for url in pages:
        assert manager_client.get(url).status_code == 200
        assert member_client.get(url).status_code == 403
        assert outsider_client.get(url).status_code == 404
    for url in actions:
        assert manager_client.get(url).status_code == 405
        assert member_client.post(url).status_code == 403
        assert outsider_client.post(url).status_code == 404
    # The outsider's own organization does not reach this endpoint either.
    theirs = reverse("webhook_endpoint", args=[other_org.slug, endpoint.pk])
    assert outsider_client.get(theirs).status_code == 404
    assert member_client.post(reverse("webhooks", args=[org.slug]), {"url": receiver.url}).status_code == 403
    assert Endpoint.objects.count() == 1 and Delivery.objects.count() == 1
    endpoint.refresh_from_db()
    assert endpoint.secret_hint in manager_client.get(pages[1]).text


def test_the_profile_menu_links_managers_to_webhooks(
    manager_client: Client, member_client: Client, org: Organization
) -> None:
    link = reverse("webhooks", args=[org.slug])
    assert link in manager_client.get(reverse("organization", args=[org.slug])).text
    assert link not in member_client.get(reverse("organization", args=[org.slug])).text


def test_every_endpoint_change_writes_one_audit_record(
    manager_client: Client, org: Organization, receiver: Receiver
) -> None:
    endpoint, _ = add_endpoint(manager_client, org, receiver.url, CREDITS)
    manager_client.post(
        reverse("webhook_endpoint", args=[org.slug, endpoint.pk]),
        {"url": receiver.url, "events": CREDITS, "description": "runner"},
    )
    manager_client.post(reverse("webhook_rotate", args=[org.slug, endpoint.pk]))
    manager_client.post(reverse("webhook_delete", args=[org.slug, endpoint.pk]))
    records = AuditRecord.objects.filter(organization=org).order_by("id")
    assert list(records.values_list("action", "target")) == [
        ("webhook.created", receiver.url),
        ("webhook.changed", receiver.url),
        ("webhook.changed", receiver.url),
        ("webhook.removed", receiver.url),
    ]
    assert records[2].detail.startswith("Signing secret rotated")
