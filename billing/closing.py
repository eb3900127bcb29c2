"""Closing an organization's month: expire, freeze the statement, invoice, renew.

An organization's month closes inside ONE transaction that locks its account row first,
so a close killed half-way leaves nothing behind and two closes of the same month at once
make one statement (the second waits for the lock, then finds the statement and stops;
the database's one-statement-per-month constraint is the backstop). Months close in
order, so a close that missed some catches up oldest first.

The hourly close takes organizations in batches: one transaction locks a batch's accounts
(in id order) and closes all their months together, the statements and invoices in a
fixed number of queries for the batch. A batch commits or rolls back whole, so each
organization's close is still all or nothing; if a batch fails, each organization is
closed on its own so one broken ledger does not hold the others back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from billing.invoices import issue_invoices
from billing.models import Invoice, Organization
from ledger import postings
from ledger.models import Account, Entry, Lot, Statement
from ledger.periods import add_months, current_period, month_start
from ledger.statements import freeze_statements
from webhooks import events as webhook_events
from webhooks.models import EventType

logger = logging.getLogger(__name__)


class MonthNotEnded(Exception):
    """The month is not over yet in the organization's time zone."""


class CloseFailed(Exception):
    """Some organizations of a batch could not be closed; the others were."""


@dataclasses.dataclass(frozen=True)
class ClosedMonth:
    organization: str
    period: dt.date
    statement: Statement
    invoice: Invoice | None
    closed_now: bool  # False when an earlier close had already done it


def close_organization_month(
    org: Organization, period: dt.date, now: dt.datetime | None = None
) -> ClosedMonth:
    """Close the month starting ``period`` for ``org``; a closed month is left unchanged."""
    now = now or timezone.now()
    period = period.replace(day=1)
    if period >= current_period(now, org.tzinfo):
        raise MonthNotEnded(f"{period:%Y-%m} has not ended yet for {org.slug} ({org.account.time_zone}).")
    with transaction.atomic():
        _lock([org])
        (closed,) = _close_month([org], period, now)
    return closed


def close_organization(
    org: Organization, now: dt.datetime | None = None, *, through: dt.date | None = None
) -> list[ClosedMonth]:
    """Close every ended month ``org`` has not closed (up to ``through``), oldest first."""
    return close_organizations([org], now, through=through)


def close_organizations(
    orgs: Sequence[Organization], now: dt.datetime | None = None, *, through: dt.date | None = None
) -> list[ClosedMonth]:
    """Close every ended month each of ``orgs`` has not closed (up to ``through``), each
    organization's months oldest first, all in one transaction."""
    now = now or timezone.now()
    closed: list[ClosedMonth] = []
    with transaction.atomic():
        _lock(orgs)
        pending = _months_to_close(orgs, now)  # read under the lock: no close can race it
        by_period: dict[dt.date, list[Organization]] = defaultdict(list)
        for org in orgs:
            for period in pending[org.pk]:
                if through is None or period <= through:
                    by_period[period].append(org)
        for period in sorted(by_period):  # so each organization's months close oldest first
            closed.extend(_close_month(by_period[period], period, now))
    return closed


def close_batch(orgs: Sequence[Organization], now: dt.datetime | None = None) -> list[ClosedMonth]:
    """``close_organizations`` for a batch; if the batch fails, each organization is
    closed alone, and those that still fail are raised together as ``CloseFailed``."""
    try:
        return close_organizations(orgs, now)
    except Exception:
        if len(orgs) == 1:
            raise
        logger.warning("closing a batch of %d organizations failed; closing each alone", len(orgs))
    closed: list[ClosedMonth] = []
    failed: list[str] = []
    for org in orgs:
        try:
            closed.extend(close_organizations([org], now))
        except Exception:
            logger.exception("closing %s failed", org.slug)
            failed.append(org.slug)
    if failed:
        raise CloseFailed(f"Could not close {', '.join(failed)}; the other organizations closed.")
    return closed


def months_to_close(org: Organization, now: dt.datetime | None = None) -> list[dt.date]:
    """Every month that has ended for ``org`` and has no statement yet, oldest first."""
    return _months_to_close([org], now or timezone.now())[org.pk]


def _months_to_close(orgs: Sequence[Organization], now: dt.datetime) -> dict[int, list[dt.date]]:
    firsts = (
        Account.objects.filter(pk__in=[org.account_id for org in orgs])
        .annotate(
            last_period=Subquery(
                Statement.objects.filter(account=OuterRef("pk")).order_by("-period").values("period")[:1]
            ),
            first_day=Subquery(
                Entry.objects.filter(account=OuterRef("pk")).order_by("local_date").values("local_date")[:1]
            ),
        )
        .values_list("pk", "last_period", "first_day")
    )
    known = {pk: (last, first) for pk, last, first in firsts}
    pending = {}
    for org in orgs:
        tz = org.tzinfo
        last, first_day = known[org.account_id]
        if last is not None:
            start = add_months(last, 1)
        else:
            start = current_period(org.account.created_at, tz)
            if first_day is not None:
                start = min(start, first_day.replace(day=1))
        current = current_period(now, tz)
        months = []
        while start < current:
            months.append(start)
            start = add_months(start, 1)
        pending[org.pk] = months
    return pending


def organizations_due(now: dt.datetime | None = None) -> list[int]:
    """Organizations whose last local month has ended without a statement."""
    now = now or timezone.now()
    due: list[int] = []
    zones = Organization.objects.order_by().values_list("account__time_zone", flat=True).distinct()
    for zone in zones:
        tz = zoneinfo.ZoneInfo(zone)
        current = current_period(now, tz)
        due.extend(
            Organization.objects.filter(
                account__time_zone=zone, account__created_at__lt=month_start(current, tz)
            )
            .exclude(account__statements__period=add_months(current, -1))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return due


def _lock(orgs: Sequence[Organization]) -> None:
    """Lock the organizations' accounts in id order (so batches never deadlock) and give
    each organization its freshly read account."""
    accounts = (
        Account.objects.select_for_update().filter(pk__in=[org.account_id for org in orgs]).order_by("pk")
    )
    by_id = {account.pk: account for account in accounts}
    for org in orgs:
        org.account = by_id[org.account_id]


def _close_month(orgs: list[Organization], period: dt.date, now: dt.datetime) -> list[ClosedMonth]:
    """Close ``period`` for ``orgs``, whose accounts the caller has locked: expire the lots
    due, freeze the statements, issue the invoices, grant the next month's credits."""
    existing = {
        statement.account_id: statement
        for statement in Statement.objects.filter(account__in=[org.account_id for org in orgs], period=period)
    }
    closed = [
        ClosedMonth(org.slug, period, existing[org.account_id], None, closed_now=False)
        for org in orgs
        if org.account_id in existing
    ]
    orgs = [org for org in orgs if org.account_id not in existing]
    due = set(
        Lot.objects.filter(
            account__in=[org.account_id for org in orgs], live=True, expires_at__lte=now
        ).values_list("account_id", flat=True)
    )
    for org in orgs:
        if org.account_id in due:  # one query for the batch rather than a posting each
            postings.expire_lots(org.account, now)
    statements = freeze_statements([org.account for org in orgs], period)
    invoices = issue_invoices(orgs, period, now)
    for org in orgs:
        _renew(org, add_months(period, 1), now)
    closed.extend(
        ClosedMonth(org.slug, period, statement, invoice, closed_now=True)
        for org, statement, invoice in zip(orgs, statements, invoices, strict=True)
    )
    # In the close's own transaction: sent once it commits, never for a close rolled back.
    webhook_events.record_each(
        EventType.STATEMENT_CLOSED,
        [
            (org, _statement_data(statement, invoice))
            for org, statement, invoice in zip(orgs, statements, invoices, strict=True)
        ],
    )
    return closed


def _statement_data(statement: Statement, invoice: Invoice | None) -> dict[str, object]:
    """The ``statement.closed`` webhook's data."""
    return {
        "period": f"{statement.period:%Y-%m}",
        "brought_forward": statement.brought_forward,
        "top_ups": statement.top_ups,
        "credits_used": statement.credits_used,
        "closing_balance": statement.closing_balance,
        "parts": statement.parts(),
        "invoice": webhook_events.invoice_data(invoice) if invoice is not None else None,
    }


def _renew(org: Organization, period: dt.date, now: dt.datetime) -> None:
    """Grant the month's subscription credits, unless they would already have expired
    (a close that catches up on a missed month does not grant dead credits)."""
    subscription = org.plan_subscription
    if subscription is not None and subscription.renewal_expiry(period) > now:
        subscription.renew(period, now=now)
