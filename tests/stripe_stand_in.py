"""A small local stand-in for Stripe's HTTP API, driven through the ``stripe`` library
(``STRIPE_API_BASE`` points it here), and Stripe's webhook signing scheme.

It answers what Tally asks of Stripe: Checkout Sessions (payment and setup mode),
Customers, SetupIntents and PaymentMethods (read), detaching a PaymentMethod, and
PaymentIntents confirmed off-session, which decline Stripe's declining test card with a
``card_error``. As Stripe does, a request repeated with its ``Idempotency-Key`` gets the
first answer back and creates nothing. ``complete_setup`` plays the card holder who
enters a card on the hosted setup page.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from pytest_django import Settings

API_KEY = "sk_test_tally"
WEBHOOK_SECRET = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc"
SESSION_ID = "cs_test_a1B2c3D4e5F6g7H8i9J0"
# Stripe's test cards, as the PaymentMethods a card holder's entry makes.
CARDS = {
    "visa": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
    "chargeDeclined": {"brand": "visa", "last4": "0002", "exp_month": 11, "exp_year": 2033},
}


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe's scheme: v1 = HMAC-SHA256 of "{t}.{body}" with the endpoint secret."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]}",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "livemode": False,
            "type": kind,
            "data": {"object": obj},
        }
    ).encode()


class FakeStripeApi(BaseHTTPRequestHandler):
    """Stripe's API, as far as Tally uses it; records every request it was sent."""

    requests: list[dict[str, Any]] = []
    objects: dict[str, dict[str, Any]] = {}
    answers: dict[str, tuple[int, dict[str, Any]]] = {}  # by idempotency key
    numbers = itertools.count(1)
    lock = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.requests, cls.objects, cls.answers = [], {}, {}

    @classmethod
    def new_id(cls, prefix: str) -> str:
        return f"{prefix}_test_{next(cls.numbers):08d}TaLLy"

    @classmethod
    def complete_setup(cls, session_id: str, card: str = "visa") -> dict[str, Any]:
        """The card holder entered ``card`` on the setup page: its SetupIntent succeeds with
        a new PaymentMethod. Returns the session, as the webhook event carries it."""
        session = cls.objects[session_id]
        method_id = cls.new_id("pm")
        cls.objects[method_id] = {
            "id": method_id,
            "object": "payment_method",
            "type": "card",
            "customer": session["customer"],
            "card": CARDS[card],
        }
        intent = cls.objects[session["setup_intent"]]
        intent.update(status="succeeded", payment_method=method_id)
        session.update(status="complete")
        return session

    @classmethod
    def payment_intents(cls) -> list[dict[str, Any]]:
        return [obj for obj in cls.objects.values() if obj["object"] == "payment_intent"]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle("GET", {})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        form = {key: values[0] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
        self._handle("POST", form)

    def _handle(self, method: str, form: dict[str, str]) -> None:
        with FakeStripeApi.lock:
            FakeStripeApi.requests.append(
                {"method": method, "path": self.path, "headers": dict(self.headers), "form": form}
            )
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                return self._reply(
                    401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
                )
            key = self.headers.get("Idempotency-Key")
            if method == "POST" and key and key in FakeStripeApi.answers:
                return self._reply(*FakeStripeApi.answers[key])
            status, payload = self._route(method, self.path.split("?")[0], form)
            if method == "POST" and key:
                FakeStripeApi.answers[key] = (status, payload)
            self._reply(status, payload)

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/customers":
            return 200, self._create("cus", {"object": "customer", "name": form.get("name")})
        if method == "POST" and path == "/v1/checkout/sessions":
            return 200, self._session(form)
        if method == "POST" and path == "/v1/payment_intents":
            return self._payment_intent(form)
        found = re.fullmatch(r"/v1/(setup_intents|payment_methods)/(\w+)(/detach)?", path)
        obj = FakeStripeApi.objects.get(found[2]) if found else None
        if found and obj is not None and method == ("POST" if found[3] else "GET"):
            if found[3]:
                obj["customer"] = None
            return 200, obj
        message = f"Unrecognized request URL ({method}: {path})"
        return 404, {"error": {"type": "invalid_request_error", "message": message}}

    def _create(self, prefix: str, fields: dict[str, Any], object_id: str | None = None) -> dict[str, Any]:
        obj = {"id": object_id or FakeStripeApi.new_id(prefix), "livemode": False, **fields}
        FakeStripeApi.objects[obj["id"]] = obj
        return obj

    def _session(self, form: dict[str, str]) -> dict[str, Any]:
        common = {
            "object": "checkout.session",
            "mode": form["mode"],
            "client_reference_id": form.get("client_reference_id"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "status": "open",
            "success_url": form["success_url"],
            "cancel_url": form["cancel_url"],
            "expires_at": int(time.time()) + 86_400,
        }
        if form["mode"] == "setup":
            session_id = FakeStripeApi.new_id("cs")
            intent = self._create("seti", {"object": "setup_intent", "status": "requires_payment_method"})
            return self._create(
                "cs",
                {
                    **common,
                    "customer": form["customer"],
                    "setup_intent": intent["id"],
                    "url": f"https://checkout.stripe.com/c/setup/{session_id}",
                },
                session_id,
            )
        amount = int(form["line_items[0][price_data][unit_amount]"])
        return self._create(
            "cs",
            {
                **common,
                "amount_subtotal": amount,
                "amount_total": amount,
                "currency": form["line_items[0][price_data][currency]"],
                "payment_intent": None,
                "payment_status": "unpaid",
                "url": f"https://checkout.stripe.com/c/pay/{SESSION_ID}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
            },
            SESSION_ID,
        )

    def _payment_intent(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        method = FakeStripeApi.objects.get(form.get("payment_method", ""))
        if method is None or method["customer"] != form.get("customer"):
            return 400, {"error": {"type": "invalid_request_error", "message": "No such PaymentMethod."}}
        if form.get("off_session") != "true" or form.get("confirm") != "true":
            return 400, {"error": {"type": "invalid_request_error", "message": "Tally charges off-session."}}
        intent = self._create(
            "pi",
            {
                "object": "payment_intent",
                "amount": int(form["amount"]),
                "currency": form["currency"],
                "customer": form["customer"],
                "payment_method": method["id"],
                "status": "succeeded",
            },
        )
        if method["card"]["last4"] == CARDS["chargeDeclined"]["last4"]:
            intent["status"] = "requires_payment_method"
            return 402, {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "generic_decline",
                    "message": "Your card was declined.",
                    "payment_intent": intent,
                }
            }
        return 200, intent

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_tally_test")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[type[FakeStripeApi]]:
    """Stripe as the payment provider, its API answered by the stand-in (a test module's
    ``fake_stripe`` fixture)."""
    FakeStripeApi.reset()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield FakeStripeApi
    finally:
        server.shutdown()
        server.server_close()
