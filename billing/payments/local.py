"""The local test provider: a hosted-checkout page and a card page served by Tally itself,
so buying packs, storing a card and charging it all work offline. Of its test cards one
always succeeds and one is always declined; nothing real is charged."""

from __future__ import annotations

import hashlib
import secrets

from django.urls import reverse
from django.utils import timezone

from billing import payment_methods, purchases
from billing.models import PaymentMethod, PaymentMethodSetup, Purchase, SetupStatus
from billing.payments import Charge, ChargeDeclined, Checkout, ProviderName

SESSION_PREFIX = "local_cs_"
PAYMENT_PREFIX = "local_pi_"


class LocalProvider:
    name = ProviderName.LOCAL

    def start_checkout(self, purchase: Purchase, *, success_url: str, cancel_url: str) -> Checkout:
        # The return addresses are Tally's own, so the checkout page derives them itself.
        session_id = SESSION_PREFIX + secrets.token_hex(12)
        url = reverse("checkout", args=[purchase.organization.slug, session_id])
        return Checkout(session_id=session_id, url=url)

    def start_setup(self, setup: PaymentMethodSetup, *, success_url: str, cancel_url: str) -> Checkout:
        session_id = SETUP_PREFIX + secrets.token_hex(12)
        url = reverse("local_card", args=[setup.organization.slug, session_id])
        return Checkout(session_id=session_id, url=url)

    def charge(
        self, method: PaymentMethod, *, amount_cents: int, currency: str, key: str, description: str
    ) -> Charge:
        """The declining test card is declined; any other is charged. The payment id is
        derived from the key, so asking again with one key is the same payment."""
        if method.method_id == DECLINING_METHOD:
            raise ChargeDeclined("Your card was declined.")
        return Charge(payment_id=PAYMENT_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24])

    def forget(self, method: PaymentMethod) -> None:
        pass  # nothing is kept anywhere but Tally


def pay(purchase: Purchase) -> Purchase:
    """The buyer paid: report it as Stripe's webhook would. One payment id per session, so
    a second click on Pay is a replay, not a second payment. A checkout past its lifetime
    takes no payment, as Stripe's would not."""
    if purchase.checkout_expired:
        raise purchases.PurchaseClosed(f"Purchase {purchase.pk}'s checkout expired; nothing was charged.")
    payment_id = PAYMENT_PREFIX + purchase.provider_session_id.removeprefix(SESSION_PREFIX)
    return purchases.fulfil(purchase, payment_id=payment_id)


def cancel(purchase: Purchase) -> Purchase:
    """The buyer gave up: the purchase is closed and credits nothing."""
    return purchases.close_unpaid(purchase, status=purchases.PurchaseStatus.CANCELLED)


# --- Stored cards --------------------------------------------------------------------------
# The test cards Tally's local card page takes, with the ids Stripe gives its own test
# cards: the first always succeeds, the second is always declined.
SETUP_PREFIX = "local_seti_"
SUCCEEDING_CARD = "4242424242424242"
DECLINING_CARD = "4000000000000002"
TEST_CARDS = {
    SUCCEEDING_CARD: ("pm_card_visa", "visa", "4242"),
    DECLINING_CARD: ("pm_card_chargeDeclined", "visa", "0002"),
}
DECLINING_METHOD = TEST_CARDS[DECLINING_CARD][0]


class UnknownTestCard(ValueError):
    """Not one of the local provider's test cards; nothing is stored."""


def test_card(number: str) -> payment_methods.Card:
    """The stored card a test card number stands for (spaces and dashes ignored)."""
    digits = number.replace(" ", "").replace("-", "")
    if digits not in TEST_CARDS:
        raise UnknownTestCard(
            "Use a test card: 4242 4242 4242 4242 (always succeeds) or 4000 0000 0000 0002 (always declined)."
        )
    method_id, brand, last4 = TEST_CARDS[digits]
    return payment_methods.Card(method_id, brand, last4, exp_month=12, exp_year=timezone.now().year + 3)


def add_card(setup: PaymentMethodSetup, number: str) -> PaymentMethod:
    """The manager entered a test card on the local card page: store it, as Stripe's
    webhook would."""
    return payment_methods.store(setup, test_card(number))


def cancel_setup(setup: PaymentMethodSetup) -> None:
    PaymentMethodSetup.objects.filter(pk=setup.pk, status=SetupStatus.PENDING).update(
        status=SetupStatus.CANCELLED
    )
