"""Organizations, their people, plans and subscriptions, packs, purchases, invoices,
alert thresholds and API keys. Credits themselves live in ``ledger``."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import zoneinfo
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from ledger import postings
from ledger.models import Account, LotSource
from ledger.periods import add_months, month_start

GB = 1024**3


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone.")


class Plan(models.Model):
    """A subscription plan. Plans are data, editable by staff."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    monthly_credits = models.PositiveIntegerField(
        null=True, blank=True, help_text="Credits granted each month; empty means unlimited."
    )
    monthly_fee_cents = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, default="USD")
    rollover_months = models.PositiveSmallIntegerField(
        default=1,
        help_text="Months a month's subscription credits stay usable (1: expire at month end).",
    )
    storage_limit_gb = models.PositiveIntegerField(null=True, blank=True)
    deployments_limit = models.PositiveIntegerField(null=True, blank=True)
    seats_limit = models.PositiveIntegerField(null=True, blank=True)
    audit_window_days = models.PositiveIntegerField(default=30)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A plan made unlimited (or limited) takes its subscribers' accounts with it."""
        with transaction.atomic():
            super().save(*args, **kwargs)
            _follow_plan(Account.objects.filter(organization__subscription__plan=self), self)

    @property
    def unlimited(self) -> bool:
        return self.monthly_credits is None


def _follow_plan(accounts: models.QuerySet[Account], plan: Plan) -> None:
    """The ledger refuses debits by an account's own ``unlimited`` flag; it is the plan's,
    kept in step whenever a plan or a subscription is saved."""
    accounts.exclude(unlimited=plan.unlimited).update(unlimited=plan.unlimited)


# The audit-trail window of an organization without a plan.
DEFAULT_AUDIT_WINDOW_DAYS = 30


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="organization")
    storage_bytes = models.BigIntegerField(default=0)
    deployments = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            if self.account_id is None:
                self.account = postings.open_account(self.slug, time_zone=self.time_zone)
            elif self.time_zone != (self.account.next_time_zone or self.account.time_zone):
                postings.change_time_zone(self.account, self.time_zone)
            super().save(*args, **kwargs)

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        """The zone the organization's days and months are in now: the ledger's. A new
        ``time_zone`` takes effect from the month after the current one (see
        ``postings.change_time_zone``)."""
        return self.account.tzinfo

    @property
    def plan_subscription(self) -> Subscription | None:
        """The organization's subscription, or None when it has none (the reverse
        one-to-one raises instead)."""
        return getattr(self, "subscription", None)

    @property
    def audit_window_days(self) -> int:
        """How many days of its ledger the organization sees (its plan's audit-trail window)."""
        subscription = self.plan_subscription
        return subscription.plan.audit_window_days if subscription else DEFAULT_AUDIT_WINDOW_DAYS

    @property
    def storage_gb(self) -> float:
        return self.storage_bytes / GB

    def local_now(self) -> dt.datetime:
        return timezone.now().astimezone(self.tzinfo)


class Role(models.TextChoices):
    MANAGER = "manager"
    MEMBER = "member"


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.organization}"

    @property
    def is_manager(self) -> bool:
        return self.role == Role.MANAGER


class Subscription(models.Model):
    """An organization's plan. Enterprise terms override the plan per subscription."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField(default=timezone.now)
    monthly_credits_override = models.PositiveIntegerField(null=True, blank=True)
    monthly_fee_cents_override = models.PositiveIntegerField(null=True, blank=True)
    rollover_months_override = models.PositiveSmallIntegerField(null=True, blank=True)
    storage_limit_gb_override = models.PositiveIntegerField(null=True, blank=True)
    deployments_limit_override = models.PositiveIntegerField(null=True, blank=True)
    seats_limit_override = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.organization} on {self.plan}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            super().save(*args, **kwargs)
            _follow_plan(Account.objects.filter(pk=self.organization.account_id), self.plan)

    def _term(self, name: str) -> Any:
        override = getattr(self, f"{name}_override")
        return override if override is not None else getattr(self.plan, name)

    @property
    def unlimited(self) -> bool:
        """Never refused for credits. An unlimited plan stays unlimited whatever monthly
        allocation its custom terms grant (Enterprise: an allocation, overage invoiced)."""
        return self.plan.unlimited

    @property
    def monthly_credits(self) -> int | None:
        return self._term("monthly_credits")  # type: ignore[no-any-return]

    @property
    def monthly_fee_cents(self) -> int:
        return self._term("monthly_fee_cents")  # type: ignore[no-any-return]

    @property
    def rollover_months(self) -> int:
        return self._term("rollover_months")  # type: ignore[no-any-return]

    @property
    def storage_limit_gb(self) -> int | None:
        return self._term("storage_limit_gb")  # type: ignore[no-any-return]

    @property
    def deployments_limit(self) -> int | None:
        return self._term("deployments_limit")  # type: ignore[no-any-return]

    @property
    def seats_limit(self) -> int | None:
        return self._term("seats_limit")  # type: ignore[no-any-return]

    def renewal_expiry(self, period: dt.date) -> dt.datetime:
        """When credits granted for the month starting ``period`` expire: at the end of
        that month (1 month of rollover), or ``rollover_months`` months later."""
        return month_start(add_months(period, self.rollover_months), self.organization.tzinfo)

    def renew(self, period: dt.date, now: dt.datetime | None = None) -> postings.Receipt | None:
        """Grant the month's subscription credits, once per month (keyed by the month)."""
        credits = self.monthly_credits
        if not credits:
            return None
        return postings.post_top_up(
            self.organization.account,
            credits,
            key=f"subscription_renewal:{period:%Y-%m}",
            source=LotSource.SUBSCRIPTION,
            operation="subscription_renewal",
            expires_at=self.renewal_expiry(period),
            memo=f"{self.plan.name} plan credits for {period:%B %Y}",
            now=now,
        )


class CreditPack(models.Model):
    """A credit pack managers can buy. Prices are data, editable by staff."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: custom.")
    price_cents = models.PositiveIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    active = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order"]

    def __str__(self) -> str:
        return self.name

    @property
    def operation(self) -> str:
        return f"credit_pack_{self.slug}"

    @property
    def is_custom(self) -> bool:
        return self.credits is None


class PurchaseOrigin(models.TextChoices):
    CHECKOUT = "checkout", "Bought at checkout"
    AUTO_TOP_UP = "auto_top_up", "Auto top-up"


class PurchaseStatus(models.TextChoices):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Purchase(models.Model):
    """A manager's purchase of a credit pack through a payment provider."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="purchases")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="purchases")
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    credits = models.PositiveIntegerField()
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    provider = models.CharField(max_length=32)
    provider_session_id = models.CharField(max_length=255, blank=True)
    provider_payment_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=PurchaseStatus.choices, default=PurchaseStatus.PENDING)
    origin = models.CharField(max_length=16, choices=PurchaseOrigin.choices, default=PurchaseOrigin.CHECKOUT)
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one auto top-up in flight per organization (billing.auto_top_up).
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(origin="auto_top_up", status="pending"),
                name="purchase_one_auto_top_up_in_flight",
            )
        ]

    def __str__(self) -> str:
        return f"{self.pack} for {self.organization} ({self.status})"

    @property
    def checkout_expired(self) -> bool:
        """Still pending after its checkout session's lifetime (``CHECKOUT_SESSION_HOURS``;
        Stripe expires a session after 24 hours): the buyer left, and the checkout takes no
        payment any more. Computed when read, so no task has to mark it; a payment the
        provider still reports for it (a delayed method) credits it as usual."""
        lifetime = dt.timedelta(hours=settings.CHECKOUT_SESSION_HOURS)
        return self.status == PurchaseStatus.PENDING and timezone.now() - self.created_at >= lifetime

    @property
    def shown_status(self) -> str:
        """The status as pages show it: a pending checkout past its lifetime is expired."""
        return "expired" if self.checkout_expired else self.status

    @property
    def shown_status_display(self) -> str:
        return "Expired" if self.checkout_expired else self.get_status_display()


class InvoiceStatus(models.TextChoices):
    OPEN = "open"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class Invoice(models.Model):
    """The month's invoice: the plan fee and the packs bought that month."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="invoices")
    period = models.DateField(help_text="The first day of the invoiced month.")
    number = models.CharField(max_length=32, unique=True)
    currency = models.CharField(max_length=3, default="USD")
    total_cents = models.PositiveIntegerField(default=0, help_text="The subtotal: the sum of the lines.")
    amount_paid_cents = models.PositiveIntegerField(
        default=0, help_text="Packs paid at checkout, plus the charge that paid the rest."
    )
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.OPEN)
    issued_at = models.DateTimeField(default=timezone.now)
    bill_to = models.TextField(blank=True, help_text="The billing details as they were when it was issued.")
    paid_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the amount due is next charged; empty when nothing is."
    )

    class Meta:
        ordering = ["-period"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "period"], name="invoice_one_per_month"),
            models.CheckConstraint(
                condition=models.Q(amount_paid_cents__lte=models.F("total_cents")),
                name="invoice_paid_at_most_total",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(next_attempt_at__isnull=False),
                name="invoice_collection_due",
            )
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def amount_due_cents(self) -> int:
        return self.total_cents - self.amount_paid_cents


class PaymentAttemptOutcome(models.TextChoices):
    PAID = "paid"
    DECLINED = "declined"
    FAILED = "failed", "Could not be charged"


class PaymentAttempt(models.Model):
    """One charge of an invoice's amount due to the stored payment method. Its key is
    the idempotency key sent to the provider, so a retried task charges once."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    key = models.CharField(max_length=100, unique=True)
    amount_cents = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=PaymentAttemptOutcome.choices)
    message = models.CharField(max_length=300, blank=True)
    provider_payment_id = models.CharField(max_length=255, blank=True)
    attempted_at = models.DateTimeField()

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["invoice", "number"], name="attempt_unique")]

    def __str__(self) -> str:
        return f"{self.invoice} attempt {self.number}: {self.outcome}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField(default=1)
    amount_cents = models.PositiveIntegerField()
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, null=True, blank=True)

    def __str__(self) -> str:
        return self.description

    @property
    def paid(self) -> bool:
        """A pack's line was paid at checkout, before the invoice was issued."""
        return self.purchase_id is not None


class BillingProfile(models.Model):
    """An organization's billing details (what its invoices say they are billed to), and
    its customer at the payment provider (a Stripe Customer, made once)."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="billing_profile"
    )
    legal_name = models.CharField(max_length=200, blank=True)
    address = models.TextField(blank=True, max_length=1000)
    tax_id = models.CharField("Tax ID", max_length=64, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Billing details of {self.organization}"

    @property
    def bill_to(self) -> str:
        """The lines an invoice shows under "Billed to"."""
        lines = [self.legal_name or self.organization.name, *self.address.splitlines()]
        if self.tax_id:
            lines.append(f"Tax ID: {self.tax_id}")
        return "\n".join(line.strip() for line in lines if line.strip())


class PaymentMethod(models.Model):
    """The card an organization's invoices and auto top-ups are charged to: one at most."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="payment_method")
    provider = models.CharField(max_length=32)
    method_id = models.CharField(max_length=255, help_text="The provider's id for it (pm_...).")
    brand = models.CharField(max_length=32)
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    added_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.brand.title()} ending {self.last4}"


class SetupStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PaymentMethodSetup(models.Model):
    """A manager adding a card: a hosted page (Stripe Checkout in setup mode, or the local
    test page) whose completion stores the card as the organization's payment method."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="method_setups")
    provider = models.CharField(max_length=32)
    session_id = models.CharField(max_length=255, blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    status = models.CharField(max_length=16, choices=SetupStatus.choices, default=SetupStatus.PENDING)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "session_id"],
                condition=~models.Q(session_id=""),
                name="setup_session_unique",
            )
        ]

    def __str__(self) -> str:
        return f"card setup for {self.organization} ({self.status})"


class AutoTopUp(models.Model):
    """Buy ``pack`` with the stored payment method whenever available credits fall below
    ``threshold``: at most ``monthly_limit`` times in the organization's month, one at a
    time, and off after ``MAX_DECLINES`` declines in a row (``billing.auto_top_up``)."""

    MAX_DECLINES = 3

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="auto_top_up")
    enabled = models.BooleanField(default=False)
    threshold = models.PositiveIntegerField(help_text="Top up when available credits fall below this.")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="+")
    monthly_limit = models.PositiveSmallIntegerField(help_text="Top-ups at most in a month.")
    declines = models.PositiveSmallIntegerField(
        default=0, help_text="Declines in a row since the last success."
    )
    disabled_reason = models.CharField(max_length=200, blank=True)
    limit_reached_month = models.DateField(
        null=True, blank=True, help_text="The month the limit was reported."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"auto top-up of {self.organization} ({'on' if self.enabled else 'off'})"


class AlertKind(models.TextChoices):
    PERCENT = "percent", "Percent of monthly allowance"
    ABSOLUTE = "absolute", "Credits"


class AlertThreshold(models.Model):
    """Email the managers when available credits fall below this (once per crossing)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alert_thresholds")
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    value = models.PositiveIntegerField()
    below = models.BooleanField(default=False, help_text="Available credits are below it now.")
    last_alerted_at = models.DateTimeField(null=True, blank=True)
    last_alert_period = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "kind", "value"], name="alert_unique")]

    def __str__(self) -> str:
        return f"{self.value:,}{'%' if self.kind == AlertKind.PERCENT else ' credits'}"


class Scope(models.TextChoices):
    ACCOUNT_READ = "account:read"
    USAGE_WRITE = "usage:write"
    BUDGETS_WRITE = "budgets:write"


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """An organization's API key. Only a hash is stored; the key is shown once."""

    PREFIX = "tly_"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @classmethod
    def issue(
        cls, organization: Organization, *, name: str, scopes: list[str], created_by: Any = None
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with the raw secret, which is never stored."""
        unknown = set(scopes) - set(Scope.values)
        if not scopes or unknown:
            raise ValidationError(f"Scopes must be among {', '.join(Scope.values)}.")
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            organization=organization,
            name=name,
            prefix=raw[:12],
            hashed_key=cls.hash(raw),
            scopes=sorted(set(scopes)),
            created_by=created_by,
        )
        return key, raw

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
