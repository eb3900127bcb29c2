"""What a manager reads and can trust (issue 22): one date format on every page, thousands
separators, "just now", days and times labelled with the organization's time zone, a
credits bar that never runs past its allowance, unlimited plans without packs or a
countdown, abandoned checkouts shown as expired, post/redirect/get on every form, and the
organization overview."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone
from pytest_django import Settings

from billing import formats
from billing.models import (
    AlertKind,
    AlertThreshold,
    ApiKey,
    CreditPack,
    Invoice,
    Organization,
    Purchase,
    Role,
    Scope,
)
from ledger import budgets
from tests.billing_helpers import make_invoice, make_purchase
from tests.factories import make_org, make_user
from tests.usage_helpers import run_job

pytestmark = pytest.mark.django_db

JULY_6_1202_UTC = dt.datetime(2026, 7, 6, 12, 2, tzinfo=dt.UTC)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def section(text: str, testid: str, end: str = "</section>") -> str:
    return text.split(f'data-testid="{testid}"')[1].split(end)[0]


# --- Numbers and time ------------------------------------------------------------------


def test_formats_say_just_now_never_zero_minutes_ago() -> None:
    now = timezone.now()
    assert formats.ago(now - dt.timedelta(seconds=20), now) == "just now"
    assert formats.ago(now - dt.timedelta(hours=3, minutes=5), now) == "3\xa0hours, 5\xa0minutes ago"
    assert formats.day(dt.date(2026, 12, 6)) == "6 Dec 2026"
    assert formats.moment(JULY_6_1202_UTC, dt.UTC) == "6 Jul 2026, 12:02"


def test_dates_read_the_same_on_every_page(manager_client: Client, org: Organization) -> None:
    moment = dt.datetime(2026, 3, 4, 10, 5, tzinfo=dt.UTC)
    invoice = make_invoice(org)
    Invoice.objects.filter(pk=invoice.pk).update(issued_at=moment)
    purchase = make_purchase(org)
    Purchase.objects.filter(pk=purchase.pk).update(created_at=moment)
    key, _ = ApiKey.issue(org, name="runner", scopes=[Scope.ACCOUNT_READ])
    ApiKey.objects.filter(pk=key.pk).update(created_at=moment)
    pages = {
        "billing": manager_client.get(reverse("billing", args=[org.slug])).text,
        "invoice": manager_client.get(reverse("invoice", args=[org.slug, invoice.number])).text,
        "api keys": manager_client.get(reverse("api_keys", args=[org.slug])).text,
    }
    assert "4 Mar 2026, 10:05" in section(pages["billing"], "payments", "</table>")
    assert "4 Mar 2026" in section(pages["billing"], "invoices", "</table>")
    assert "4 Mar 2026" in pages["invoice"] and "4 March 2026" not in pages["invoice"]
    assert "4 Mar 2026" in section(pages["api keys"], "api-keys", "</table>")
    for name, text in pages.items():
        assert not re.search(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}\b", text), name


def test_alert_added_message_uses_a_thousands_separator(manager_client: Client, org: Organization) -> None:
    url = reverse("alerts", args=[org.slug])
    response = manager_client.post(url, {"kind": AlertKind.ABSOLUTE, "value": "45000"}, follow=True)
    assert "Alert added: below 45,000 credits." in response.text


def test_alert_times_are_in_the_organization_time_zone_and_say_so() -> None:
    org = make_org("standard", time_zone="Europe/Berlin", credits=100)
    AlertThreshold.objects.create(
        organization=org, kind=AlertKind.ABSOLUTE, value=500, below=True, last_alerted_at=JULY_6_1202_UTC
    )
    text = client_for(make_user(org, Role.MANAGER)).get(reverse("alerts", args=[org.slug])).text
    assert "6 Jul 2026, 14:02" in text  # 12:02 UTC is 14:02 in Berlin's summer time
    assert "12:02" not in text
    assert "Times are in Europe/Berlin." in text


def test_usage_page_says_its_days_are_in_the_organization_time_zone() -> None:
    org = make_org("standard", time_zone="Europe/Berlin", credits=100)
    text = client_for(make_user(org, Role.MANAGER)).get(reverse("usage", args=[org.slug])).text
    assert "Days in Europe/Berlin time" in text


def test_credits_bar_stops_at_the_allowance_and_counts_extra_credits_apart() -> None:
    org = make_org("standard", credits=10_171)  # the 10,000 allowance plus packs
    client = client_for(make_user(org, Role.MANAGER))
    for url, gauge in [
        (reverse("usage", args=[org.slug]), "gauge-credits"),
        (reverse("organization", args=[org.slug]), "menu-gauge-credits"),
    ]:
        text = client.get(url).text
        credits = section(text, gauge, "</li>")
        assert "10,000 of 10,000 monthly credits + 171 extra" in credits
        assert 'aria-valuenow="10000"' in credits and 'aria-valuemax="10000"' in credits
        assert "10,171 of" not in text
    usage = client.get(reverse("usage", args=[org.slug])).text
    assert "packs, promotions and plan credits rolled over" in section(usage, "gauge-credits", "</li>")


def test_unlimited_plan_shows_no_countdown_and_sells_no_packs() -> None:
    org = make_org("enterprise", credits=418_207)
    client = client_for(make_user(org, Role.MANAGER))
    for url, prefix in [
        (reverse("billing", args=[org.slug]), "billing"),
        (reverse("organization", args=[org.slug]), "credits"),
    ]:
        text = client.get(url).text
        assert f'data-testid="{prefix}-available">Unlimited<' in text
        cards = text.split('<section class="cards"')[1].split("</section>")[0]
        assert f'data-testid="{prefix}-remaining"' not in text and "418,207" not in cards
    billing = client.get(reverse("billing", args=[org.slug])).text
    assert 'data-testid="no-packs-unlimited"' in billing and "Buy 1,000 credits" not in billing
    response = client.post(reverse("buy_pack", args=[org.slug, "standard"]), follow=True)
    assert "plan is unlimited" in response.text
    assert not Purchase.objects.filter(organization=org).exists()


# --- Abandoned checkouts ---------------------------------------------------------------


def test_abandoned_checkout_shows_as_expired_after_the_session_lifetime(
    manager_client: Client, org: Organization, settings: Settings
) -> None:
    make_purchase(org, session_id="local_cs_fresh")
    old = make_purchase(org, session_id="local_cs_abandoned")
    Purchase.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=25))
    payments = section(manager_client.get(reverse("billing", args=[org.slug])).text, "payments", "</table>")
    assert payments.count(">Expired<") == 1 and payments.count(">Pending<") == 1
    settings.CHECKOUT_SESSION_HOURS = 48
    payments = section(manager_client.get(reverse("billing", args=[org.slug])).text, "payments", "</table>")
    assert ">Expired<" not in payments and payments.count(">Pending<") == 2


def test_an_expired_checkout_takes_no_payment(manager_client: Client, org: Organization) -> None:
    old = make_purchase(org, session_id="local_cs_abandoned")
    Purchase.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    page = manager_client.get(reverse("checkout", args=[org.slug, "local_cs_abandoned"])).text
    assert "This checkout is expired." in page and "checkout_pay" not in page and "/pay/" not in page
    response = manager_client.post(
        reverse("checkout_pay", args=[org.slug, "local_cs_abandoned"]), follow=True
    )
    assert "nothing was charged" in response.text
    assert 'data-testid="billing-remaining">5,000<' in response.text
    old.refresh_from_db()
    assert old.paid_at is None


# --- Post/redirect/get -----------------------------------------------------------------

# What each form posts, by the URL name it posts to; one that is not here fails the test.
FORM_DATA: dict[str, dict[str, str | list[str]]] = {
    "alerts": {"kind": AlertKind.ABSOLUTE, "value": "700"},
    "delete_alert": {},
    "api_keys": {"name": "job-runner", "scopes": [Scope.ACCOUNT_READ]},
    "revoke_api_key": {},
    "buy_pack": {},
    "checkout_pay": {},
    "checkout_cancel": {},
    "add_payment_method": {},
    "auto_top_up": {"threshold": "1000", "pack": "professional", "monthly_limit": "2"},  # off
    "billing_details": {"legal_name": "Org Ltd", "address": "1 Main St", "tax_id": ""},
    "budgets": {"scope": "project", "name": "vision", "monthly_limit": "500"},
    "delete_budget": {},
    "logout": {},
}


def test_every_form_redirects_after_its_post(manager: User, org: Organization) -> None:
    """A reload after any POST repeats nothing: every form's answer is a redirect."""
    AlertThreshold.objects.create(organization=org, kind=AlertKind.ABSOLUTE, value=100)
    ApiKey.issue(org, name="old", scopes=[Scope.ACCOUNT_READ])
    make_purchase(org, session_id="local_cs_pay")
    make_purchase(org, session_id="local_cs_cancel")
    budgets.set_budget(org.account, "project", "speech", 100)
    client = client_for(manager)
    pages = [
        reverse(name, args=[org.slug])
        for name in ("organization", "usage", "billing", "api_keys", "alerts", "budgets")
    ] + [reverse("checkout", args=[org.slug, session]) for session in ("local_cs_pay", "local_cs_cancel")]
    forms: dict[str, str] = {}
    for page in pages:
        html = client.get(page).text
        for attributes in re.findall(r"<form ([^>]*)>", html):
            if 'method="post"' not in attributes:
                continue
            action = re.search(r'action="([^"]*)"', attributes)
            url = action.group(1) if action else page
            forms.setdefault(resolve(url).url_name or "", url)
    assert set(forms) == set(FORM_DATA)
    for name, url in sorted(forms.items(), key=lambda item: item[0] == "logout"):  # signing out last
        data = dict(FORM_DATA[name])
        if "pack" in data:
            data["pack"] = str(CreditPack.objects.get(slug=str(data["pack"])).pk)
        response = client.post(url, data)
        assert response.status_code in (302, 303), name


# --- The organization overview ---------------------------------------------------------


def test_manager_overview_shows_credits_this_month_activity_and_links(
    manager_client: Client, org: Organization
) -> None:
    run_job(org, "run-42", 1_234, timezone.now(), name="yolox-finetune")
    text = manager_client.get(reverse("organization", args=[org.slug])).text
    usage = manager_client.get(reverse("usage", args=[org.slug])).text
    used = section(text, "overview-credits-used", "<")
    assert used == ">1,234" and used == section(usage, "month-credits-used", "<")
    activity = section(text, "overview-activity")
    assert "yolox-finetune" in activity and "-1,234" in activity and "3,766" in activity
    assert "+5,000" in activity  # the pack that funded it
    for name in ("usage", "billing", "alerts", "api_keys"):
        assert f'href="{reverse(name, args=[org.slug])}"' in text
    assert 'data-testid="credits-available">3,766<' in text


def test_member_overview_shows_the_credits_and_nothing_managers_only(
    member_client: Client, org: Organization
) -> None:
    text = member_client.get(reverse("organization", args=[org.slug])).text
    assert 'data-testid="credits-available">5,000<' in text
    assert "overview-month" not in text and "overview-activity" not in text
    for name in ("usage", "billing", "alerts", "api_keys"):
        assert reverse(name, args=[org.slug]) not in text
        assert member_client.get(reverse(name, args=[org.slug])).status_code == 403
