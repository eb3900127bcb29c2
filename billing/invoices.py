"""The month's invoice: the plan fee and the credit packs paid for that month."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, Organization, Purchase, PurchaseStatus
from ledger.periods import month_bounds


def invoice_number(org: Organization, period: dt.date) -> str:
    """Unique because an organization has one invoice a month."""
    return f"TLY-{period:%Y%m}-{org.pk:06d}"


def issue_invoices(
    orgs: Sequence[Organization], period: dt.date, now: dt.datetime | None = None
) -> list[Invoice]:
    """Issue each organization's invoice for the month starting ``period`` (one already
    issued is returned as is), in a fixed number of queries for the whole batch."""
    period = period.replace(day=1)
    existing = {
        invoice.organization_id: invoice
        for invoice in Invoice.objects.filter(organization__in=orgs, period=period)
    }
    fresh = [org for org in orgs if org.pk not in existing]
    bounds = {org.pk: month_bounds(period, org.tzinfo) for org in fresh}
    paid: dict[int, list[Purchase]] = defaultdict(list)
    if fresh:
        # One query for the whole batch, over the widest bounds; each organization's own
        # month (its time zone) is applied below.
        purchases = (
            Purchase.objects.filter(
                organization__in=fresh,
                status=PurchaseStatus.PAID,
                paid_at__gte=min(start for start, _ in bounds.values()),
                paid_at__lt=max(end for _, end in bounds.values()),
            )
            .select_related("pack")
            .order_by("paid_at", "id")
        )
        for purchase in purchases:
            starts_at, ends_at = bounds[purchase.organization_id]
            if purchase.paid_at is not None and starts_at <= purchase.paid_at < ends_at:
                paid[purchase.organization_id].append(purchase)
    issued_at = now or timezone.now()
    invoices, lines = [], []
    for org in fresh:
        org_lines = _lines(org, period, paid[org.pk])
        invoice = Invoice(
            organization=org,
            period=period,
            number=invoice_number(org, period),
            currency=org.plan_subscription.plan.currency if org.plan_subscription else "USD",
            total_cents=sum(line.amount_cents for line in org_lines),
            issued_at=issued_at,
        )
        for line in org_lines:
            line.invoice = invoice
        invoices.append(invoice)
        lines.extend(org_lines)
    # Inside the month close's transaction this adds no savepoint; alone, it is one.
    with transaction.atomic(savepoint=False):
        Invoice.objects.bulk_create(invoices)
        InvoiceLine.objects.bulk_create(lines)  # each takes its invoice's new id
    made = iter(invoices)
    return [existing[org.pk] if org.pk in existing else next(made) for org in orgs]


def _lines(org: Organization, period: dt.date, purchases: list[Purchase]) -> list[InvoiceLine]:
    lines = []
    if (subscription := org.plan_subscription) is not None:
        lines.append(
            InvoiceLine(
                description=f"{subscription.plan.name} plan, {period:%B %Y}",
                amount_cents=subscription.monthly_fee_cents,
            )
        )
    lines.extend(
        InvoiceLine(
            description=f"{purchase.pack.name}: {purchase.credits:,} credits",
            amount_cents=purchase.price_cents,
            purchase=purchase,
        )
        for purchase in purchases
    )
    return lines
