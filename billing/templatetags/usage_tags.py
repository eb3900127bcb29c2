"""Template helpers for the usage pages and the profile menu's gauges."""

from __future__ import annotations

from django import template
from django.utils import timezone

from billing import forecasting, gauges, review
from billing.models import Organization
from ledger import postings

register = template.Library()


@register.simple_tag
def menu_gauges(org: Organization) -> list[gauges.Gauge]:
    """``{% menu_gauges org as menu_gauges %}``: the profile menu's mini bars, on any page
    whose context has the organization."""
    return gauges.menu_gauges(org)


@register.simple_tag
def available_credits(org: Organization) -> str:
    """``{% available_credits org %}``: the top bar's figure, as the API's balance says it."""
    if org.account.unlimited:
        return "Unlimited credits"
    return f"{postings.credits_now(org.account).available:,} credits available"


@register.simple_tag
def review_count(org: Organization) -> int:
    """``{% review_count org as findings %}``: the menu's badge beside Review."""
    return review.badge_count(org)


@register.inclusion_tag("billing/forecast.html")
def run_out_forecast(org: Organization, compact: bool = False) -> dict[str, object]:
    """``{% run_out_forecast org %}``: when the credits run out at the recent pace, with its
    likely range, and what expires unused; the same figures as ``GET credits/forecast``."""
    result = forecasting.forecast(org, timezone.now())
    return {
        "org": org,
        "forecast": result,
        "sentence": forecasting.sentence(result, org.account.unlimited),
        "compact": compact,
    }
