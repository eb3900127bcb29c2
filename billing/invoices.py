"""The month's invoice: the plan fee and the credit packs paid for that month."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, Organization, Purchase, PurchaseStatus
from ledger.periods import month_bounds


def invoice_number(org: Organization, period: dt.date) -> str:
    """Unique because an organization has one invoice a month."""
    return f"TLY-{period:%Y%m}-{org.pk:06d}"


def issue_invoice(org: Organization, period: dt.date, now: dt.datetime | None = None) -> Invoice:
    """Issue the invoice for the month starting ``period``; an issued one is returned as is."""
    period = period.replace(day=1)
    existing = Invoice.objects.filter(organization=org, period=period).first()
    if existing is not None:
        return existing
    subscription = getattr(org, "subscription", None)
    starts_at, ends_at = month_bounds(period, org.tzinfo)
    lines: list[InvoiceLine] = []
    currency = "USD"
    if subscription is not None:
        currency = subscription.plan.currency
        lines.append(InvoiceLine(
            description=f"{subscription.plan.name} plan, {period:%B %Y}",
            amount_cents=subscription.monthly_fee_cents,
        ))
    purchases = Purchase.objects.filter(
        organization=org, status=PurchaseStatus.PAID, paid_at__gte=starts_at, paid_at__lt=ends_at
    ).select_related("pack").order_by("paid_at", "id")
    for purchase in purchases:
        lines.append(InvoiceLine(
            description=f"{purchase.pack.name}: {purchase.credits:,} credits",
            amount_cents=purchase.price_cents, purchase=purchase,
        ))
    # Inside the month close's transaction this adds no savepoint; alone, it is one.
    with transaction.atomic(savepoint=False):
        invoice = Invoice.objects.create(
            organization=org, period=period, number=invoice_number(org, period),
            currency=currency, total_cents=sum(line.amount_cents for line in lines),
            issued_at=now or timezone.now(),
        )
        for line in lines:
            line.invoice = invoice
        InvoiceLine.objects.bulk_create(lines)
    return invoice
