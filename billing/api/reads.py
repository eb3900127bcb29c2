"""Reads for the job runner: balance, history, estimates, daily usage and prices."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.db import connection
from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router

from billing import forecasting
from billing.api.auth import READ, key_name, organization
from billing.api.schemas import (
    MAX_BIGINT,
    MAX_QUANTITY,
    NO_NUL,
    OPERATION,
    BalanceOut,
    Error,
    EstimateOut,
    ExpiringOut,
    ForecastOut,
    HistoryOut,
    PriceOut,
    PricingOut,
    UsageDayOut,
    UsageOut,
)
from billing.models import Organization
from ledger import postings
from ledger.models import DailyRollup, Entry, Job, Price
from ledger.periods import next_month_start

router = Router(tags=["credits"], auth=READ)

FAILURES: dict[int, type[Error]] = {401: Error, 403: Error, 422: Error, 429: Error}
RECENT_HISTORY = 20
# EntryOut's fields, and its job's: the columns visible_entries reads, in this order.
ENTRY_COLUMNS = ("id", "created_at", "operation", "amount", "balance_after")
JOB_COLUMNS = ("external_id", "name", "project", "user", "resource_class")


def visible_entries(
    org: Organization, since: dt.datetime, limit: int, offset: int = 0, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The account's entries inside the audit-trail window, newest (highest id) first, as
    EntryOut's fields. Ids grow in posting order under the account lock, so they order the
    ledger exactly. Hand-written because every balance and history read runs it: the ORM
    took longer to build this join and its instances than the rest of the read (on the API
    bench); the response is still validated against its schema."""
    q = connection.ops.quote_name
    columns = [f"e.{q(c)}" for c in ENTRY_COLUMNS] + [f"j.{q(c)}" for c in JOB_COLUMNS]
    sql = (
        f"SELECT {', '.join(columns)}"
        f" FROM {q(Entry._meta.db_table)} e LEFT JOIN {q(Job._meta.db_table)} j ON j.id = e.job_id"
        f" WHERE e.account_id = %s AND e.created_at >= %s"
    )
    params: list[Any] = [org.account_id, since]
    if before_id is not None:
        sql += " AND e.id < %s"
        params.append(before_id)
    sql += " ORDER BY e.id DESC LIMIT %s OFFSET %s"
    params += [limit, offset]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    split = len(ENTRY_COLUMNS)
    return [
        {
            **dict(zip(ENTRY_COLUMNS, row[:split], strict=True)),
            "job": None if row[split] is None else dict(zip(JOB_COLUMNS, row[split:], strict=True)),
        }
        for row in rows
    ]


@router.get("credits/balance", response={200: BalanceOut, **FAILURES})
def balance(request: HttpRequest) -> dict[str, Any]:
    """The balance, what is available and held, the allowance and the last 20 entries."""
    org = organization(request)
    account = org.account  # read with the key, in this request
    now = timezone.now()
    since = now - dt.timedelta(days=org.audit_window_days)
    subscription = org.plan_subscription
    credits = postings.credits_now(account, now)  # lots past their expiry no longer count
    return {
        "credits_remaining": credits.remaining,
        "credits_available": credits.available,
        "credits_held": credits.held,
        "credits_monthly_allowance": subscription.monthly_credits if subscription else None,
        "credits_reset_at": next_month_start(now, account.tzinfo),
        "unlimited": account.unlimited,
        "recent_history": visible_entries(org, since, RECENT_HISTORY),
    }


@router.get("credits/history", response={200: HistoryOut, **FAILURES})
def history(
    request: HttpRequest,
    limit: int = Query(50, ge=1, le=500),  # type: ignore[type-arg]
    offset: int = Query(0, ge=0, le=1_000_000),  # type: ignore[type-arg]
    before_id: int | None = Query(None, ge=1, le=MAX_BIGINT),  # type: ignore[type-arg]
) -> dict[str, Any]:
    """Ledger entries newest first, within the plan's audit-trail window. For a stable walk
    while entries arrive, pass each page's ``next_before_id`` as ``before_id``."""
    org = organization(request)
    days = org.audit_window_days
    since = timezone.now() - dt.timedelta(days=days)
    page = visible_entries(org, since, limit + 1, offset, before_id)
    has_more = len(page) > limit
    page = page[:limit]
    return {
        "entries": page,
        "limit": limit,
        "offset": offset,
        "before_id": before_id,
        "next_before_id": page[-1]["id"] if has_more else None,
        "has_more": has_more,
        "window_days": days,
        "window_start": since,
    }


@router.get("credits/estimate", response={200: EstimateOut, **FAILURES})
def estimate(
    request: HttpRequest,
    operation: str = Query(..., min_length=1, max_length=100, pattern=OPERATION),  # type: ignore[type-arg]
    quantity: int = Query(..., ge=1, le=MAX_QUANTITY),  # type: ignore[type-arg]
    project: str = Query("", max_length=200, pattern=NO_NUL),  # type: ignore[type-arg]
    user: str = Query("", max_length=200, pattern=NO_NUL),  # type: ignore[type-arg]
) -> EstimateOut:
    """What ``quantity`` of ``operation`` would cost, the lots it would draw on, and whether
    a hold for it would succeed now: for a job of ``project`` and ``user``, posted with
    this key, a budget may refuse it though the credits cover it. Posts nothing."""
    account = organization(request).account
    result = postings.estimate(
        account, operation, quantity, project=project, user=user, api_key=key_name(request)
    )
    return EstimateOut.model_validate(result, from_attributes=True)  # the same field names


@router.get("credits/forecast", response={200: ForecastOut, **FAILURES})
def credits_forecast(request: HttpRequest) -> ForecastOut:
    """When the credits run out at the last 14 days' pace, with a likely range, and what
    expires in the next 60 days and would go unused at that pace."""
    org = organization(request)
    result = forecasting.forecast(org, timezone.now())
    return ForecastOut(
        **{
            field.name: getattr(result, field.name)
            for field in dataclasses.fields(result)
            if field.name != "expiring"
        },
        expiring=[
            ExpiringOut(date=e.date, credits=e.credits, likely_unused=e.likely_unused)
            for e in result.expiring
        ],
        message=forecasting.sentence(result, org.account.unlimited),
    )


@router.get("usage", response={200: UsageOut, **FAILURES})
def usage(
    request: HttpRequest,
    days: int = Query(30, ge=1, le=366),  # type: ignore[type-arg]
) -> UsageOut:
    """One row per day of the last ``days`` (the organization's days), oldest first, no
    further back than the plan's audit-trail window; ``balance`` is the end-of-day balance,
    ``credits_used`` is debits less refunds plus expired credits and negative adjustments,
    so each row's ``balance`` is the previous row's plus ``top_ups`` less ``credits_used``."""
    org = organization(request)
    account = org.account
    today = account.local_date(timezone.now())
    start = today - dt.timedelta(days=min(days, org.audit_window_days) - 1)
    rollups = {r.date: r for r in DailyRollup.objects.filter(account=account, date__gte=start)}
    before = DailyRollup.objects.filter(account=account, date__lt=start).order_by("-date").first()
    carried = before.balance if before else 0
    rows = []
    for offset in range((today - start).days + 1):
        day = start + dt.timedelta(days=offset)
        rollup = rollups.get(day) or DailyRollup(date=day, balance=carried)
        carried = rollup.balance
        rows.append(
            UsageDayOut(
                date=day,
                top_ups=rollup.top_ups,
                credits_used=rollup.credits_used,
                debits=rollup.debits,
                refunds=rollup.refunds,
                expired=rollup.expired,
                adjustments=rollup.adjustments,
                balance=rollup.balance,
            )
        )
    return UsageOut(days=rows)


@router.get("pricing", response={200: PricingOut, **FAILURES})
def pricing(request: HttpRequest) -> PricingOut:
    """The price table: credits per unit of each operation."""
    return PricingOut(
        prices=[PriceOut.model_validate(price, from_attributes=True) for price in Price.objects.all()]
    )
