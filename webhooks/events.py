"""Recording events for an organization's endpoints.

``record`` is what every source of events calls, inside the transaction that made the
event happen (a posting's notices, the month close, a purchase): it stores the event and
one delivery per enabled endpoint that chose its type, and the deliveries are sent once
that transaction commits. So an event is never lost once its cause committed, and never
sent for a cause that rolled back. With no endpoint wanting it, it stores nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import Invoice, Organization, Purchase
from webhooks.delivery import enqueue_on_commit
from webhooks.models import Delivery, Endpoint, Event, EventType

Data = dict[str, Any]


def record(
    org: Organization, type: EventType, data: Data, *, endpoints: Iterable[Endpoint] | None = None
) -> Event | None:
    """Store an event of ``type`` for the organization (``data`` gains its slug) with a
    delivery to each of ``endpoints`` (by default its enabled endpoints that chose the
    type), sent once the caller's transaction commits. None when no endpoint wants it."""
    (event,) = record_each(type, [(org, data)], endpoints=endpoints)
    return event


def record_each(
    type: EventType,
    items: Sequence[tuple[Organization, Data]],
    *,
    endpoints: Iterable[Endpoint] | None = None,
) -> list[Event | None]:
    """``record`` for many organizations at once, with one query for their endpoints
    (the month close records a statement.closed for each of a batch)."""
    by_org: dict[int, list[Endpoint]] = defaultdict(list)
    if endpoints is None:
        endpoints = Endpoint.objects.filter(
            organization__in=[org.pk for org, _ in items], enabled=True, events__contains=[type]
        )
    for endpoint in endpoints:
        by_org[endpoint.organization_id].append(endpoint)
    wanted = [(org, data) for org, data in items if by_org[org.pk]]
    if not wanted:
        return [None] * len(items)
    with transaction.atomic():
        events = Event.objects.bulk_create(
            [
                Event(organization=org, type=type, data={"organization": org.slug, **data})
                for org, data in wanted
            ]
        )
        deliveries = Delivery.objects.bulk_create(
            [
                Delivery(event=event, endpoint=endpoint, next_attempt_at=event.created_at)
                for event, (org, _) in zip(events, wanted, strict=True)
                for endpoint in by_org[org.pk]
            ]
        )
    enqueue_on_commit([delivery.pk for delivery in deliveries])
    recorded = {event.organization_id: event for event in events}
    return [recorded.get(org.pk) for org, _ in items]


def send_test(endpoint: Endpoint) -> Event:
    """A ``webhook.test`` event, to this endpoint only (enabled or not)."""
    org = endpoint.organization
    data = {"message": f"A test event from Tally for {org.name}.", "endpoint": endpoint.url}
    event = record(org, EventType.TEST, data, endpoints=[endpoint])
    assert event is not None
    return event


def resend(delivery: Delivery) -> Delivery:
    """Send a delivery's event to its endpoint again, as a new delivery (the same
    ``webhook-id``: a receiver that took the first one drops it)."""
    again = Delivery.objects.create(
        event=delivery.event, endpoint=delivery.endpoint, next_attempt_at=timezone.now()
    )
    enqueue_on_commit([again.pk])
    return again


# --- Payloads of the events other modules record ------------------------------------------


def top_up_data(purchase: Purchase, **extra: Any) -> Data:
    """``top_up.succeeded`` and ``top_up.failed``: a credit pack purchase."""
    return {
        "purchase_id": purchase.pk,
        "pack": purchase.pack.name,
        "credits": purchase.credits,
        "amount_cents": purchase.price_cents,
        "currency": purchase.currency,
        **extra,
    }


def invoice_data(invoice: Invoice, **extra: Any) -> Data:
    """``invoice.paid`` and ``invoice.payment_failed``, and the invoice in ``statement.closed``."""
    return {
        "number": invoice.number,
        "period": f"{invoice.period:%Y-%m}",
        "total_cents": invoice.total_cents,
        "currency": invoice.currency,
        "status": invoice.status,
        **extra,
    }
