"""The plan usage summary: how much of the plan an organization has used, as gauges for
the usage page (four rows) and the profile menu (credits, storage, deployments)."""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from django.contrib.humanize.templatetags.humanize import intcomma

from billing.models import Organization, Subscription

# A gauge turns to its warning colour when this share of the limit is used up.
WARNING_SHARE = 0.8


class GaugeKind(StrEnum):
    CREDITS = "credits"
    STORAGE = "storage"
    DEPLOYMENTS = "deployments"
    SEATS = "seats"


@dataclasses.dataclass(frozen=True)
class Gauge:
    kind: GaugeKind
    title: str
    label: str
    value: float
    limit: float | None
    # Credits count down (what remains); the others count up (what is used).
    remaining: bool = False
    # Credits beyond the limit (packs, promotions, rolled-over plan credits): the bar stops
    # at the limit and the label counts these apart.
    extra: int = 0

    @property
    def has_bar(self) -> bool:
        return self.limit is not None and self.limit > 0

    @property
    def bar_value(self) -> float:
        """The bar's position (``aria-valuenow``): within 0 and the limit, whatever the value."""
        return min(max(self.value, 0), self.limit or 0)

    @property
    def percent(self) -> int:
        if not self.limit:
            return 0
        return round(min(max(self.value / self.limit, 0), 1) * 100)

    @property
    def used_share(self) -> float:
        if not self.limit:
            return 0.0
        share = self.value / self.limit
        return 1 - share if self.remaining else share

    @property
    def warning(self) -> bool:
        return self.has_bar and self.used_share >= WARNING_SHARE

    @property
    def exhausted(self) -> bool:
        return self.has_bar and self.used_share >= 1


def gigabytes(value: float) -> str:
    """41.5, 50, 0.3: at most one decimal, none when whole."""
    text = f"{value:,.1f}"
    return text[:-2] if text.endswith(".0") else text


def credits_gauge(org: Organization, subscription: Subscription | None) -> Gauge:
    balance = org.account.balance
    if subscription is None or subscription.unlimited:
        return Gauge(
            GaugeKind.CREDITS,
            "Training credits",
            "Unlimited training credits remaining",
            balance,
            None,
            remaining=True,
        )
    limit = subscription.monthly_credits
    if not limit:
        return Gauge(
            GaugeKind.CREDITS,
            "Training credits",
            f"{intcomma(balance)} credits remaining",
            balance,
            None,
            remaining=True,
        )
    # The bar measures the monthly allowance: never past it (a screen reader must not hear
    # 10,171 of 10,000), nor below nothing.
    shown, extra = min(max(balance, 0), limit), max(balance - limit, 0)
    label = (
        f"{intcomma(limit)} of {intcomma(limit)} monthly credits + {intcomma(extra)} extra"
        if extra
        else f"{intcomma(balance)} of {intcomma(limit)} monthly credits remaining"
    )
    return Gauge(GaugeKind.CREDITS, "Training credits", label, shown, limit, remaining=True, extra=extra)


def storage_gauge(org: Organization, subscription: Subscription | None) -> Gauge:
    used = org.storage_gb
    limit = subscription.storage_limit_gb if subscription else None
    if subscription is None or subscription.unlimited or limit is None:
        # Enterprise storage is custom terms: the label carries no cap.
        return Gauge(GaugeKind.STORAGE, "Storage", f"{gigabytes(used)}GB storage used", used, None)
    return Gauge(
        GaugeKind.STORAGE, "Storage", f"{gigabytes(used)}GB of {gigabytes(limit)}GB storage used", used, limit
    )


def count_gauge(kind: GaugeKind, title: str, noun: str, used: int, limit: int | None) -> Gauge:
    label = (
        f"{intcomma(used)} of {intcomma(limit)} {noun} used"
        if limit is not None
        else (f"{intcomma(used)} {noun} used")
    )
    return Gauge(kind, title, label, used, limit)


def menu_gauges(org: Organization) -> list[Gauge]:
    """Credits, storage and deployments; no queries when the organization was loaded with
    its account and subscription (as ``get_membership`` does)."""
    subscription = org.plan_subscription
    return [
        credits_gauge(org, subscription),
        storage_gauge(org, subscription),
        count_gauge(
            GaugeKind.DEPLOYMENTS,
            "Deployments",
            "deployments",
            org.deployments,
            subscription.deployments_limit if subscription else None,
        ),
    ]


def plan_gauges(org: Organization, seats_used: int) -> list[Gauge]:
    """The usage page's four rows."""
    subscription = org.plan_subscription
    seats = count_gauge(
        GaugeKind.SEATS,
        "Member seats",
        "seats",
        seats_used,
        subscription.seats_limit if subscription else None,
    )
    return [*menu_gauges(org), seats]
