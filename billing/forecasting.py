"""An organization's run-out forecast: the ledger's walk (``ledger.forecast``) with the
renewals its plan will grant, and the words pages show it in."""

from __future__ import annotations

import datetime as dt

from django.utils import dateformat

from billing import formats
from billing.models import Organization
from ledger import forecast as ledger_forecast
from ledger.periods import add_months, current_period

RENEWALS_AHEAD = 13  # months of renewals the walk knows of


def forecast(org: Organization, now: dt.datetime) -> ledger_forecast.Forecast:
    return ledger_forecast.forecast(org.account, now, renewals(org, now))


def renewals(org: Organization, now: dt.datetime) -> list[ledger_forecast.Renewal]:
    """The plan's credits to come on the 1st of each coming month, as the close grants them."""
    subscription = org.plan_subscription
    if subscription is None or not subscription.monthly_credits:
        return []
    tz = org.tzinfo
    period = current_period(now, tz)
    coming = []
    for n in range(1, RENEWALS_AHEAD + 1):
        month = add_months(period, n)
        expires = subscription.renewal_expiry(month).astimezone(tz)
        coming.append(
            ledger_forecast.Renewal(
                month, subscription.monthly_credits, ledger_forecast.expires_on_day(expires)
            )
        )
    return coming


def sentence(result: ledger_forecast.Forecast, unlimited: bool) -> str:
    """The forecast in one sentence, as the home, Usage and Billing pages say it."""
    if not result.enough_history:
        return "Not enough history yet for a forecast: it needs a week of usage."
    pace = f"At the last {result.history_days} days' pace ({result.daily_burn:,} credits a day)"
    if unlimited:
        return f"{pace}; an unlimited plan does not run out."
    if result.run_out_at is None:
        if not result.daily_burn:
            return "No credits used lately: no run-out in sight."
        return f"{pace}, credits last beyond a year, with the plan's renewals."
    likely = ""
    if result.run_out_low and result.run_out_high is None:
        likely = f" (likely {_day(result.run_out_low)} or later)"
    elif result.run_out_low and result.run_out_high and result.run_out_low != result.run_out_high:
        likely = f" (likely {_day(result.run_out_low)}–{_day(result.run_out_high)})"
    return f"{pace}, credits last until about {_day(result.run_out_at)}{likely}."


def _day(value: dt.date) -> str:
    return dateformat.format(value, formats.DAY_IN_MONTH)
