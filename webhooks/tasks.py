"""Celery tasks of outgoing webhooks. Each calls one rule in ``webhooks.delivery``."""

from __future__ import annotations

import datetime as dt

from celery import shared_task

from webhooks import delivery


@shared_task(name="webhooks.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: int) -> str:
    """Send one delivery if it is pending and due; a duplicate of this task does nothing."""
    return delivery.attempt(delivery_id)


@shared_task(name="webhooks.retry_deliveries")
def retry_deliveries(older_than_seconds: float = 60) -> int:
    """Deliveries due for over a minute whose task was lost get another one."""
    due = delivery.due_for_retry(dt.timedelta(seconds=older_than_seconds))
    for delivery_id in due:
        deliver.delay(delivery_id)
    return len(due)
