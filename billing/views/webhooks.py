"""Payment providers calling back. Authenticated by signature, so no session or CSRF."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import purchases
from billing.payments import stripe as stripe_payments


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    # The signature covers the raw bytes; anything parsed from them is read only after.
    try:
        event = stripe_payments.verify_webhook(request.body, request.headers.get("Stripe-Signature", ""))
    except stripe_payments.InvalidWebhook:
        return _plain("Invalid Stripe signature.", status=400)
    try:
        outcome = stripe_payments.handle_event(event)
    except stripe_payments.MalformedEvent as exc:
        return _plain(f"Malformed Stripe event: {exc}.", status=400)
    except purchases.PaymentAlreadyUsed as exc:
        return _plain(str(exc), status=409)
    return _plain(outcome)


def _plain(text: str, status: int = 200) -> HttpResponse:
    return HttpResponse(text, content_type="text/plain", status=status)
