"""The local test provider: a hosted-checkout page served by Tally itself, so the whole
purchase flow works offline. Its test card always succeeds; nothing real is charged."""

from __future__ import annotations

import secrets

from django.urls import reverse

from billing import purchases
from billing.models import Purchase
from billing.payments import Checkout, ProviderName

SESSION_PREFIX = "local_cs_"
PAYMENT_PREFIX = "local_pi_"


class LocalProvider:
    name = ProviderName.LOCAL

    def start_checkout(self, purchase: Purchase, *, success_url: str, cancel_url: str) -> Checkout:
        # The return addresses are Tally's own, so the checkout page derives them itself.
        session_id = SESSION_PREFIX + secrets.token_hex(12)
        url = reverse("checkout", args=[purchase.organization.slug, session_id])
        return Checkout(session_id=session_id, url=url)


def pay(purchase: Purchase) -> Purchase:
    """The buyer paid: report it as Stripe's webhook would. One payment id per session, so
    a second click on Pay is a replay, not a second payment."""
    payment_id = PAYMENT_PREFIX + purchase.provider_session_id.removeprefix(SESSION_PREFIX)
    return purchases.fulfil(purchase, payment_id=payment_id)


def cancel(purchase: Purchase) -> Purchase:
    """The buyer gave up: the purchase is closed and credits nothing."""
    return purchases.close_unpaid(purchase, status=purchases.PurchaseStatus.CANCELLED)
