"""The run-out forecast on constructed histories with known answers: flat, bursty,
growing, refunded, with renewals and expiring lots, and not enough history."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from billing.models import ApiKey, Scope
from ledger import postings
from ledger.forecast import Expiring, Renewal, forecast
from ledger.models import Account, LotSource
from tests.factories import make_org
from tests.ledger_helpers import key, new_account, top_up

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
TODAY = NOW.date()


def days_ago(n: int, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(TODAY - dt.timedelta(days=n), dt.time(hour), dt.UTC)


def history(daily: list[int], left: int, refunds: list[int] | None = None) -> Account:
    """An account that used ``daily[i]`` credits on each of the last len(daily) days (the
    last item yesterday), got ``refunds[i]`` back the same day, and has ``left`` now."""
    account = new_account()
    given_back = sum(refunds or [])
    postings.post_top_up(
        account,
        sum(daily) - given_back + left,
        key=key(),
        source=LotSource.PURCHASE,
        operation="pack",
        now=days_ago(len(daily) + 1),
    )
    for n, used in enumerate(daily):
        when = days_ago(len(daily) - n)
        job = postings.JobInfo(key())
        if used:
            postings.debit(account, used, key=key(), operation="op", job=job, now=when)
        if refunds and refunds[n]:
            postings.refund(
                account,
                job.external_id,
                refunds[n],
                key=key(),
                operation="refund",
                now=when + dt.timedelta(minutes=5),
            )
    return account


def test_a_flat_history_runs_out_on_a_known_day_with_no_range() -> None:
    account = history([100] * 14, left=2_000)
    result = forecast(account, NOW)
    assert result.daily_burn == 100
    # 2,000 credits at 100 a day: today and the 19 days after, then short on the 20th.
    assert result.run_out_at == result.run_out_low == result.run_out_high == TODAY + dt.timedelta(days=20)


def test_a_bursty_history_has_the_same_pace_and_a_wide_range() -> None:
    account = history([0, 200] * 7, left=2_000)
    result = forecast(account, NOW)
    assert result.daily_burn == 100 and result.run_out_at == TODAY + dt.timedelta(days=20)
    assert result.run_out_low is not None and result.run_out_high is not None
    # mean 100, standard deviation 103.8: 100 +- 55.5 a day, so 2,000 credits last 12 to 44 days.
    assert result.run_out_low == TODAY + dt.timedelta(days=12)
    assert result.run_out_high == TODAY + dt.timedelta(days=44)


def test_a_growing_history_takes_its_mean_pace() -> None:
    account = history(list(range(10, 150, 10)), left=1_500)  # 10, 20, ... 140: mean 75
    result = forecast(account, NOW)
    assert result.daily_burn == 75
    assert result.run_out_at == TODAY + dt.timedelta(days=20)  # 1,500 / 75


def test_refunds_lower_the_burn_and_expiries_are_not_burn() -> None:
    account = history([100] * 14, left=2_000, refunds=[50] * 14)
    postings.post_top_up(
        account,
        500,
        key=key(),
        source=LotSource.PROMOTIONAL,
        operation="promo",
        expires_at=days_ago(2, 0),
        now=days_ago(3),
    )
    postings.expire_lots(account, now=days_ago(2, 1))
    result = forecast(account, NOW)
    assert result.daily_burn == 50
    assert result.run_out_at == TODAY + dt.timedelta(days=40)


def test_renewals_push_the_run_out_back() -> None:
    account = history([100] * 14, left=500)
    assert forecast(account, NOW).run_out_at == TODAY + dt.timedelta(days=5)
    renewal = Renewal(TODAY + dt.timedelta(days=3), 1_000, TODAY + dt.timedelta(days=40))
    assert forecast(account, NOW, [renewal]).run_out_at == TODAY + dt.timedelta(days=15)
    # A renewal expiring before it is used up (drawn first, 500 of it used by day 8) wastes
    # the rest: the 200 left of the first lot last two more days.
    short = Renewal(TODAY + dt.timedelta(days=3), 1_000, TODAY + dt.timedelta(days=8))
    assert forecast(account, NOW, [short]).run_out_at == TODAY + dt.timedelta(days=10)


def test_lots_expiring_soon_are_listed_with_what_would_go_unused() -> None:
    account = history([100] * 14, left=1_000)
    expiry = dt.datetime.combine(TODAY + dt.timedelta(days=5), dt.time(0), dt.UTC)
    top_up(account, 1_000, source=LotSource.PROMOTIONAL, expires_at=expiry)
    result = forecast(account, NOW)
    # The promotion is drawn first: 5 days take 500 of it and 500 expire unused; the
    # other 1,000 last 10 more days.
    assert result.expiring == [Expiring(TODAY + dt.timedelta(days=5), 1_000, 500)]
    assert result.run_out_at == TODAY + dt.timedelta(days=15)


def test_held_credits_are_not_there_to_burn() -> None:
    account = history([100] * 14, left=2_000)
    postings.reserve(account, 1_000, key=key(), operation="op", now=NOW)
    assert forecast(account, NOW).run_out_at == TODAY + dt.timedelta(days=10)


def test_not_enough_history_says_so() -> None:
    account = history([100] * 5, left=2_000)
    result = forecast(account, NOW)
    assert not result.enough_history
    assert (result.daily_burn, result.run_out_at) == (None, None)
    assert forecast(new_account(), NOW).daily_burn is None


def test_no_burn_means_no_run_out() -> None:
    account = history([0] * 13 + [0], left=2_000)
    top_up(account, 1, source=LotSource.PURCHASE)
    result = forecast(account, NOW)
    assert result.daily_burn == 0 and result.run_out_at is None


def test_the_forecast_endpoint(client: Client) -> None:
    org = make_org("professional")
    raw = ApiKey.issue(org, name="reader", scopes=[Scope.ACCOUNT_READ])[1]
    answer = client.get("/api/v1/credits/forecast", headers={"Authorization": f"Bearer {raw}"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {
        "daily_burn",
        "run_out_at",
        "run_out_low",
        "run_out_high",
        "history_days",
        "expiring",
        "message",
    }
    assert body["daily_burn"] is None and body["message"].startswith("Not enough history yet")
    assert client.get("/api/v1/credits/forecast").status_code == 401


def test_the_sentence_pages_show() -> None:
    from billing.forecasting import sentence
    from ledger.forecast import Forecast

    day = dt.date(2026, 12, 19)
    ranged = Forecast(14, 1_200, day, dt.date(2026, 12, 16), dt.date(2026, 12, 23), [])
    assert sentence(ranged, False) == (
        "At the last 14 days' pace (1,200 credits a day), credits last until about 19 Dec "
        "(likely 16 Dec–23 Dec)."
    )
    open_ended = Forecast(14, 1_200, day, dt.date(2026, 12, 16), None, [])
    assert sentence(open_ended, False).endswith("(likely 16 Dec or later).")
    assert sentence(Forecast(3, None, None, None, None, []), False).startswith("Not enough history yet")
    assert (
        sentence(Forecast(14, 0, None, None, None, []), False)
        == "No credits used lately: no run-out in sight."
    )
