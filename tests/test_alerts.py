"""Low-credit alerts: the settings page and its access rules, and the emails (tasks run
eagerly in process here; tests/test_alerts_worker.py runs them on a real worker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import closing
from billing.celery import app
from billing.models import AlertKind, AlertThreshold, Organization, Role
from ledger import postings
from ledger.periods import month_start
from tests.close_helpers import backdate, past_months, post_month
from tests.factories import PASSWORD, fund, make_org, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _debit(org: Organization, amount: int, key: str) -> None:
    postings.debit(org.account, amount, key=key, operation="training_a10g_per_minute")


# --- The page --------------------------------------------------------------------------


def test_manager_adds_and_removes_thresholds(manager_client: Client, org: Organization) -> None:
    url = reverse("alerts", args=[org.slug])
    assert "No alerts yet." in manager_client.get(url).text
    response = manager_client.post(url, {"kind": "percent", "value": "20"}, follow=True)
    assert "Alert added: below 20%." in response.text
    assert "20% of the allowance" in response.text
    assert "2,000" in response.text  # 20% of the Standard plan's 10,000 credits
    manager_client.post(url, {"kind": "absolute", "value": "500"})
    assert list(org.alert_thresholds.order_by("kind").values_list("kind", "value")) == [
        ("absolute", 500),
        ("percent", 20),
    ]
    threshold = org.alert_thresholds.get(kind=AlertKind.ABSOLUTE)
    response = manager_client.post(reverse("delete_alert", args=[org.slug, threshold.pk]), follow=True)
    assert "Alert removed: below 500 credits." in response.text
    assert org.alert_thresholds.count() == 1


def test_invalid_thresholds_are_refused(manager_client: Client, org: Organization) -> None:
    url = reverse("alerts", args=[org.slug])
    response = manager_client.post(url, {"kind": "percent", "value": "150"})
    assert response.status_code == 422 and "A percentage is at most 100." in response.text
    response = manager_client.post(url, {"kind": "absolute", "value": "0"})
    assert response.status_code == 422 and "Use a positive number." in response.text
    manager_client.post(url, {"kind": "absolute", "value": "700"})
    response = manager_client.post(url, {"kind": "absolute", "value": "700"})
    assert response.status_code == 422 and "That alert is already set." in response.text
    assert org.alert_thresholds.count() == 1


def test_member_cannot_open_or_change_alerts(member_client: Client, org: Organization) -> None:
    threshold = AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=10)
    assert member_client.get(reverse("alerts", args=[org.slug])).status_code == 403
    assert (
        member_client.post(reverse("alerts", args=[org.slug]), {"kind": "absolute", "value": "5"}).status_code
        == 403
    )
    assert member_client.post(reverse("delete_alert", args=[org.slug, threshold.pk])).status_code == 403
    assert org.alert_thresholds.count() == 1


def test_other_organization_alerts_are_not_found(outsider_client: Client, org: Organization) -> None:
    threshold = AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=10)
    assert outsider_client.get(reverse("alerts", args=[org.slug])).status_code == 404
    assert outsider_client.post(reverse("delete_alert", args=[org.slug, threshold.pk])).status_code == 404
    assert org.alert_thresholds.count() == 1


def test_alerts_page_wrong_method_and_anonymous(manager_client: Client, org: Organization) -> None:
    assert manager_client.put(reverse("alerts", args=[org.slug])).status_code == 405
    assert manager_client.get(reverse("delete_alert", args=[org.slug, 1])).status_code == 405
    assert Client().get(reverse("alerts", args=[org.slug])).status_code == 302


def test_profile_menu_links_alerts_for_managers_only(
    manager_client: Client, member_client: Client, org: Organization
) -> None:
    link = f'href="{reverse("alerts", args=[org.slug])}"'
    assert link in manager_client.get(reverse("organization", args=[org.slug])).text
    assert link not in member_client.get(reverse("organization", args=[org.slug])).text


# --- The emails ------------------------------------------------------------------------


def test_crossing_down_emails_the_managers_once_and_a_top_up_restores(
    eager_tasks: None,
    org: Organization,
    manager: User,
    member: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    second_manager = make_user(org, Role.MANAGER)
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=1_000)
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 3_000, "a")  # 5,000 -> 2,000: still above
    assert mail.outbox == []
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 1_500, "b")  # 2,000 -> 500: crosses
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == sorted([manager.email, second_manager.email])
    assert member.email not in message.to
    assert "is low on credits: 500 available (below 1,000)" in message.subject
    assert "500 credits available" in message.body
    assert f"/orgs/{org.slug}/billing/" in message.body
    assert isinstance(message, EmailMultiAlternatives)
    html = message.alternatives[0]
    # django-stubs types alternatives as plain tuples; Django 5.2+ makes them EmailAlternative
    assert html.mimetype == "text/html" and "<strong>500 credits</strong>" in html.content  # type: ignore[attr-defined]
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 100, "c")  # still below: no second email for the same crossing
    assert len(mail.outbox) == 1
    with django_capture_on_commit_callbacks(execute=True):
        fund(org, 2_000)
    assert len(mail.outbox) == 2
    assert "credits restored, 2,400 available" in mail.outbox[1].subject
    assert not AlertThreshold.objects.get(organization=org).below


def test_an_alert_set_below_the_credits_already_is_evaluated_when_saved(
    manager_client: Client,
    org: Organization,
    manager: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    _debit(org, 4_500, "before-the-alert")  # 500 available; no threshold yet, so no email
    url = reverse("alerts", args=[org.slug])
    with django_capture_on_commit_callbacks(execute=True):
        response = manager_client.post(url, {"kind": "absolute", "value": "1000"})
    assert response.status_code == 302
    assert "Below now" in manager_client.get(response["Location"]).text
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [manager.email]
    assert "is low on credits: 500 available (below 1,000)" in mail.outbox[0].subject
    threshold = AlertThreshold.objects.get(organization=org)
    assert threshold.below and threshold.last_alerted_at is not None
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 100, "still-below")  # the same crossing: no second email
    assert len(mail.outbox) == 1
    # One set above the credits available is evaluated too, and says so.
    with django_capture_on_commit_callbacks(execute=True):
        manager_client.post(url, {"kind": "absolute", "value": "100"})
    assert not AlertThreshold.objects.get(organization=org, value=100).below
    assert len(mail.outbox) == 1


def test_percent_threshold_uses_the_plan_allowance(
    eager_tasks: None,
    org: Organization,
    manager: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    AlertThreshold.objects.create(organization=org, kind=AlertKind.PERCENT, value=45)  # 4,500
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 400, "a")  # 4,600 left
    assert mail.outbox == []
    with django_capture_on_commit_callbacks(execute=True):
        _debit(org, 200, "b")  # 4,400 left
    assert len(mail.outbox) == 1
    assert "below 45% of the allowance" in mail.outbox[0].subject


def test_a_hold_that_takes_available_below_a_threshold_emails_the_managers(
    eager_tasks: None,
    org: Organization,
    manager: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=1_000)
    with django_capture_on_commit_callbacks(execute=True):
        postings.reserve(org.account, 4_500, key="big-job", operation="training_a10g_per_minute")
    assert len(mail.outbox) == 1
    assert "500 available (below 1,000)" in mail.outbox[0].subject


def test_a_rolled_back_debit_sends_nothing(
    eager_tasks: None,
    org: Organization,
    manager: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=1_000)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        _debit(org, 4_500, "rolled-back")
        raise RuntimeError("the job runner's request failed after the debit")
    assert mail.outbox == []
    assert not AlertThreshold.objects.get(organization=org).below
    org.account.refresh_from_db()
    assert org.account.available == 5_000


def test_month_close_that_expires_and_renews_sends_nothing(
    eager_tasks: None,
    manager: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    org = make_org("standard")
    make_user(org, Role.MANAGER)
    first, second = past_months(org)
    backdate(org, month_start(first, org.tzinfo))
    post_month(org, first, debits=1)
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=5_000)
    with django_capture_on_commit_callbacks(execute=True):
        closing.close_organization_month(org, first, now=month_start(second, org.tzinfo))
    assert mail.outbox == []  # credits dropped to 0 and came back in one transaction


def test_sign_in_and_set_an_alert_through_the_form(org: Organization, manager: User) -> None:
    client = Client()
    client.post(reverse("login"), {"username": manager.username, "password": PASSWORD})
    response = client.post(
        reverse("alerts", args=[org.slug]), {"kind": "absolute", "value": "250"}, follow=True
    )
    assert response.status_code == 200
    assert 'data-testid="alert-thresholds"' in response.text and "250 credits" in response.text
