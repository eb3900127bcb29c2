"""The team around an organization: invitations to join it, the organization each person
used last, and the audit log of every change to money or access."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone

from billing.models import Organization, Role

INVITATION_VALID_FOR = dt.timedelta(days=7)


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def pending(self, now: dt.datetime | None = None) -> InvitationQuerySet:
        """Neither accepted nor revoked, and not yet expired: these hold a seat."""
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now or timezone.now()
        )


class Invitation(models.Model):
    """An invitation to join an organization with a role. The link carries a random token;
    only its hash is stored, as for API keys. Accepting it or revoking it ends it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    hashed_token = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization} ({self.role})"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())


class RecentOrganization(models.Model):
    """The organization a person used last: ``/`` takes them back to it."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")

    def __str__(self) -> str:
        return f"{self.user} last used {self.organization}"


class Action(models.TextChoices):
    """What an audit record says happened. Budgets, webhooks, the payment method and auto
    top-up are named here too, for their views to record."""

    PURCHASE_STARTED = "purchase.started", "Checkout opened"
    PURCHASE_PAID = "purchase.paid", "Pack paid"
    CREDITS_ADJUSTED = "credits.adjusted", "Credits adjusted"
    PAYMENT_METHOD_CHANGED = "payment_method.changed", "Payment method changed"
    PAYMENT_METHOD_REMOVED = "payment_method.removed", "Payment method removed"
    AUTO_TOP_UP_CHANGED = "auto_top_up.changed", "Auto top-up changed"
    BILLING_DETAILS_CHANGED = "billing_details.changed", "Billing details changed"
    ALERT_ADDED = "alert.added", "Alert added"
    ALERT_REMOVED = "alert.removed", "Alert removed"
    BUDGET_SET = "budget.set", "Budget set"
    BUDGET_REMOVED = "budget.removed", "Budget removed"
    API_KEY_CREATED = "api_key.created", "API key created"
    API_KEY_REVOKED = "api_key.revoked", "API key revoked"
    WEBHOOK_CREATED = "webhook.created", "Webhook added"
    WEBHOOK_CHANGED = "webhook.changed", "Webhook changed"
    WEBHOOK_REMOVED = "webhook.removed", "Webhook removed"
    MEMBER_INVITED = "member.invited", "Member invited"
    INVITATION_RESENT = "invitation.resent", "Invitation resent"
    INVITATION_REVOKED = "invitation.revoked", "Invitation revoked"
    MEMBER_JOINED = "member.joined", "Member joined"
    ROLE_CHANGED = "member.role_changed", "Role changed"
    MEMBER_REMOVED = "member.removed", "Member removed"


class ActorKind(models.TextChoices):
    USER = "user"
    API_KEY = "api_key", "API key"
    STAFF = "staff"
    SYSTEM = "system"


class AuditRecord(models.Model):
    """One change to money or access. Append-only at the database (migration 0002): no
    UPDATE, and DELETE only once a record is older than its organization's plan's audit
    window. Who is kept as text, so a record outlives the person or key it names."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="audit_records")
    created_at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor = models.CharField(max_length=200, help_text="Username, API key name, or the system's part.")
    # Not bound to Action's choices: a new action needs no migration.
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True)
    detail = models.TextField(blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="audit_org_newest")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.target}"

    @property
    def action_label(self) -> str:
        return Action(self.action).label if self.action in Action.values else self.action
