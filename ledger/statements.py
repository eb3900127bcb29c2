"""Monthly statements: a closed month frozen from its daily rollups.

A statement is computed from the account's ``DailyRollup`` rows, so freezing a month costs
O(days), not O(entries). It is deterministic given the ledger: the same entries always
freeze the same statement, whenever and however often the close runs. The month close
freezes many accounts' statements at once, in a fixed number of queries.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from django.db import connection
from django.db.models import OuterRef, Subquery

from ledger.models import Account, DailyRollup, Entry, Statement, StatementDay
from ledger.periods import add_months, month_bounds


class StatementError(Exception):
    """The ledger does not support a sound statement; nothing was frozen."""


def freeze_statements(accounts: Sequence[Account], period: dt.date) -> list[Statement]:
    """Freeze the month starting ``period`` for each of ``accounts``, with its daily rows.

    The caller holds the accounts' row locks and runs this inside its transaction (the
    month close does). ``brought_forward`` is the previous statement's closing balance, or
    for the first statement the balance at the end of the last day before the month. The
    identity ``closing = brought_forward + purchased + refunded - consumed - expired`` is
    checked against the ledger's own end-of-month balance before anything is written.
    """
    if not accounts:
        return []
    period = period.replace(day=1)
    following = add_months(period, 1)
    ids = [account.pk for account in accounts]
    days: dict[int, list[tuple[int, int, int, int, int]]] = defaultdict(list)
    for account_id, top_ups, used, refunds, gone, balance in (
        DailyRollup.objects.filter(account_id__in=ids, date__gte=period, date__lt=following)
        .order_by("account_id", "date")
        .values_list("account_id", "top_ups", "credits_used", "refunds", "expired", "balance")
    ):
        days[account_id].append((top_ups, used, refunds, gone, balance))
    facts = {row[0]: row[1:] for row in _facts_before(ids, period, following)}
    statements = []
    for account in accounts:
        previous_period, previous_closing, balance_before, last_entry_id = facts[account.pk]
        if previous_period is not None and previous_period != add_months(period, -1):
            raise StatementError(
                f"{account.slug}: {add_months(period, -1):%Y-%m} is not closed; months close in order."
            )
        brought_forward = previous_closing if previous_period is not None else balance_before or 0
        rows = days[account.pk]
        purchased, consumed, refunded, expired = (sum(row[i] for row in rows) for i in range(4))
        closing = rows[-1][4] if rows else brought_forward
        if closing != brought_forward + purchased + refunded - consumed - expired:
            raise StatementError(
                f"{account.slug} {period:%Y-%m}: closing {closing} != brought forward "
                f"{brought_forward} + purchased {purchased} + refunded {refunded} - consumed "
                f"{consumed} - expired {expired}"
            )
        starts_at, ends_at = month_bounds(period, account.tzinfo)
        statements.append(Statement(
            account=account, period=period, starts_at=starts_at, ends_at=ends_at,
            brought_forward=brought_forward, purchased=purchased, consumed=consumed,
            refunded=refunded, expired=expired, closing_balance=closing,
            last_entry_id=last_entry_id,
        ))
    Statement.objects.bulk_create(statements)
    _copy_days(statements, period, following)
    return statements


def _facts_before(ids: list[int], period: dt.date, following: dt.date) -> list[tuple[int, ...]]:
    """Per account: the last statement before ``period`` (month, closing balance), the
    balance at the end of the last day before ``period`` and the last entry of the month."""
    previous = Statement.objects.filter(account=OuterRef("pk"), period__lt=period).order_by("-period")
    return list(
        Account.objects.filter(pk__in=ids)
        .annotate(
            previous_period=Subquery(previous.values("period")[:1]),
            previous_closing=Subquery(previous.values("closing_balance")[:1]),
            balance_before=Subquery(
                DailyRollup.objects.filter(account=OuterRef("pk"), date__lt=period)
                .order_by("-date").values("balance")[:1]
            ),
            last_entry_id=Subquery(
                Entry.objects.filter(account=OuterRef("pk"), local_date__lt=following)
                .order_by("-id").values("id")[:1]
            ),
        )
        .values_list("pk", "previous_period", "previous_closing", "balance_before", "last_entry_id")
    )


def _copy_days(statements: list[Statement], period: dt.date, following: dt.date) -> None:
    """Each statement's daily rows, copied from its account's rollups in one statement
    (the accounts are locked, so these are the rows the totals were summed from)."""
    day, rollup, statement = (m._meta.db_table for m in (StatementDay, DailyRollup, Statement))
    ids = [s.pk for s in statements]
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {day} (statement_id, date, top_ups, credits_used, refunds, expired, balance)"
            f" SELECT s.id, r.date, r.top_ups, r.credits_used, r.refunds, r.expired, r.balance"
            f" FROM {statement} s JOIN {rollup} r ON r.account_id = s.account_id"
            f" WHERE s.id IN ({marks}) AND r.date >= %s AND r.date < %s",
            [*ids, period, following],
        )
