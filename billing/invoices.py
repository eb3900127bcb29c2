"""The month's invoice: the plan fee and the credit packs paid for that month, and its
collection.

An invoice is issued at the month close with the packs as lines already paid (they were
paid at checkout); what is left, the amount due, is charged off-session to the stored
payment method once the close commits. A declined charge leaves it ``payment_failed`` and
is tried again 1, 3 and 7 days after the first attempt; after the last it is
``uncollectible``. Each attempt is one transaction under the invoice's row lock, keyed by
the invoice and the attempt's number (the provider's idempotency key), so a task run
twice, or re-run after a crash, charges once. Nothing here touches a credit: a failed
payment never takes back what was granted.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from billing import payment_emails
from billing.models import (
    BillingProfile,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Organization,
    PaymentAttempt,
    PaymentAttemptOutcome,
    PaymentMethod,
    Purchase,
    PurchaseStatus,
)
from billing.payments import ChargeDeclined, PaymentError, get_provider
from ledger.periods import month_bounds
from webhooks import events as webhook_events
from webhooks.models import EventType

log = logging.getLogger(__name__)

# After the first attempt fails, the charge is tried again this long after it.
RETRY_AFTER = (dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(days=7))


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
    profiles = {
        profile.organization_id: profile for profile in BillingProfile.objects.filter(organization__in=fresh)
    }
    with_card = set(
        PaymentMethod.objects.filter(organization__in=fresh).values_list("organization_id", flat=True)
    )
    invoices, lines = [], []
    for org in fresh:
        org_lines = _lines(org, period, paid[org.pk])
        total = sum(line.amount_cents for line in org_lines)
        already_paid = sum(line.amount_cents for line in org_lines if line.purchase is not None)
        profile = profiles.get(org.pk) or BillingProfile(organization=org)
        invoice = Invoice(
            organization=org,
            period=period,
            number=invoice_number(org, period),
            currency=org.plan_subscription.plan.currency if org.plan_subscription else "USD",
            total_cents=total,
            amount_paid_cents=already_paid,
            issued_at=issued_at,
            bill_to=profile.bill_to,
        )
        if total == already_paid:  # nothing left to pay
            invoice.status, invoice.paid_at = InvoiceStatus.PAID, issued_at
        elif org.pk in with_card:  # charged once the close commits (without a card, once one is stored)
            invoice.next_attempt_at = issued_at
        for line in org_lines:
            line.invoice = invoice
        invoices.append(invoice)
        lines.extend(org_lines)
    # Inside the month close's transaction this adds no savepoint; alone, it is one.
    with transaction.atomic(savepoint=False):
        Invoice.objects.bulk_create(invoices)
        InvoiceLine.objects.bulk_create(lines)  # each takes its invoice's new id
    collect_on_commit([invoice.pk for invoice in invoices if invoice.next_attempt_at is not None])
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


# --- Collection --------------------------------------------------------------------------


def collect_on_commit(invoice_ids: list[int]) -> None:
    """Charge these invoices in the background once the caller's transaction commits (the
    hourly ``collect_due_invoices`` catches any whose task is lost)."""
    if invoice_ids:
        transaction.on_commit(functools.partial(_enqueue, invoice_ids))


def _enqueue(invoice_ids: list[int]) -> None:
    from billing.tasks import collect_invoice

    for invoice_id in invoice_ids:
        collect_invoice.delay(invoice_id)


def due(now: dt.datetime | None = None) -> list[int]:
    """Invoices whose next charge is due."""
    return list(
        Invoice.objects.filter(next_attempt_at__lte=now or timezone.now())
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def charge_when_card_stored(org: Organization) -> None:
    """A card was stored: the invoices issued while there was none are charged to it now
    (those already failing keep their schedule, and are tried with the new card)."""
    # An open invoice has never been tried (the first attempt leaves it paid or failed).
    waiting = Invoice.objects.filter(
        organization=org, status=InvoiceStatus.OPEN, next_attempt_at__isnull=True
    )
    ids = list(waiting.values_list("pk", flat=True))
    Invoice.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())
    collect_on_commit(ids)


def collect(invoice_id: int, now: dt.datetime | None = None) -> Invoice:
    """Charge the invoice's amount due to the stored card if a charge is due; the invoice
    as it is afterwards. Managers are emailed each attempt's outcome."""
    now = now or timezone.now()
    with transaction.atomic():
        invoice = (
            Invoice.objects.select_for_update(of=("self",)).select_related("organization").get(pk=invoice_id)
        )
        if invoice.next_attempt_at is None or invoice.next_attempt_at > now:
            return invoice  # paid, given up, waiting for a card, or not due yet: a duplicate task
        org = invoice.organization
        attempts = list(invoice.attempts.all())
        number = len(attempts) + 1
        attempt = PaymentAttempt(
            invoice=invoice,
            number=number,
            key=f"tally-invoice-{invoice.number}-attempt-{number}",
            amount_cents=invoice.amount_due_cents,
            attempted_at=now,
        )
        _charge(attempt, PaymentMethod.objects.filter(organization=org).first(), invoice)
        attempt.save()
        if attempt.outcome == PaymentAttemptOutcome.PAID:
            invoice.status, invoice.paid_at, invoice.next_attempt_at = InvoiceStatus.PAID, now, None
            invoice.amount_paid_cents = invoice.total_cents
            event = EventType.INVOICE_PAID
        else:
            first = attempts[0].attempted_at if attempts else now
            if number <= len(RETRY_AFTER):
                invoice.status, invoice.next_attempt_at = (
                    InvoiceStatus.PAYMENT_FAILED,
                    first + RETRY_AFTER[number - 1],
                )
            else:
                invoice.status, invoice.next_attempt_at = InvoiceStatus.UNCOLLECTIBLE, None
            event = EventType.INVOICE_PAYMENT_FAILED
        invoice.save(update_fields=["status", "paid_at", "next_attempt_at", "amount_paid_cents"])
        webhook_events.record(org, event, webhook_events.invoice_data(invoice))
    log.info("invoice %s attempt %s: %s", invoice.number, number, attempt.outcome)
    payment_emails.send(
        org,
        "invoice_paid" if attempt.outcome == PaymentAttemptOutcome.PAID else "invoice_payment_failed",
        invoice=invoice,
        attempt=attempt,
    )
    return invoice


def _charge(attempt: PaymentAttempt, method: PaymentMethod | None, invoice: Invoice) -> None:
    """Charge ``attempt``'s amount to ``method`` and record the outcome on the attempt."""
    if method is None:
        attempt.outcome, attempt.message = PaymentAttemptOutcome.FAILED, "No payment method is stored."
        return
    try:
        charge = get_provider(method.provider).charge(
            method,
            amount_cents=attempt.amount_cents,
            currency=invoice.currency,
            key=attempt.key,
            description=f"Tally invoice {invoice.number}",
        )
    except ChargeDeclined as exc:
        attempt.outcome, attempt.message = PaymentAttemptOutcome.DECLINED, str(exc)[:300]
    except PaymentError as exc:
        attempt.outcome, attempt.message = PaymentAttemptOutcome.FAILED, str(exc)[:300]
    else:
        attempt.outcome, attempt.provider_payment_id = PaymentAttemptOutcome.PAID, charge.payment_id


# --- The PDF -------------------------------------------------------------------------------


def render_pdf(invoice: Invoice) -> bytes:
    """The invoice as a printable PDF (WeasyPrint, from ``billing/invoice_pdf.html``)."""
    from weasyprint import HTML  # a heavy import, needed by this view only

    html = render_to_string(
        "billing/invoice_pdf.html",
        {"invoice": invoice, "org": invoice.organization, "lines": list(invoice.lines.all())},
    )
    pdf: bytes = HTML(string=html).write_pdf()
    return pdf
