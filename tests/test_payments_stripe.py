"""Stored cards and charges through the Stripe library, against the local stand-in of
Stripe's API, with webhooks signed by Stripe's scheme: Checkout in setup mode and the card
saved from the webhook, off-session PaymentIntents, declines, idempotent charges, and auto
top-up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from billing import auto_top_up, invoices, payment_methods
from billing.models import CreditPack, InvoiceStatus, Organization, PaymentMethod, PurchaseOrigin
from billing.payments import get_provider
from ledger import postings
from tests import stripe_stand_in
from tests.payments_helpers import CLOSED_AT, issue
from tests.stripe_stand_in import FakeStripeApi, event, sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_stripe(settings: Settings) -> Iterator[type[FakeStripeApi]]:
    with stripe_stand_in.serving(settings) as api:
        yield api


def deliver(body: bytes) -> str:
    response = Client().post(
        reverse("stripe_webhook"),
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": sign(body)},
    )
    assert response.status_code == 200, response.text
    return response.text


def add_card_through_checkout(
    client: Client, org: Organization, api: type[FakeStripeApi], card: str = "visa"
) -> str:
    """The manager is sent to Checkout in setup mode, enters ``card``; Stripe's webhook reports it."""
    response = client.post(reverse("add_payment_method", args=[org.slug]))
    assert response.status_code == 302 and response["Location"].startswith(
        "https://checkout.stripe.com/c/setup/"
    )
    setup = org.method_setups.latest("pk")
    session = api.complete_setup(setup.session_id, card)
    return deliver(event("checkout.session.completed", session))


def posted(api: type[FakeStripeApi], path: str) -> list[dict[str, Any]]:
    return [request for request in api.requests if request["method"] == "POST" and request["path"] == path]


def test_setup_makes_one_customer_and_the_webhook_saves_the_card(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi]
) -> None:
    assert add_card_through_checkout(manager_client, org, fake_stripe) == "stored Visa ending 4242"
    [customer] = posted(fake_stripe, "/v1/customers")
    assert customer["headers"]["Idempotency-Key"] == f"tally-customer-{org.pk}"
    [session] = posted(fake_stripe, "/v1/checkout/sessions")
    customer_id = payment_methods.profile(org).stripe_customer_id
    assert session["form"]["mode"] == "setup" and session["form"]["customer"] == customer_id
    method = PaymentMethod.objects.get(organization=org)
    assert (method.provider, method.brand, method.last4, method.exp_year) == ("stripe", "visa", "4242", 2034)
    assert method.method_id.startswith("pm_")
    # A replacement reuses the Customer and detaches the card it replaces.
    assert (
        add_card_through_checkout(manager_client, org, fake_stripe, "chargeDeclined")
        == "stored Visa ending 0002"
    )
    assert len(posted(fake_stripe, "/v1/customers")) == 1
    assert posted(fake_stripe, f"/v1/payment_methods/{method.method_id}/detach")
    page = manager_client.get(reverse("billing", args=[org.slug])).text
    assert 'data-testid="card-on-file">Visa ending 0002' in page


def test_a_setup_event_for_another_customer_or_session_is_ignored(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi]
) -> None:
    manager_client.post(reverse("add_payment_method", args=[org.slug]))
    session = fake_stripe.complete_setup(org.method_setups.get().session_id)
    assert deliver(event("checkout.session.completed", {**session, "customer": "cus_someone_else"})) == (
        "ignored: another customer"
    )
    assert (
        deliver(event("checkout.session.completed", {**session, "id": "cs_test_elsewhere"}))
        == "no matching setup"
    )
    assert not PaymentMethod.objects.exists()
    deliver(event("checkout.session.completed", session))
    deliver(event("checkout.session.completed", session))  # delivered twice: stored once
    assert PaymentMethod.objects.count() == 1


def test_invoice_is_charged_off_session_once_per_attempt(
    manager_client: Client, org: Organization, manager: User, fake_stripe: type[FakeStripeApi]
) -> None:
    add_card_through_checkout(manager_client, org, fake_stripe)
    invoice = invoices.collect(issue(org).pk, CLOSED_AT)
    assert invoice.status == InvoiceStatus.PAID and invoice.amount_due_cents == 0
    [charge] = posted(fake_stripe, "/v1/payment_intents")
    form = charge["form"]
    assert (form["amount"], form["currency"], form["off_session"], form["confirm"]) == (
        "4900",
        "usd",
        "true",
        "true",
    )
    assert form["customer"] == payment_methods.profile(org).stripe_customer_id
    assert charge["headers"]["Idempotency-Key"] == f"tally-invoice-{invoice.number}-attempt-1"
    [intent] = fake_stripe.payment_intents()
    assert invoice.attempts.get().provider_payment_id == intent["id"]


def test_the_same_key_charges_once(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi]
) -> None:
    """A task retried after a crash sends the attempt's key again: Stripe answers with the
    first payment, and nothing more is charged."""
    add_card_through_checkout(manager_client, org, fake_stripe)
    method = PaymentMethod.objects.get(organization=org)
    provider = get_provider()
    first = provider.charge(
        method, amount_cents=4_900, currency="USD", key="tally-invoice-X-attempt-1", description=""
    )
    again = provider.charge(
        method, amount_cents=4_900, currency="USD", key="tally-invoice-X-attempt-1", description=""
    )
    assert first == again
    assert len(fake_stripe.payment_intents()) == 1


def test_a_declined_card_fails_the_invoice_and_schedules_the_retry(
    manager_client: Client, org: Organization, manager: User, fake_stripe: type[FakeStripeApi]
) -> None:
    add_card_through_checkout(manager_client, org, fake_stripe, "chargeDeclined")
    credits = postings.credits_now(org.account).available
    invoice = invoices.collect(issue(org).pk, CLOSED_AT)
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED
    assert invoice.next_attempt_at == CLOSED_AT + dt.timedelta(days=1)
    attempt = invoice.attempts.get()
    assert (attempt.outcome, attempt.message) == ("declined", "Your card was declined.")
    invoice = invoices.collect(invoice.pk, CLOSED_AT + dt.timedelta(days=1))
    assert [r["headers"]["Idempotency-Key"] for r in posted(fake_stripe, "/v1/payment_intents")] == [
        f"tally-invoice-{invoice.number}-attempt-1",
        f"tally-invoice-{invoice.number}-attempt-2",
    ]
    assert invoice.next_attempt_at == CLOSED_AT + dt.timedelta(days=3)
    assert postings.credits_now(org.account).available == credits + 1_000  # October's pack, still there


def test_auto_top_up_buys_the_pack_with_a_payment_intent(
    manager_client: Client, org: Organization, manager: User, fake_stripe: type[FakeStripeApi]
) -> None:
    add_card_through_checkout(manager_client, org, fake_stripe)
    auto_top_up.configure(
        org,
        enabled=True,
        threshold=6_000,
        pack=CreditPack.objects.get(slug="standard"),
        monthly_limit=1,
        by=manager,
    )
    assert auto_top_up.run(org.pk) == "succeeded"
    [intent] = fake_stripe.payment_intents()
    purchase = org.purchases.get(origin=PurchaseOrigin.AUTO_TOP_UP)
    assert purchase.provider == "stripe" and purchase.provider_payment_id == intent["id"]
    assert intent["amount"] == 1_500
    assert postings.credits_now(org.account).available == 6_000
