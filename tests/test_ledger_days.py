"""Days and months are the account's own: the rollup follows the local calendar."""

from __future__ import annotations

import datetime as dt

import pytest

from ledger import postings
from ledger.models import DailyRollup, Entry, LotSource
from tests.ledger_helpers import assert_clean, key, new_account

pytestmark = [pytest.mark.ledger, pytest.mark.django_db]

LAST_EVENING_UTC = dt.datetime(2026, 10, 31, 23, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("time_zone", "local_day"),
    [("Asia/Tokyo", dt.date(2026, 11, 1)), ("UTC", dt.date(2026, 10, 31))],
)
def test_a_late_debit_on_the_last_day_counts_on_the_local_day(time_zone: str, local_day: dt.date) -> None:
    account = new_account(time_zone=time_zone)
    postings.post_top_up(
        account,
        500,
        key=key(),
        source=LotSource.PURCHASE,
        operation="pack",
        now=LAST_EVENING_UTC - dt.timedelta(days=3),
    )
    postings.debit(account, 120, key=key(), operation="training_h100_per_minute", now=LAST_EVENING_UTC)
    debit = Entry.objects.get(account=account, amount=-120)
    assert debit.local_date == local_day
    rollup = DailyRollup.objects.get(account=account, date=local_day)
    assert (rollup.credits_used, rollup.balance) == (120, 380)
    # The local month the debit belongs to: November in Tokyo, October in UTC.
    assert local_day.month == (11 if time_zone == "Asia/Tokyo" else 10)
    assert_clean(account)


def test_the_rollup_keeps_each_days_totals_and_closing_balance() -> None:
    account = new_account()
    day = dt.datetime(2026, 9, 10, 9, tzinfo=dt.UTC)
    postings.post_top_up(
        account,
        1_000,
        key=key(),
        source=LotSource.SUBSCRIPTION,
        operation="subscription_renewal",
        now=day,
    )
    postings.debit(
        account, 300, key=key(), operation="op", job=postings.JobInfo("j"), now=day + dt.timedelta(hours=1)
    )
    postings.refund(account, "j", 100, key=key(), operation="refund", now=day + dt.timedelta(hours=2))
    postings.debit(account, 50, key=key(), operation="op", now=day + dt.timedelta(days=1))
    rows = {
        r.date.day: (r.top_ups, r.top_ups_subscription, r.debits, r.refunds, r.credits_used, r.balance)
        for r in DailyRollup.objects.filter(account=account)
    }
    # credits used are the debits less their refunds: 300 - 100 on the 10th
    assert rows == {10: (1_000, 1_000, 300, 100, 200, 800), 11: (0, 0, 50, 0, 50, 750)}
