"""Stripe: the signed webhook credits a purchase exactly once, and nothing unsigned gets in;
the Checkout Session is created against a local stand-in for Stripe's API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from billing.models import CreditPack, Organization, Purchase, PurchaseStatus
from ledger.models import Entry, Lot, LotSource
from tests import stripe_stand_in
from tests.stripe_stand_in import FakeStripeApi

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

SECRET = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc"
SESSION_ID = "cs_test_a1B2c3D4e5F6g7H8i9J0"
PAYMENT_ID = "pi_3QabcdEFghIJklMN0aBcDeFg"


@pytest.fixture(autouse=True)
def stripe_settings(settings: Settings) -> Settings:
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_API_KEY = "sk_test_tally"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return settings


def stripe_purchase(org: Organization, pack: str = "standard", session_id: str = SESSION_ID) -> Purchase:
    credit_pack = CreditPack.objects.get(slug=pack)
    return Purchase.objects.create(
        organization=org,
        pack=credit_pack,
        credits=credit_pack.credits or 0,
        price_cents=credit_pack.price_cents or 0,
        currency=credit_pack.currency,
        provider="stripe",
        provider_session_id=session_id,
    )


def session_event(
    purchase: Purchase, kind: str = "checkout.session.completed", payment_status: str = "paid"
) -> bytes:
    event = {
        "id": "evt_1QabcdEFghIJklMN",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {
            "object": {
                "id": purchase.provider_session_id,
                "object": "checkout.session",
                "amount_total": purchase.price_cents,
                "currency": purchase.currency.lower(),
                "client_reference_id": str(purchase.pk),
                "mode": "payment",
                "metadata": {"purchase_id": str(purchase.pk), "organization": purchase.organization.slug},
                "payment_intent": PAYMENT_ID if payment_status == "paid" else None,
                "payment_status": payment_status,
                "status": "complete" if kind == "checkout.session.completed" else "expired",
            }
        },
    }
    return json.dumps(event).encode()


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """Stripe's scheme: v1 = HMAC-SHA256 of "{t}.{body}" with the endpoint secret."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def deliver(client: Client, body: bytes, signature: str) -> Response:
    return client.post(
        reverse("stripe_webhook"),
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": signature},
    )


def pack_entries(org: Organization) -> int:
    return Entry.objects.filter(account=org.account, operation="credit_pack_standard").count()


def balance(org: Organization) -> int:
    org.account.refresh_from_db()
    return org.account.balance


# --- Signature verification ------------------------------------------------------------


@pytest.mark.django_db
def test_signed_completed_session_credits_the_pack(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    response = deliver(Client(), body, sign(body))
    assert response.status_code == 200
    assert balance(org) == 6_000
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID and purchase.provider_payment_id == PAYMENT_ID
    lot = Lot.objects.get(entry__operation="credit_pack_standard", account=org.account)
    assert lot.source == LotSource.PURCHASE and lot.expires_at is None and lot.amount == 1_000


@pytest.mark.django_db
def test_replayed_twenty_times_in_a_row_credits_once(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    client = Client()
    statuses = {deliver(client, body, sign(body)).status_code for _ in range(20)}
    assert statuses == {200}
    assert balance(org) == 6_000
    assert pack_entries(org) == 1


@pytest.mark.django_db(transaction=True)
def test_replayed_ten_times_at_once_credits_once(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    signature = sign(body)
    start = threading.Barrier(10)

    def one_delivery(_: int) -> int:
        try:
            start.wait()
            return deliver(Client(), body, signature).status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(one_delivery, range(10)))
    assert statuses == [200] * 10
    assert balance(org) == 6_000
    assert pack_entries(org) == 1
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID


@pytest.mark.django_db
def test_tampered_body_is_refused_and_changes_nothing(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    signature = sign(body)
    tampered = body.replace(str(purchase.price_cents).encode(), b"1")
    assert tampered != body
    response = deliver(Client(), tampered, signature)
    assert response.status_code == 400
    assert balance(org) == 5_000
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize(
    "signature",
    [
        "",
        "garbage",
        "t=abc,v1=00",
        lambda b: sign(b, secret="whsec_someone_else"),
        lambda b: sign(b).replace("v1=", "v0="),
    ],
)
def test_bad_signature_is_refused_and_changes_nothing(org: Organization, signature: Any) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    header = signature(body) if callable(signature) else signature
    assert deliver(Client(), body, header).status_code == 400
    assert balance(org) == 5_000
    assert Purchase.objects.get().status == PurchaseStatus.PENDING


@pytest.mark.django_db
def test_old_timestamp_is_refused(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    assert deliver(Client(), body, sign(body, timestamp=int(time.time()) - 301)).status_code == 400
    assert balance(org) == 5_000
    # Within the five-minute tolerance it is accepted.
    assert deliver(Client(), body, sign(body, timestamp=int(time.time()) - 240)).status_code == 200
    assert balance(org) == 6_000


@pytest.mark.django_db
def test_any_valid_v1_signature_is_accepted(org: Organization) -> None:
    """While the endpoint secret is rolled, Stripe signs with the old and the new secret."""
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    t = int(time.time())
    stale = sign(body, secret="whsec_rolled_out", timestamp=t).split(",")[1]
    valid = sign(body, timestamp=t).split(",")[1]
    assert deliver(Client(), body, f"t={t},{stale},{valid}").status_code == 200
    assert balance(org) == 6_000


@pytest.mark.django_db
def test_webhook_refuses_get(org: Organization) -> None:
    assert Client().get(reverse("stripe_webhook")).status_code == 405


@pytest.mark.django_db
def test_webhook_needs_no_csrf_token(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase)
    client = Client(enforce_csrf_checks=True)
    assert deliver(client, body, sign(body)).status_code == 200
    assert balance(org) == 6_000


# --- Failure and expiry ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("checkout.session.expired", PurchaseStatus.CANCELLED),
        ("checkout.session.async_payment_failed", PurchaseStatus.FAILED),
    ],
)
def test_failed_or_expired_checkout_credits_nothing(
    org: Organization, kind: str, status: PurchaseStatus
) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase, kind=kind, payment_status="unpaid")
    assert deliver(Client(), body, sign(body)).status_code == 200
    purchase.refresh_from_db()
    assert purchase.status == status
    assert balance(org) == 5_000
    # A late "completed" for a closed purchase still credits nothing.
    paid = session_event(purchase)
    assert deliver(Client(), paid, sign(paid)).status_code == 200
    assert balance(org) == 5_000


@pytest.mark.django_db
def test_completed_but_unpaid_waits_for_the_async_payment(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = session_event(purchase, payment_status="unpaid")
    assert deliver(Client(), body, sign(body)).status_code == 200
    assert balance(org) == 5_000
    assert Purchase.objects.get().status == PurchaseStatus.PENDING
    paid = session_event(purchase, kind="checkout.session.async_payment_succeeded")
    assert deliver(Client(), paid, sign(paid)).status_code == 200
    assert balance(org) == 6_000


@pytest.mark.django_db
def test_expiry_after_payment_keeps_the_purchase_paid(org: Organization) -> None:
    purchase = stripe_purchase(org)
    paid = session_event(purchase)
    deliver(Client(), paid, sign(paid))
    expired = session_event(purchase, kind="checkout.session.expired", payment_status="unpaid")
    assert deliver(Client(), expired, sign(expired)).status_code == 200
    assert Purchase.objects.get().status == PurchaseStatus.PAID
    assert balance(org) == 6_000


@pytest.mark.django_db
def test_event_for_an_unknown_session_is_acknowledged_and_ignored(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = (
        session_event(purchase)
        .replace(SESSION_ID.encode(), b"cs_test_from_another_app")
        .replace(f'"client_reference_id": "{purchase.pk}"'.encode(), b'"client_reference_id": null')
    )
    assert b"cs_test_from_another_app" in body and b'"client_reference_id": null' in body
    assert deliver(Client(), body, sign(body)).status_code == 200
    assert balance(org) == 5_000
    assert Purchase.objects.get().status == PurchaseStatus.PENDING


def edited_event(purchase: Purchase, edit: Any, kind: str = "checkout.session.completed") -> bytes:
    """The event ``session_event`` makes, after ``edit`` changed it in place."""
    event = json.loads(session_event(purchase, kind=kind))
    edit(event, event["data"]["object"])
    return json.dumps(event).encode()


# --- Signed but not what they should be ---------------------------------------------------

MALFORMED: dict[str, Any] = {
    "type is a number": lambda event, session: event.update(type=42),
    "type is null": lambda event, session: event.update(type=None),
    "type is a list": lambda event, session: event.update(type=["checkout.session.completed"]),
    "data is a string": lambda event, session: event.update(data="checkout.session"),
    "data is a list": lambda event, session: event.update(data=[event["data"]]),
    "data.object is a string": lambda event, session: event["data"].update(object=SESSION_ID),
    "no id and no payment_intent": lambda event, session: [session.pop("id"), session.pop("payment_intent")],
    "session id is an object": lambda event, session: session.update(id={"id": SESSION_ID}),
    "session id holds a NUL byte": lambda event, session: session.update(id=SESSION_ID + "\x00"),
    "payment_intent is an object": lambda event, session: session.update(payment_intent={"id": PAYMENT_ID}),
    "amount_total is a string": lambda event, session: session.update(amount_total="1500"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("edit", MALFORMED.values(), ids=MALFORMED.keys())
def test_signed_malformed_event_is_a_400_and_changes_nothing(org: Organization, edit: Any) -> None:
    purchase = stripe_purchase(org)
    body = edited_event(purchase, edit)
    response = deliver(Client(), body, sign(body))
    assert response.status_code == 400
    assert response.text.startswith("Malformed Stripe event: ")
    assert balance(org) == 5_000
    assert Purchase.objects.get().status == PurchaseStatus.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize("same_org", [True, False], ids=["same organization", "another organization"])
def test_one_payment_for_two_purchases_credits_the_first_only(
    org: Organization, other_org: Organization, same_org: bool
) -> None:
    first = stripe_purchase(org)
    second = stripe_purchase(
        org if same_org else other_org, pack="professional", session_id="cs_test_b2C3d4E5f6G7h8I9j0K1"
    )
    paid = session_event(first)
    assert deliver(Client(), paid, sign(paid)).status_code == 200
    again = session_event(second)  # the same payment intent, PAYMENT_ID
    response = deliver(Client(), again, sign(again))
    assert response.status_code == 409
    assert f"Payment {PAYMENT_ID} already paid purchase {first.pk}" in response.text
    assert balance(org) == 6_000 and balance(other_org) == 1_000
    second.refresh_from_db()
    assert second.status == PurchaseStatus.PENDING and second.provider_payment_id is None


# --- Only the purchase's own session, amount and currency credit it --------------------------

MISMATCHED: dict[str, Any] = {
    "unknown session named by client_reference_id paying 1 cent JPY": lambda event, session: session.update(
        id="cs_test_from_somewhere_else", amount_total=1, currency="jpy"
    ),
    "unknown session named by client_reference_id": lambda event, session: session.update(
        id="cs_test_from_somewhere_else"
    ),
    "its session paying 1 cent": lambda event, session: session.update(amount_total=1),
    "its session paying in JPY": lambda event, session: session.update(currency="jpy"),
    "its session with no amount": lambda event, session: session.update(amount_total=None),
    "its session naming another purchase": lambda event, session: session.update(
        client_reference_id="999999"
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("edit", MISMATCHED.values(), ids=MISMATCHED.keys())
def test_session_that_does_not_match_the_purchase_is_logged_and_ignored(
    org: Organization, edit: Any, caplog: pytest.LogCaptureFixture
) -> None:
    purchase = stripe_purchase(org, pack="professional")
    body = edited_event(purchase, edit)
    with caplog.at_level("WARNING", logger="billing.payments.stripe"):
        response = deliver(Client(), body, sign(body))
    assert response.status_code == 200  # acknowledged, so Stripe does not retry it
    assert balance(org) == 5_000
    assert Purchase.objects.get().status == PurchaseStatus.PENDING
    assert "ignored" in caplog.text


@pytest.mark.django_db
def test_expiry_of_an_unknown_session_leaves_the_purchase_open(org: Organization) -> None:
    purchase = stripe_purchase(org)
    body = edited_event(
        purchase,
        lambda event, session: session.update(id="cs_test_from_somewhere_else"),
        kind="checkout.session.expired",
    )
    assert deliver(Client(), body, sign(body)).status_code == 200
    assert Purchase.objects.get().status == PurchaseStatus.PENDING


# --- The Checkout Session, answered by a local stand-in for Stripe's API ---------------


@pytest.fixture
def fake_stripe(stripe_settings: Settings) -> Iterator[type[FakeStripeApi]]:
    with stripe_stand_in.serving(stripe_settings) as api:
        yield api


@pytest.mark.django_db
def test_buying_a_pack_sends_the_manager_to_stripe_checkout(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi]
) -> None:
    response = manager_client.post(reverse("buy_pack", args=[org.slug, "professional"]))
    assert response.status_code == 302
    assert response["Location"].startswith(f"https://checkout.stripe.com/c/pay/{SESSION_ID}")
    [request] = fake_stripe.requests
    form = request["form"]
    purchase = Purchase.objects.get()
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == "6000"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][price_data][product_data][name]"] == "Professional pack: 5,000 credits"
    assert form["client_reference_id"] == str(purchase.pk)
    site = "http://testserver"
    assert form["success_url"] == site + reverse("purchase_complete", args=[org.slug, purchase.pk])
    assert form["cancel_url"] == site + reverse("purchase_cancelled", args=[org.slug, purchase.pk])
    assert request["headers"]["Idempotency-Key"] == f"tally-purchase-{purchase.pk}"
    assert purchase.provider == "stripe" and purchase.provider_session_id == SESSION_ID
    assert purchase.status == PurchaseStatus.PENDING and balance(org) == 5_000

    # Stripe reports the payment; the return page then says the credits are in.
    body = session_event(purchase)
    assert deliver(Client(), body, sign(body)).status_code == 200
    page = manager_client.get(form["success_url"].removeprefix("http://testserver"), follow=True).text
    assert "Payment received: 5,000 credits were added." in page
    assert 'data-testid="billing-remaining">10,000<' in page


@pytest.mark.django_db
def test_returning_before_the_webhook_says_payment_is_being_confirmed(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi]
) -> None:
    manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]))
    purchase = Purchase.objects.get()
    page = manager_client.get(reverse("purchase_complete", args=[org.slug, purchase.pk]), follow=True).text
    assert "Your payment is being confirmed" in page
    assert 'data-testid="billing-remaining">5,000<' in page


@pytest.mark.django_db
def test_stripe_refusing_the_session_fails_the_purchase_and_charges_nothing(
    manager_client: Client, org: Organization, fake_stripe: type[FakeStripeApi], stripe_settings: Settings
) -> None:
    stripe_settings.STRIPE_API_KEY = "sk_test_revoked"
    response = manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]), follow=True)
    assert "The card payment service is unavailable; nothing was charged." in response.text
    assert Purchase.objects.get().status == PurchaseStatus.FAILED
    assert balance(org) == 5_000
