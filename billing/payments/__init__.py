"""Payment providers: where a manager pays for a credit pack or stores a card.

A provider opens a checkout for a pending ``Purchase`` and later reports its outcome;
crediting the account is ``billing.purchases``' job, whichever provider reported it. It
also opens a page where a manager stores a card (``start_setup``; the outcome is saved by
``billing.payment_methods``), and charges a stored card off-session (``charge``: invoices
and auto top-ups), idempotently by the key it is given.
``settings.PAYMENT_PROVIDER`` picks the provider new purchases use.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

if TYPE_CHECKING:
    from billing.models import PaymentMethod, PaymentMethodSetup, Purchase


class ProviderName(models.TextChoices):
    LOCAL = "local", "Test checkout"
    STRIPE = "stripe", "Stripe"


class PaymentError(Exception):
    """The provider refused or could not be reached. Nothing was charged."""


class ChargeDeclined(PaymentError):
    """The card was declined (or needs its holder, who is not there). Nothing was charged."""


@dataclasses.dataclass(frozen=True)
class Charge:
    """A stored card charged: the provider's payment id."""

    payment_id: str


@dataclasses.dataclass(frozen=True)
class Checkout:
    """A hosted checkout the buyer is sent to."""

    session_id: str
    url: str


class PaymentProvider(Protocol):
    name: ProviderName

    def start_checkout(self, purchase: Purchase, *, success_url: str, cancel_url: str) -> Checkout:
        """Open a checkout for ``purchase``; raise ``PaymentError`` if that fails."""
        ...

    def start_setup(self, setup: PaymentMethodSetup, *, success_url: str, cancel_url: str) -> Checkout:
        """Open a page where a manager stores a card; raise ``PaymentError`` if that fails."""
        ...

    def charge(
        self, method: PaymentMethod, *, amount_cents: int, currency: str, key: str, description: str
    ) -> Charge:
        """Charge the stored card off-session, once per ``key`` however often it is asked;
        raise ``ChargeDeclined`` or ``PaymentError`` when nothing was charged."""
        ...

    def forget(self, method: PaymentMethod) -> None:
        """The card is no longer stored: detach it at the provider (best effort)."""
        ...


def refuse_unsafe_provider(name: str | None = None) -> None:
    """Raise ``ImproperlyConfigured`` when the local test checkout, where Pay credits a pack
    and charges nothing, would be served with DEBUG off and ``ALLOW_LOCAL_PAYMENTS`` unset.
    The web server calls this as it starts (``billing.wsgi``), so it refuses to start."""
    if (name or settings.PAYMENT_PROVIDER) == ProviderName.LOCAL and not settings.ALLOW_LOCAL_PAYMENTS:
        raise ImproperlyConfigured(
            "PAYMENT_PROVIDER is 'local' (the default): Tally's offline test checkout, where Pay "
            "credits a pack and charges nothing. With DEBUG off Tally refuses to serve it unless "
            "ALLOW_LOCAL_PAYMENTS=1 says a test checkout is wanted (a demo, a test). In production "
            "set PAYMENT_PROVIDER=stripe with STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET."
        )


def get_provider(name: str | None = None) -> PaymentProvider:
    name = name or settings.PAYMENT_PROVIDER
    if name == ProviderName.LOCAL:
        refuse_unsafe_provider(name)
        from billing.payments.local import LocalProvider

        return LocalProvider()
    if name == ProviderName.STRIPE:
        from billing.payments.stripe import StripeProvider

        return StripeProvider()
    raise ImproperlyConfigured(f"PAYMENT_PROVIDER must be one of {', '.join(ProviderName.values)}.")
