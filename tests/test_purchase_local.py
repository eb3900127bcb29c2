"""Buying a pack through the local test provider: its checkout page, paying, cancelling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.models import Organization, Purchase, PurchaseStatus
from ledger.models import Entry, Lot, LotSource

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db


def _buy(client: Client, org: Organization, pack: str = "standard") -> Response:
    return client.post(reverse("buy_pack", args=[org.slug, pack]))


def test_buying_a_pack_opens_the_test_checkout(
    manager_client: Client, manager: User, org: Organization
) -> None:
    response = _buy(manager_client, org)
    purchase = Purchase.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("checkout", args=[org.slug, purchase.provider_session_id])
    assert (purchase.status, purchase.credits, purchase.price_cents, purchase.currency) == (
        PurchaseStatus.PENDING,
        1_000,
        1_500,
        "USD",
    )
    assert purchase.buyer == manager and purchase.provider == "local"
    page = manager_client.get(response["Location"]).text
    assert 'data-testid="checkout-total">$15.00<' in page
    assert "Pay $15.00" in page and "Cancel and return to Tally" in page
    org.account.refresh_from_db()
    assert org.account.balance == 5_000  # nothing until paid


def test_paying_credits_a_never_expiring_purchase_lot(manager_client: Client, org: Organization) -> None:
    _buy(manager_client, org)
    session = Purchase.objects.get()
    response = manager_client.post(
        reverse("checkout_pay", args=[org.slug, session.provider_session_id]), follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("billing", args=[org.slug])
    assert "Payment received: 1,000 credits were added." in response.text
    assert 'data-testid="billing-remaining">6,000<' in response.text
    purchase = Purchase.objects.get()
    assert purchase.status == PurchaseStatus.PAID and purchase.paid_at is not None
    assert purchase.provider_payment_id is not None
    assert purchase.provider_payment_id.startswith("local_pi_")
    entry = Entry.objects.filter(account=org.account).latest("id")
    assert (entry.operation, entry.amount) == ("credit_pack_standard", 1_000)
    lot = Lot.objects.get(entry=entry)
    assert lot.source == LotSource.PURCHASE and lot.expires_at is None


def test_paying_twice_credits_once(manager_client: Client, org: Organization) -> None:
    _buy(manager_client, org, "professional")
    purchase = Purchase.objects.get()
    pay = reverse("checkout_pay", args=[org.slug, purchase.provider_session_id])
    manager_client.post(pay)
    manager_client.post(pay)
    org.account.refresh_from_db()
    assert org.account.balance == 10_000
    assert Entry.objects.filter(account=org.account, operation="credit_pack_professional").count() == 1


def test_cancelling_the_checkout_credits_nothing(manager_client: Client, org: Organization) -> None:
    _buy(manager_client, org)
    purchase = Purchase.objects.get()
    response = manager_client.post(
        reverse("checkout_cancel", args=[org.slug, purchase.provider_session_id]), follow=True
    )
    assert "Checkout cancelled. Nothing was charged." in response.text
    assert 'data-testid="billing-remaining">5,000<' in response.text
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.CANCELLED
    # Paying a cancelled checkout afterwards (a second tab) still credits nothing.
    response = manager_client.post(
        reverse("checkout_pay", args=[org.slug, purchase.provider_session_id]), follow=True
    )
    assert "This checkout was closed; nothing was charged." in response.text
    org.account.refresh_from_db()
    assert org.account.balance == 5_000
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.CANCELLED
    closed = manager_client.get(reverse("checkout", args=[org.slug, purchase.provider_session_id])).text
    assert 'data-testid="checkout-closed">This checkout is cancelled.<' in closed


def test_enterprise_allocation_cannot_be_bought_online(manager_client: Client, org: Organization) -> None:
    response = _buy(manager_client, org, "enterprise")
    assert response.status_code == 302
    assert Purchase.objects.count() == 0
    page = manager_client.get(response["Location"]).text
    assert "arranged with our sales team" in page


def test_unknown_pack_is_not_found(manager_client: Client, org: Organization) -> None:
    assert _buy(manager_client, org, "platinum").status_code == 404
    assert Purchase.objects.count() == 0
