"""Billing test data: an issued invoice, a purchase awaiting its checkout."""

from __future__ import annotations

import datetime as dt

from billing.models import CreditPack, Invoice, InvoiceLine, Organization, Purchase, PurchaseStatus


def make_invoice(org: Organization, number: str = "INV-2025-10-0001", total: int = 7_900) -> Invoice:
    invoice = Invoice.objects.create(
        organization=org, period=dt.date(2025, 10, 1), number=number, total_cents=total, currency="USD"
    )
    InvoiceLine.objects.create(invoice=invoice, description="Standard plan, October 2025", amount_cents=4_900)
    InvoiceLine.objects.create(
        invoice=invoice, description="Professional pack (5,000 credits)", amount_cents=3_000
    )
    return invoice


def make_purchase(
    org: Organization,
    *,
    status: PurchaseStatus = PurchaseStatus.PENDING,
    session_id: str = "local_cs_0123456789abcdef01234567",
) -> Purchase:
    pack = CreditPack.objects.get(slug="standard")
    return Purchase.objects.create(
        organization=org,
        pack=pack,
        credits=pack.credits or 0,
        price_cents=pack.price_cents or 0,
        currency=pack.currency,
        provider="local",
        provider_session_id=session_id,
        status=status,
    )
