"""Webhook events from the ledger's notices (``billing.notices``), and what keeps those
notices coming.

The ledger writes a notice in the posting's own transaction (an outbox), and
``billing.notices.process`` hands it to these handlers and deletes it in one transaction;
the events and deliveries recorded here are stored in that transaction too. So an event
is stored exactly once for each committed posting, and none for a rolled-back one.

``credits.low``, ``credits.exhausted`` and ``credits.restored`` follow the credits
available after each posting across the organization's low level and zero: each event
names the state the credits entered, once per crossing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from billing import notices, watch
from billing.alerts import threshold_level
from billing.models import Organization
from ledger import budgets, postings
from ledger.models import Budget, Notice
from webhooks.events import record
from webhooks.models import CreditsLevel, CreditsState, Endpoint, Event, EventType


@watch.needs_postings
def _has_enabled_endpoint(organization_id: int) -> bool:
    return Endpoint.objects.filter(organization_id=organization_id, enabled=True).exists()


def low_level(org: Organization) -> int | None:
    """The credits below which available credits are low: the lowest of the organization's
    low-credit alert thresholds, or else a tenth of the plan's monthly allowance; None
    for an organization with neither (it hears of zero only)."""
    subscription = org.plan_subscription
    monthly = subscription.monthly_credits if subscription is not None else None
    levels = [threshold_level(threshold, monthly) for threshold in org.alert_thresholds.all()]
    known = [level for level in levels if level]
    if known:
        return min(known)
    return monthly // 10 if monthly else None


def credits_level(available: int, low: int | None) -> CreditsLevel:
    if available <= 0:
        return CreditsLevel.EXHAUSTED
    if low is not None and available < low:
        return CreditsLevel.LOW
    return CreditsLevel.ENOUGH


def crossings(before: CreditsLevel, after: CreditsLevel, low: int | None) -> list[EventType]:
    """The events a move from ``before`` to ``after`` sends: the state entered, and
    credits.low on the way down to zero from enough (when there is a low level)."""
    if before == after:
        return []
    if after == CreditsLevel.EXHAUSTED:
        passed_low = before == CreditsLevel.ENOUGH and low is not None
        return (
            [EventType.CREDITS_LOW, EventType.CREDITS_EXHAUSTED]
            if passed_low
            else [EventType.CREDITS_EXHAUSTED]
        )
    if after == CreditsLevel.LOW:
        return [EventType.CREDITS_LOW]
    return [EventType.CREDITS_RESTORED]


def endpoint_changed(endpoint: Endpoint, *, was_enabled: bool) -> None:
    """After an endpoint is saved: the ledger's notices stay on while one is enabled, and
    the first one enabled takes the credits as they are now as the state crossings start
    from (what happened before is not news)."""
    org = endpoint.organization
    others = org.webhook_endpoints.filter(enabled=True).exclude(pk=endpoint.pk)
    if endpoint.enabled and not was_enabled and not others.exists():
        level = credits_level(postings.credits_now(org.account).available, low_level(org))
        CreditsState.objects.update_or_create(organization=org, defaults={"level": level})
    watch.update_notify(org.pk)


@notices.handles("posting")
def credits_crossings(org: Organization, notice: Notice) -> None:
    if org.account.unlimited:
        return
    if Notice.objects.filter(
        account_id=notice.account_id, kind="posting", created_at=notice.created_at, pk__gt=notice.pk
    ).exists():
        # Postings of one transaction at one moment (the month close expires credits and
        # renews them) are one change: the last one's figures say where it ended.
        return
    state = CreditsState.objects.select_for_update().filter(organization=org).first()
    if state is None:
        return  # no endpoint has listened yet (endpoint_changed makes the state)
    receipt: dict[str, Any] = notice.detail
    low = low_level(org)
    level = credits_level(receipt["available"], low)
    data = {
        "available": receipt["available"],
        "balance": receipt["balance"],
        "held": receipt["held"],
        "low_level": low,
        "posting": {
            "action": receipt["action"],
            "amount": receipt["amount"],
            "entry_id": receipt["entry_id"],
            "hold_id": receipt["hold_id"],
            "created_at": receipt["created_at"],
        },
    }
    for event_type in crossings(CreditsLevel(state.level), level, low):
        record(org, event_type, data)
    if state.level != level:
        state.level = level
        state.save(update_fields=["level", "updated_at"])


@notices.handles("hold.expired")
def hold_expired(org: Organization, notice: Notice) -> None:
    record(org, EventType.HOLD_EXPIRED, {**notice.detail, "expired_at": notice.created_at.isoformat()})


@notices.handles("budget")
def budget_exceeded(org: Organization, notice: Notice) -> None:
    """A budget at 100% of its limit: budget.exceeded, once per budget and month."""
    budget = Budget.objects.filter(pk=notice.detail["budget"], account_id=org.account_id).first()
    if budget is None:  # removed since
        return
    figures = budgets.find(org.account, budget.scope, budget.name)
    month = dt.date.fromisoformat(notice.detail["month"])
    if figures is None or figures.month != month or figures.level < 100:
        return
    sent = Event.objects.filter(
        organization=org,
        type=EventType.BUDGET_EXCEEDED,
        data__budget__id=budget.pk,
        data__month=f"{month:%Y-%m}",
    )
    if not sent.exists():
        record(
            org,
            EventType.BUDGET_EXCEEDED,
            {"month": f"{month:%Y-%m}", "budget": {"id": budget.pk, **figures.as_dict()}},
        )
