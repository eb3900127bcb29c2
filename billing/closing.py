"""Closing an organization's month: expire, freeze the statement, invoice, renew.

Each organization's month closes in ONE transaction that locks its account row first, so
a close killed half-way leaves nothing behind and two closes of the same month at once
make one statement (the second waits for the lock, then finds the statement and stops;
the database's one-statement-per-month constraint is the backstop). Months close in
order, so a close that missed some catches up oldest first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

from django.db import transaction
from django.utils import timezone

from billing.invoices import issue_invoice
from billing.models import Invoice, Organization, Subscription
from ledger import postings
from ledger.models import Account, Entry, Statement
from ledger.periods import add_months, current_period, month_start
from ledger.statements import freeze_statement


class MonthNotEnded(Exception):
    """The month is not over yet in the organization's time zone."""


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
        raise MonthNotEnded(f"{period:%Y-%m} has not ended yet for {org.slug} ({org.time_zone}).")
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=org.account_id)
        existing = Statement.objects.filter(account=account, period=period).first()
        if existing is not None:
            return ClosedMonth(org.slug, period, existing, None, closed_now=False)
        postings.expire_lots(account, now)
        statement = freeze_statement(account, period)
        invoice = issue_invoice(org, period, now)
        _renew(org, add_months(period, 1), now)
    return ClosedMonth(org.slug, period, statement, invoice, closed_now=True)


def months_to_close(org: Organization, now: dt.datetime | None = None) -> list[dt.date]:
    """Every month that has ended for ``org`` and has no statement yet, oldest first."""
    now = now or timezone.now()
    tz = org.tzinfo
    current = current_period(now, tz)
    last = (
        Statement.objects.filter(account_id=org.account_id)
        .order_by("-period")
        .values_list("period", flat=True)
        .first()
    )
    if last is not None:
        start = add_months(last, 1)
    else:
        start = current_period(org.account.created_at, tz)
        first_day = (
            Entry.objects.filter(account_id=org.account_id)
            .order_by("local_date")
            .values_list("local_date", flat=True)
            .first()
        )
        if first_day is not None:
            start = min(start, first_day.replace(day=1))
    months = []
    while start < current:
        months.append(start)
        start = add_months(start, 1)
    return months


def close_organization(
    org: Organization, now: dt.datetime | None = None, *, through: dt.date | None = None
) -> list[ClosedMonth]:
    """Close every ended month ``org`` has not closed (up to ``through``), oldest first."""
    now = now or timezone.now()
    months = [m for m in months_to_close(org, now) if through is None or m <= through]
    return [close_organization_month(org, month, now) for month in months]


def organizations_due(now: dt.datetime | None = None) -> list[int]:
    """Organizations whose last local month has ended without a statement."""
    now = now or timezone.now()
    due: list[int] = []
    zones = Organization.objects.order_by().values_list("time_zone", flat=True).distinct()
    for zone in zones:
        tz = zoneinfo.ZoneInfo(zone)
        current = current_period(now, tz)
        due.extend(
            Organization.objects.filter(time_zone=zone, account__created_at__lt=month_start(current, tz))
            .exclude(account__statements__period=add_months(current, -1))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return due


def _renew(org: Organization, period: dt.date, now: dt.datetime) -> None:
    """Grant the month's subscription credits, unless they would already have expired
    (a close that catches up on a missed month does not grant dead credits)."""
    try:
        subscription = org.subscription
    except Subscription.DoesNotExist:
        return
    if subscription.renewal_expiry(period) > now:
        subscription.renew(period, now=now)
