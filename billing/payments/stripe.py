"""Stripe: a Checkout Session per purchase, and the webhook that reports its outcome; a
Customer per organization, Checkout in setup mode to store its card, and off-session
PaymentIntents to charge it.

The webhook is trusted only after its ``Stripe-Signature`` header verifies against the raw
request body: an HMAC-SHA256 of ``"{t}.{body}"`` with the endpoint secret, any valid ``v1``
signature accepted, and a timestamp no older than five minutes. Even then an event acts on
a purchase only when it names the purchase's Checkout Session and pays its amount in its
currency; any other is logged and ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

import stripe
from django.conf import settings

from billing import payment_methods, purchases
from billing.models import PaymentMethod, PaymentMethodSetup, Purchase, PurchaseStatus, SetupStatus
from billing.payments import Charge, ChargeDeclined, Checkout, PaymentError, ProviderName

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
            return stripe.StripeClient(
                settings.STRIPE_API_KEY,
                max_network_retries=2,
                base_addresses={"api": settings.STRIPE_API_BASE},
            )
        return stripe.StripeClient(settings.STRIPE_API_KEY, max_network_retries=2)

    def start_checkout(self, purchase: Purchase, *, success_url: str, cancel_url: str) -> Checkout:
        reference = {"purchase_id": str(purchase.pk), "organization": purchase.organization.slug}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": purchase.currency.lower(),
                        "unit_amount": purchase.price_cents,
                        "product_data": {"name": f"{purchase.pack.name}: {purchase.credits:,} credits"},
                    },
                }
            ],
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

    def customer(self, setup: PaymentMethodSetup) -> str:
        """The organization's Stripe Customer, made on its first card."""
        org = setup.organization
        profile = payment_methods.profile(org)
        if profile.stripe_customer_id:
            return profile.stripe_customer_id
        try:
            customer = self.client().v1.customers.create(
                params={"name": profile.legal_name or org.name, "metadata": {"organization": org.slug}},
                options={"idempotency_key": f"tally-customer-{org.pk}"},
            )
        except stripe.StripeError as exc:
            log.warning("Stripe refused a customer for %s: %s", org.slug, exc)
            raise PaymentError("The card payment service is unavailable; no card was stored.") from exc
        profile.stripe_customer_id = customer.id
        profile.save(update_fields=["stripe_customer_id", "updated_at"])
        return customer.id

    def start_setup(self, setup: PaymentMethodSetup, *, success_url: str, cancel_url: str) -> Checkout:
        reference = {"setup_id": str(setup.pk), "organization": setup.organization.slug}
        params: dict[str, Any] = {
            "mode": "setup",
            "customer": self.customer(setup),
            "payment_method_types": ["card"],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": f"setup-{setup.pk}",
            "metadata": reference,
            "setup_intent_data": {"metadata": reference},
        }
        try:
            session = self.client().v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"tally-setup-{setup.pk}"},
            )
        except stripe.StripeError as exc:
            log.warning("Stripe refused a setup session for %s: %s", setup.pk, exc)
            raise PaymentError("The card payment service is unavailable; no card was stored.") from exc
        if not session.url:
            raise PaymentError("Stripe returned a checkout without an address.")
        return Checkout(session_id=session.id, url=session.url)

    def card(self, setup_intent_id: str) -> payment_methods.Card:
        """The card a completed SetupIntent saved."""
        try:
            client = self.client()
            intent = client.v1.setup_intents.retrieve(setup_intent_id)
            method_id = intent.payment_method if isinstance(intent.payment_method, str) else None
            if intent.status != "succeeded" or not method_id:
                raise PaymentError(f"Setup {setup_intent_id} saved no card ({intent.status}).")
            method = client.v1.payment_methods.retrieve(method_id)
        except stripe.StripeError as exc:
            raise PaymentError(f"Could not read setup {setup_intent_id}: {exc}") from exc
        card = method.card
        if card is None:
            raise PaymentError(f"Payment method {method_id} is not a card.")
        return payment_methods.Card(method.id, card.brand, card.last4, card.exp_month, card.exp_year)

    def charge(
        self, method: PaymentMethod, *, amount_cents: int, currency: str, key: str, description: str
    ) -> Charge:
        customer = payment_methods.profile(method.organization).stripe_customer_id
        try:
            intent = self.client().v1.payment_intents.create(
                params={
                    "amount": amount_cents,
                    "currency": currency.lower(),
                    "customer": customer,
                    "payment_method": method.method_id,
                    "off_session": True,
                    "confirm": True,
                    "description": description,
                    "metadata": {"organization": method.organization.slug, "key": key},
                },
                options={"idempotency_key": key},
            )
        except stripe.CardError as exc:
            raise ChargeDeclined(exc.user_message or "Your card was declined.") from exc
        except stripe.StripeError as exc:
            log.warning("Stripe could not charge %s (%s): %s", method.organization.slug, key, exc)
            raise PaymentError("The card payment service is unavailable; nothing was charged.") from exc
        if intent.status != "succeeded":
            raise ChargeDeclined(f"The payment needs the card holder ({intent.status}).")
        return Charge(payment_id=intent.id)

    def forget(self, method: PaymentMethod) -> None:
        try:
            self.client().v1.payment_methods.detach(method.method_id)
        except stripe.StripeError as exc:
            raise PaymentError(str(exc)) from exc


def verify_webhook(payload: bytes, signature: str) -> Any:
    """The JSON in ``payload`` if ``signature`` verifies against it; else ``InvalidWebhook``.
    Its shape is ``handle_event``'s to check."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise InvalidWebhook("STRIPE_WEBHOOK_SECRET is not set.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=TOLERANCE_SECONDS
        )
        return json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidWebhook(str(exc)) from exc


class MalformedEvent(Exception):
    """A signed event that is not shaped as Stripe's are; it changes nothing."""


# Stripe's object ids: a prefix and letters, digits and underscores (cs_test_a1B2..., pi_3Q...).
STRIPE_ID = re.compile(r"[A-Za-z0-9_]{1,255}")


@dataclasses.dataclass(frozen=True)
class SessionEvent:
    """The fields of a ``checkout.session.*`` event that Tally acts on, checked."""

    event_id: str
    session_id: str
    payment_intent: str | None
    payment_status: str
    amount_total: int | None
    currency: str | None
    client_reference_id: str | None

    @property
    def payment_id(self) -> str:
        """What fulfilment is keyed by: the payment intent, or the session when it has none
        (a free checkout)."""
        return self.payment_intent or self.session_id


def handle_event(event: Any) -> str:
    """Apply a verified event to its purchase; say what happened (for the response and the
    log). Events Tally does not act on, and sessions that do not match a purchase's id,
    amount and currency, are acknowledged and ignored. A malformed event raises
    ``MalformedEvent``; a payment that already paid another purchase raises
    ``purchases.PaymentAlreadyUsed``."""
    if not isinstance(event, dict):
        raise MalformedEvent("the event is not an object")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise MalformedEvent("its type is not a string")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedEvent("its data is not an object holding an object")
    if not kind.startswith("checkout.session."):
        return f"ignored {kind}"
    if data["object"].get("mode") == "setup":
        return _handle_setup(kind, event.get("id"), data["object"])
    session = _session_event(event.get("id"), data["object"])
    purchase = Purchase.objects.filter(
        provider=ProviderName.STRIPE, provider_session_id=session.session_id
    ).first()
    if purchase is None:
        log.warning(
            "Stripe event %s: session %s is no Tally purchase's; ignored",
            session.event_id,
            session.session_id,
        )
        return "no matching purchase"
    mismatch = _mismatch(session, purchase)
    if mismatch:
        log.warning("Stripe event %s for purchase %s ignored: %s", session.event_id, purchase.pk, mismatch)
        return f"ignored: {mismatch}"
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if session.payment_status not in ("paid", "no_payment_required"):
            return "awaiting payment"  # a delayed method; async_payment_* follows
        try:
            purchase = purchases.fulfil(purchase, payment_id=session.payment_id)
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


def _session_event(event_id: Any, session: dict[str, Any]) -> SessionEvent:
    """The Checkout Session's fields, each of the type Stripe sends, or ``MalformedEvent``."""
    session_id = session.get("id")
    if not isinstance(session_id, str) or not STRIPE_ID.fullmatch(session_id):
        raise MalformedEvent("the session's id is not a Stripe id")
    payment_intent = session.get("payment_intent")
    if payment_intent is not None and not (
        isinstance(payment_intent, str) and STRIPE_ID.fullmatch(payment_intent)
    ):
        raise MalformedEvent("the session's payment_intent is not a payment intent id")
    amount = session.get("amount_total")
    if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool)):
        raise MalformedEvent("the session's amount_total is not a whole number")
    fields = {name: session.get(name) for name in ("payment_status", "currency", "client_reference_id")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise MalformedEvent(f"the session's {name} is not a string")
    return SessionEvent(
        event_id=str(event_id),
        session_id=session_id,
        payment_intent=payment_intent,
        payment_status=fields["payment_status"] or "",
        amount_total=amount,
        currency=fields["currency"],
        client_reference_id=fields["client_reference_id"],
    )


def _mismatch(session: SessionEvent, purchase: Purchase) -> str | None:
    """Why the session is not this purchase's checkout, or None when it is: the amount and
    currency must be the purchase's, and a client_reference_id must name it."""
    if session.client_reference_id is not None and session.client_reference_id != str(purchase.pk):
        return f"client_reference_id {session.client_reference_id!r} is not purchase {purchase.pk}"
    if session.amount_total != purchase.price_cents:
        return f"amount {session.amount_total} is not the purchase's {purchase.price_cents}"
    if (session.currency or "").lower() != purchase.currency.lower():
        return f"currency {session.currency!r} is not the purchase's {purchase.currency}"
    return None


def _handle_setup(kind: str, event_id: Any, session: dict[str, Any]) -> str:
    """A card-setup session: store its card when it completes, for the organization whose
    session and Customer it is; anything else is acknowledged and ignored."""
    session_id, intent_id, customer = session.get("id"), session.get("setup_intent"), session.get("customer")
    for name, value in (("id", session_id), ("setup_intent", intent_id), ("customer", customer)):
        if value is not None and not (isinstance(value, str) and STRIPE_ID.fullmatch(value)):
            raise MalformedEvent(f"the session's {name} is not a Stripe id")
    setup = (
        PaymentMethodSetup.objects.select_related("organization")
        .filter(provider=ProviderName.STRIPE, session_id=session_id or "")
        .first()
    )
    if setup is None:
        log.warning("Stripe event %s: setup session %s is no Tally setup's; ignored", event_id, session_id)
        return "no matching setup"
    if customer != payment_methods.profile(setup.organization).stripe_customer_id:
        log.warning(
            "Stripe event %s for setup %s ignored: customer %s is not its", event_id, setup.pk, customer
        )
        return "ignored: another customer"
    if kind == "checkout.session.expired":
        PaymentMethodSetup.objects.filter(pk=setup.pk, status=SetupStatus.PENDING).update(
            status=SetupStatus.CANCELLED
        )
        return "setup cancelled"
    if kind != "checkout.session.completed" or not isinstance(intent_id, str):
        return f"ignored {kind}"
    try:
        method = payment_methods.store(setup, StripeProvider().card(intent_id))
    except payment_methods.SetupClosed as exc:
        log.warning("Stripe reports a card for a closed setup: %s", exc)
        return "setup closed"
    return f"stored {method}"
