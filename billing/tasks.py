"""Celery tasks. Each calls one rule; none re-implements one.

The scheduler fires ``close_due_months`` hourly; it fans out the organizations whose local
month has ended without a statement, ``CLOSE_BATCH`` to a ``close_organizations_months``
task. That task is idempotent (one transaction, one statement per account and month), so
it is acknowledged late and re-queued if its worker dies: a rerun finishes what a killed
run rolled back.
"""

from __future__ import annotations

import datetime as dt
import itertools

from celery import shared_task
from django.utils import timezone

from billing import alerts, auto_top_up, closing, invoices, notices
from billing.models import Organization
from ledger import postings


def _moment(now: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat(now) if now else timezone.now()


# Organizations closed per task: enough that a task's fixed costs (the broker, the
# batch's queries) are shared out, few enough that a batch holds its accounts' locks
# for well under a second and the work spreads over every worker.
CLOSE_BATCH = 50


@shared_task(name="billing.close_due_months")
def close_due_months(now: str | None = None) -> int:
    """Enqueue the close of every organization whose local month ended and is not closed,
    in batches; returns how many organizations were enqueued."""
    due = closing.organizations_due(_moment(now))
    for batch in itertools.batched(due, CLOSE_BATCH, strict=False):
        close_organizations_months.delay(list(batch), now)
    return len(due)


@shared_task(name="billing.close_organizations_months", acks_late=True, reject_on_worker_lost=True)
def close_organizations_months(organization_ids: list[int], now: str | None = None) -> list[str]:
    """Close every ended month the organizations have not closed, each oldest first."""
    orgs = list(
        Organization.objects.select_related("account", "subscription__plan")
        .filter(pk__in=organization_ids)
        .order_by("pk")  # some may be deleted since the fan-out
    )
    closed = closing.close_batch(orgs, _moment(now))
    return [f"{month.organization} {month.period:%Y-%m}" for month in closed if month.closed_now]


@shared_task(name="billing.close_organization_months", acks_late=True, reject_on_worker_lost=True)
def close_organization_months(organization_id: int, now: str | None = None) -> list[str]:
    """Close every ended month one organization has not closed, oldest first."""
    org = (
        Organization.objects.select_related("account", "subscription__plan")
        .filter(pk=organization_id)
        .first()
    )
    if org is None:  # deleted since it was enqueued
        return []
    closed = closing.close_organization(org, _moment(now))
    return [f"{month.period:%Y-%m}" for month in closed if month.closed_now]


@shared_task(name="billing.release_stale_holds", acks_late=True)
def release_stale_holds() -> int:
    """Release every pending hold past its expiry; each is released exactly once. Their
    notices (hold.expired webhooks) are acted on at once, not at the next sweep."""
    released = postings.release_expired_holds()
    if released:
        for account_id in notices.accounts_waiting(dt.timedelta(0)):
            process_notices.delay(account_id)
    return released


@shared_task(name="billing.expire_due_lots", acks_late=True)
def expire_due_lots() -> int:
    """Lots that expire mid-month (promotions) stop counting without waiting for a posting."""
    return postings.expire_due_lots()


@shared_task(name="billing.send_credit_alerts")
def send_credit_alerts(account_id: int) -> list[str]:
    """Update the account's thresholds and email the managers about each crossing."""
    sent = []
    for alert in alerts.evaluate(account_id):
        if alerts.send_alert(alert):
            sent.append(f"{alert.notice}:{alert.level}")
    return sent


@shared_task(name="billing.process_notices", acks_late=True)
def process_notices(account_id: int) -> int:
    """Act on what the ledger noticed on the account (budget alerts, webhooks)."""
    return notices.process(account_id)


@shared_task(name="billing.sweep_notices")
def sweep_notices() -> int:
    """Notices whose task was lost (or failed) get another one."""
    waiting = notices.accounts_waiting(dt.timedelta(minutes=1))
    for account_id in waiting:
        process_notices.delay(account_id)
    return len(waiting)


@shared_task(name="billing.collect_invoice", acks_late=True)
def collect_invoice(invoice_id: int, now: str | None = None) -> str:
    """Charge an invoice's amount due if a charge is due (a duplicate task charges nothing)."""
    return invoices.collect(invoice_id, _moment(now)).status


@shared_task(name="billing.collect_due_invoices")
def collect_due_invoices(now: str | None = None) -> int:
    """Enqueue the charge of every invoice whose next attempt is due: the retries, 1, 3 and
    7 days after a failed first attempt, and any charge whose task was lost."""
    due = invoices.due(_moment(now))
    for invoice_id in due:
        collect_invoice.delay(invoice_id, now)
    return len(due)


@shared_task(name="billing.auto_top_up", acks_late=True)
def auto_top_up_task(organization_id: int) -> str:
    """Buy the organization's auto top-up pack if its credits call for it now."""
    return str(auto_top_up.run(organization_id))
