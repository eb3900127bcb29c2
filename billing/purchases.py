"""Buying credit packs: open a purchase, fulfil it once when the provider says it is paid,
close it when the payment failed or was abandoned.

Fulfilment is idempotent on the provider's payment id: the purchase row is locked, and the
top-up's idempotency key is that id, so however often a provider reports one payment, the
account is credited once.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing.models import CreditPack, Organization, Purchase, PurchaseStatus
from billing.payments import PaymentError, PaymentProvider, get_provider
from ledger import postings
from ledger.models import LotSource
from team import audit
from team.models import Action
from webhooks import events as webhook_events
from webhooks.models import EventType

__all__ = [
    "PurchaseStatus",
    "PackNotForSale",
    "PurchaseClosed",
    "PaymentAlreadyUsed",
    "start",
    "fulfil",
    "close_unpaid",
]

log = logging.getLogger(__name__)


class PackNotForSale(Exception):
    """A custom or withdrawn pack: it is arranged with sales, not bought online."""


class PurchaseClosed(Exception):
    """The purchase failed or was cancelled; a payment for it credits nothing."""


class PaymentAlreadyUsed(Exception):
    """The payment already paid another purchase; it credits nothing a second time."""


def start(
    org: Organization,
    pack: CreditPack,
    *,
    buyer: Any,
    site_url: str,
    provider: PaymentProvider | None = None,
) -> tuple[Purchase, str]:
    """Open a pending purchase of ``pack`` at today's price and a checkout for it. Returns
    the purchase and the address to send the buyer to. A provider error marks the purchase
    failed and is raised again."""
    if pack.is_custom or not pack.active or pack.credits is None or pack.price_cents is None:
        raise PackNotForSale(f"{pack.name} is arranged with our sales team.")
    if org.account.unlimited:
        raise PackNotForSale(f"{org.name}'s plan is unlimited: it needs no credit packs.")
    provider = provider or get_provider()
    purchase = Purchase.objects.create(
        organization=org,
        pack=pack,
        buyer=buyer,
        credits=pack.credits,
        price_cents=pack.price_cents,
        currency=pack.currency,
        provider=provider.name,
    )
    base = site_url.rstrip("/")
    try:
        checkout = provider.start_checkout(
            purchase,
            success_url=base + reverse("purchase_complete", args=[org.slug, purchase.pk]),
            cancel_url=base + reverse("purchase_cancelled", args=[org.slug, purchase.pk]),
        )
    except PaymentError:
        purchase.status = PurchaseStatus.FAILED
        purchase.save(update_fields=["status"])
        raise
    purchase.provider_session_id = checkout.session_id
    purchase.save(update_fields=["provider_session_id"])
    return purchase, checkout.url


def fulfil(purchase: Purchase, *, payment_id: str, now: dt.datetime | None = None) -> Purchase:
    """The provider reports ``payment_id`` paid this purchase: credit its pack as a
    never-expiring purchase lot and mark it paid, once. A replay returns the paid purchase;
    a failed or cancelled purchase raises ``PurchaseClosed``, and a payment that paid another
    purchase ``PaymentAlreadyUsed``, and neither credits anything."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Purchase.objects.select_for_update().get(pk=purchase.pk)
        if locked.status == PurchaseStatus.PAID:
            return locked
        if locked.status != PurchaseStatus.PENDING:
            raise PurchaseClosed(f"Purchase {locked.pk} is {locked.status}; payment {payment_id} ignored.")
        other = Purchase.objects.filter(provider_payment_id=payment_id).values_list("pk", flat=True).first()
        if other is not None:
            raise PaymentAlreadyUsed(
                f"Payment {payment_id} already paid purchase {other}; purchase {locked.pk} is not credited."
            )
        pack = CreditPack.objects.get(pk=locked.pack_id)
        org = Organization.objects.select_related("account").get(pk=locked.organization_id)
        account = org.account
        locked.status = PurchaseStatus.PAID
        locked.provider_payment_id = payment_id
        locked.paid_at = now
        try:
            receipt = postings.post_top_up(
                account,
                locked.credits,
                key=f"purchase:{locked.provider}:{payment_id}",
                source=LotSource.PURCHASE,
                operation=pack.operation,
                memo=f"{pack.name}, payment {payment_id}",
                now=now,
            )
            locked.save(update_fields=["status", "provider_payment_id", "paid_at"])
            webhook_events.record(
                org,
                EventType.TOP_UP_SUCCEEDED,
                webhook_events.top_up_data(locked, entry_id=receipt.entry_id, available=receipt.available),
            )
            audit.record(
                f"payment provider ({locked.provider})",
                org,
                Action.PURCHASE_PAID,
                target=pack.name,
                detail=f"{locked.credits:,} credits added; payment {payment_id}.",
                at=now,
            )
        except (IntegrityError, postings.IdempotencyConflict) as exc:
            # Another purchase took this payment id since the check above (the column is
            # unique, and so is the top-up's key); the exception rolls this top-up back.
            raise PaymentAlreadyUsed(
                f"Payment {payment_id} already paid another purchase; purchase {locked.pk} is not credited."
            ) from exc
    log.info("purchase %s paid by %s: %s credits", locked.pk, payment_id, locked.credits)
    return locked


def close_unpaid(purchase: Purchase, *, status: PurchaseStatus) -> Purchase:
    """The payment failed or the checkout was cancelled or expired. Only a pending purchase
    changes; a paid one stays paid."""
    if status not in (PurchaseStatus.FAILED, PurchaseStatus.CANCELLED):
        raise ValueError(f"{status} does not close a purchase unpaid.")
    with transaction.atomic():
        locked = Purchase.objects.select_for_update().get(pk=purchase.pk)
        if locked.status == PurchaseStatus.PENDING:
            locked.status = status
            locked.save(update_fields=["status"])
            if status == PurchaseStatus.FAILED:
                webhook_events.record(
                    locked.organization, EventType.TOP_UP_FAILED, webhook_events.top_up_data(locked)
                )
    return locked
