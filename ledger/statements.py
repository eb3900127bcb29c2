"""Monthly statements: a closed month frozen from its daily rollups.

A statement is computed from the account's ``DailyRollup`` rows, so freezing a month costs
O(days), not O(entries). It is deterministic given the ledger: the same entries always
freeze the same statement, whenever and however often the close runs.
"""

from __future__ import annotations

import datetime as dt

from ledger.models import Account, DailyRollup, Entry, Statement, StatementDay
from ledger.periods import add_months, month_bounds


class StatementError(Exception):
    """The ledger does not support a sound statement; nothing was frozen."""


def freeze_statement(account: Account, period: dt.date) -> Statement:
    """Freeze the month starting ``period`` for ``account``, with its daily rows.

    The caller holds the account row lock and runs this inside its transaction (the month
    close does). ``brought_forward`` is the previous statement's closing balance, or for
    the first statement the balance at the end of the last day before the month. The
    identity ``closing = brought_forward + purchased + refunded - consumed - expired`` is
    checked against the ledger's own end-of-month balance before anything is written.
    """
    period = period.replace(day=1)
    following = add_months(period, 1)
    days = list(
        DailyRollup.objects.filter(account=account, date__gte=period, date__lt=following)
        .order_by("date")
        .values_list("date", "top_ups", "credits_used", "refunds", "expired", "balance")
    )
    brought_forward = _brought_forward(account, period)
    purchased = sum(day[1] for day in days)
    consumed = sum(day[2] for day in days)
    refunded = sum(day[3] for day in days)
    expired = sum(day[4] for day in days)
    closing = days[-1][5] if days else brought_forward
    if closing != brought_forward + purchased + refunded - consumed - expired:
        raise StatementError(
            f"{account.slug} {period:%Y-%m}: closing {closing} != brought forward "
            f"{brought_forward} + purchased {purchased} + refunded {refunded} - consumed "
            f"{consumed} - expired {expired}"
        )
    starts_at, ends_at = month_bounds(period, account.tzinfo)
    last_entry_id = (
        Entry.objects.filter(account=account, local_date__lt=following)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    statement = Statement.objects.create(
        account=account,
        period=period,
        starts_at=starts_at,
        ends_at=ends_at,
        brought_forward=brought_forward,
        purchased=purchased,
        consumed=consumed,
        refunded=refunded,
        expired=expired,
        closing_balance=closing,
        last_entry_id=last_entry_id,
    )
    StatementDay.objects.bulk_create(
        StatementDay(statement=statement, date=date, top_ups=top_ups, credits_used=used,
                     refunds=refunds, expired=gone, balance=balance)
        for date, top_ups, used, refunds, gone, balance in days
    )
    return statement


def _brought_forward(account: Account, period: dt.date) -> int:
    previous = (
        Statement.objects.filter(account=account, period__lt=period)
        .order_by("-period")
        .values_list("period", "closing_balance")
        .first()
    )
    if previous is not None:
        if previous[0] != add_months(period, -1):
            raise StatementError(
                f"{account.slug}: {add_months(period, -1):%Y-%m} is not closed; months close in order."
            )
        return previous[1]
    before = (
        DailyRollup.objects.filter(account=account, date__lt=period)
        .order_by("-date")
        .values_list("balance", flat=True)
        .first()
    )
    return before or 0
