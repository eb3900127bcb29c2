"""Outgoing webhooks: an organization's endpoints, the events Tally stored for them, and
each event's delivery to each endpoint."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.models import Organization

# How long a rotated secret's signatures are still sent beside the new one's, so receivers
# can switch secrets without refusing a delivery.
ROTATION_OVERLAP = dt.timedelta(hours=24)
RESPONSE_BODY_LIMIT = 1024  # bytes of a receiver's answer kept in the delivery log


class EventType(models.TextChoices):
    CREDITS_LOW = "credits.low"
    CREDITS_EXHAUSTED = "credits.exhausted"
    CREDITS_RESTORED = "credits.restored"
    HOLD_EXPIRED = "hold.expired"
    BUDGET_EXCEEDED = "budget.exceeded"
    STATEMENT_CLOSED = "statement.closed"
    TOP_UP_SUCCEEDED = "top_up.succeeded"
    TOP_UP_FAILED = "top_up.failed"
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
    TEST = "webhook.test"  # the test button's; sent to one endpoint, never chosen

    @classmethod
    def subscribable(cls) -> list[tuple[str, str]]:
        return [(value, value) for value in cls.values if value != cls.TEST]


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


class Endpoint(models.Model):
    """A URL of the organization's that Tally POSTs the events it chose to, signed."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField("URL", max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = ArrayField(models.CharField(max_length=32, choices=EventType.choices))
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    secret = models.CharField(max_length=100, default=new_secret)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    @property
    def secret_hint(self) -> str:
        return self.secret[:10] + "…"

    def signing_secrets(self, now: dt.datetime) -> list[str]:
        """The secrets each delivery is signed with: the current one, and a rotated one
        until its overlap ends."""
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def rotate_secret(self, now: dt.datetime | None = None) -> str:
        """A new secret; the old one still signs for ``ROTATION_OVERLAP``. Returns the new one."""
        self.previous_secret, self.secret = self.secret, new_secret()
        self.previous_secret_until = (now or timezone.now()) + ROTATION_OVERLAP
        self.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
        return self.secret


class Event(models.Model):
    """Something that happened to an organization, stored in the transaction that made it
    happen, for the endpoints that chose its type. ``message_id`` is the ``webhook-id``
    every delivery and retry of it carries, so receivers can drop a repeat."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_events")
    message_id = models.CharField(max_length=40, unique=True, default=new_message_id)
    type = models.CharField(max_length=32, choices=EventType.choices)
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.type} {self.message_id}"

    def body(self) -> bytes:
        """The JSON sent: the same bytes on every attempt (the signature covers them)."""
        envelope = {"type": self.type, "timestamp": self.created_at.isoformat(), "data": self.data}
        return json.dumps(envelope, separators=(",", ":")).encode()


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Delivery(models.Model):
    """One event sent to one endpoint: its attempts so far and the last answer."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="While pending.")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.CharField(max_length=RESPONSE_BODY_LIMIT, blank=True)
    error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-id"], name="delivery_endpoint_idx"),
            # The retry sweep reads pending deliveries by when they are due.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_pending_idx",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint}"


class CreditsLevel(models.TextChoices):
    ENOUGH = "enough"
    LOW = "low"
    EXHAUSTED = "exhausted"


class CreditsState(models.Model):
    """Which side of the low level and of zero an organization's available credits were
    after the last posting webhooks saw, so each crossing is sent once."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, primary_key=True, related_name="webhook_credits"
    )
    level = models.CharField(max_length=16, choices=CreditsLevel.choices, default=CreditsLevel.ENOUGH)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.organization}: {self.level}"
