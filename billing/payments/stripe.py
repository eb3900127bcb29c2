"""Stripe: a Checkout Session per purchase, and the webhook that reports its outcome.

The webhook is trusted only after its ``Stripe-Signature`` header verifies against the raw
request body: an HMAC-SHA256 of ``"{t}.{body}"`` with the endpoint secret, any valid ``v1``
signature accepted, and a timestamp no older than five minutes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from django.conf import settings

from billing import purchases
from billing.models import Purchase, PurchaseStatus
from billing.payments import Checkout, PaymentError, ProviderName

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300


class InvalidWebhook(Exception):
    """The request is not a verified Stripe event; it changes nothing."""


class StripeProvider:
    name = ProviderName.STRIPE

    def client(self) -> stripe.StripeClient:
        if not settings.STRIPE_API_KEY:
            raise PaymentError("Card payments are not configured (STRIPE_API_KEY is empty).")
        if settings.STRIPE_API_BASE:  # a stand-in for Stripe's API: stripe-mock, or a test's server
            return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=2,
                                       base_addresses={"api": settings.STRIPE_API_BASE})
        return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=2)

    def start_checkout(self, purchase: Purchase, *, success_url: str, cancel_url: str) -> Checkout:
        reference = {"purchase_id": str(purchase.pk), "organization": purchase.organization.slug}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": purchase.currency.lower(),
                    "unit_amount": purchase.price_cents,
                    "product_data": {"name": f"{purchase.pack.name}: {purchase.credits:,} credits"},
                },
            }],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": str(purchase.pk),
            "metadata": reference,
            "payment_intent_data": {"metadata": reference},
        }
        email = getattr(purchase.buyer, "email", "")
        if email:
            params["customer_email"] = email
        try:
            # The idempotency key makes a retried request return the same session.
            session = self.client().v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"tally-purchase-{purchase.pk}"},
            )
        except stripe.StripeError as exc:
            log.warning("Stripe refused a checkout for purchase %s: %s", purchase.pk, exc)
            raise PaymentError("The card payment service is unavailable; nothing was charged.") from exc
        if not session.url:
            raise PaymentError("Stripe returned a checkout without an address.")
        return Checkout(session_id=session.id, url=session.url)


def verify_webhook(payload: bytes, signature: str) -> dict[str, Any]:
    """The event in ``payload`` if ``signature`` verifies against it; else ``InvalidWebhook``."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise InvalidWebhook("STRIPE_WEBHOOK_SECRET is not set.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=TOLERANCE_SECONDS
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    if not isinstance(event, dict) or not isinstance(event.get("data", {}).get("object"), dict):
        raise InvalidWebhook("Not a Stripe event.")
    return event


def handle_event(event: dict[str, Any]) -> str:
    """Apply a verified event to its purchase; say what happened (for the response and the
    log). Events Tally does not act on are acknowledged and ignored."""
    kind = event.get("type", "")
    session = event["data"]["object"]
    if not kind.startswith("checkout.session."):
        return f"ignored {kind}"
    purchase = _purchase_for(session)
    if purchase is None:
        log.warning("Stripe event %s names no Tally purchase", event.get("id"))
        return "no matching purchase"
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if session.get("payment_status") not in ("paid", "no_payment_required"):
            return "awaiting payment"  # a delayed method; async_payment_* follows
        payment_id = session.get("payment_intent") or session["id"]
        try:
            purchase = purchases.fulfil(purchase, payment_id=str(payment_id))
        except purchases.PurchaseClosed as exc:
            log.error("Stripe reports a payment for a closed purchase: %s", exc)
            return "purchase closed"
        return f"purchase {purchase.status}"
    if kind == "checkout.session.async_payment_failed":
        purchase = purchases.close_unpaid(purchase, status=PurchaseStatus.FAILED)
        return f"purchase {purchase.status}"
    if kind == "checkout.session.expired":
        purchase = purchases.close_unpaid(purchase, status=PurchaseStatus.CANCELLED)
        return f"purchase {purchase.status}"
    return f"ignored {kind}"


def _purchase_for(session: dict[str, Any]) -> Purchase | None:
    stripe_purchases = Purchase.objects.filter(provider=ProviderName.STRIPE)
    found = stripe_purchases.filter(provider_session_id=session.get("id") or "").first()
    reference = str(session.get("client_reference_id") or "")
    if found is None and reference.isdigit():
        found = stripe_purchases.filter(pk=int(reference)).first()
    return found
