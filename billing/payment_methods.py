"""The stored payment method: a manager adds a card through the provider's hosted page
(Stripe Checkout in setup mode, or the local test page), replaces it the same way, or
removes it. Invoices and auto top-ups are charged to it off-session.

A setup is stored once: the setup row is locked, and a replay of its completion returns
the card already stored. Removing the card turns auto top-up off (it has nothing to
charge), and an invoice issued while no card was stored is charged once one is.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from billing import invoices, watch
from billing.models import (
    AutoTopUp,
    BillingProfile,
    Organization,
    PaymentMethod,
    PaymentMethodSetup,
    SetupStatus,
)
from billing.payments import PaymentError, PaymentProvider, get_provider
from team import audit
from team.models import Action

log = logging.getLogger(__name__)


class SetupClosed(Exception):
    """The setup was cancelled or replaced; a card reported for it is not stored."""


@dataclasses.dataclass(frozen=True)
class Card:
    """A card as the provider describes it: never its number."""

    method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


def profile(org: Organization) -> BillingProfile:
    """The organization's billing details (made empty on first use)."""
    found, _ = BillingProfile.objects.get_or_create(organization=org)
    return found


def start(
    org: Organization, *, by: Any, site_url: str, provider: PaymentProvider | None = None
) -> tuple[PaymentMethodSetup, str]:
    """Open a page where ``by`` stores a card for ``org``; returns the setup and the page's
    address. A provider error cancels the setup and is raised again."""
    provider = provider or get_provider()
    setup = PaymentMethodSetup.objects.create(organization=org, provider=provider.name, started_by=by)
    base = site_url.rstrip("/")
    try:
        checkout = provider.start_setup(
            setup,
            success_url=base + reverse("payment_method_added", args=[org.slug, setup.pk]),
            cancel_url=base + reverse("billing", args=[org.slug]),
        )
    except PaymentError:
        setup.status = SetupStatus.CANCELLED
        setup.save(update_fields=["status"])
        raise
    setup.session_id = checkout.session_id
    setup.save(update_fields=["session_id"])
    return setup, checkout.url


def store(setup: PaymentMethodSetup, card: Card, *, by: audit.Actor | None = None) -> PaymentMethod:
    """The provider reports ``card`` stored through ``setup``: it becomes the organization's
    payment method, replacing any other. Once per setup; a replay returns the stored card."""
    with transaction.atomic():
        locked = (
            PaymentMethodSetup.objects.select_for_update(of=("self",))
            .select_related("organization")
            .get(pk=setup.pk)
        )
        org = locked.organization
        if locked.status == SetupStatus.COMPLETED:
            current = PaymentMethod.objects.filter(organization=org).first()
            if current is not None:
                return current
        if locked.status != SetupStatus.PENDING:
            raise SetupClosed(f"Card setup {locked.pk} is {locked.status}; the card is not stored.")
        previous = PaymentMethod.objects.select_for_update().filter(organization=org).first()
        method, _ = PaymentMethod.objects.update_or_create(
            organization=org,
            defaults={
                "provider": locked.provider,
                "method_id": card.method_id,
                "brand": card.brand,
                "last4": card.last4,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
                "added_at": timezone.now(),
            },
        )
        locked.status = SetupStatus.COMPLETED
        locked.save(update_fields=["status"])
        audit.record(
            by or locked.started_by or f"payment provider ({locked.provider})",
            org,
            Action.PAYMENT_METHOD_CHANGED,
            target=str(method),
            detail=(f"Replaces {previous}." if previous else "Invoices and auto top-ups are charged to it."),
        )
        invoices.charge_when_card_stored(org)
    if previous is not None and previous.method_id != method.method_id:
        _forget(previous)
    return method


def remove(org: Organization, *, by: audit.Actor) -> PaymentMethod | None:
    """Remove the stored card (None when there was none). Auto top-up goes off with it."""
    with transaction.atomic():
        method = PaymentMethod.objects.select_for_update().filter(organization=org).first()
        if method is None:
            return None
        method.delete()
        turned_off = AutoTopUp.objects.filter(organization=org, enabled=True).update(
            enabled=False, disabled_reason="The payment method was removed."
        )
        audit.record(
            by,
            org,
            Action.PAYMENT_METHOD_REMOVED,
            target=str(method),
            detail="Auto top-up was turned off with it." if turned_off else "",
        )
    watch.update_notify(org.pk)
    _forget(method)
    return method


def _forget(method: PaymentMethod) -> None:
    try:
        get_provider(method.provider).forget(method)
    except PaymentError as exc:  # it stays attached at the provider; Tally no longer uses it
        log.warning("could not detach %s at %s: %s", method.method_id, method.provider, exc)
