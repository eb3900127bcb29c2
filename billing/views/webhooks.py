"""Payment providers calling back. Authenticated by signature, so no session or CSRF."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.payments import stripe as stripe_payments


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    # The signature covers the raw bytes; anything parsed from them is read only after.
    try:
        event = stripe_payments.verify_webhook(request.body, request.headers.get("Stripe-Signature", ""))
    except stripe_payments.InvalidWebhook:
        return HttpResponseBadRequest("Invalid Stripe signature.", content_type="text/plain")
    outcome = stripe_payments.handle_event(event)
    return HttpResponse(outcome, content_type="text/plain")
