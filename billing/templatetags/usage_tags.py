"""Template helpers for the usage pages and the profile menu's gauges."""

from __future__ import annotations

from django import template

from billing import gauges
from billing.models import Organization

register = template.Library()


@register.simple_tag
def menu_gauges(org: Organization) -> list[gauges.Gauge]:
    """``{% menu_gauges org as menu_gauges %}``: the profile menu's mini bars, on any page
    whose context has the organization."""
    return gauges.menu_gauges(org)
