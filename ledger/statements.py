"""Monthly statements: a closed month frozen from its daily rollups.

A statement is computed from the account's ``DailyRollup`` rows, so freezing a month costs
O(days), not O(entries). It is deterministic given the ledger: the same entries always
freeze the same statement, whenever and however often the close runs. The month close
freezes many accounts' statements at once, in a fixed number of queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import connection
from django.db.models import F, OuterRef, Subquery, Sum

from ledger.models import Account, DailyRollup, Entry, Figures, Statement, StatementDay
from ledger.periods import add_months, month_bounds


class StatementError(Exception):
    """The ledger does not support a sound statement; nothing was frozen."""


def freeze_statements(accounts: Sequence[Account], period: dt.date) -> list[Statement]:
    """Freeze the month starting ``period`` for each of ``accounts``, with its daily rows,
    and mark the month closed: no entry is dated into it afterwards, and a time zone
    waiting for the next month takes effect.

    The caller holds the accounts' row locks and runs this inside its transaction (the
    month close does). ``brought_forward`` is the previous statement's closing balance, or
    for the first statement the balance at the end of the last day before the month. The
    identity ``closing = brought_forward + top_ups - credits_used`` is checked against the
    ledger's own end-of-month balance before anything is written.
    """
    if not accounts:
        return []
    period = period.replace(day=1)
    following = add_months(period, 1)
    ids = [account.pk for account in accounts]
    month = DailyRollup.objects.filter(account_id__in=ids, date__gte=period, date__lt=following)
    totals = {f"total_{part}": Sum(part) for part in Figures.PARTS}
    sums = {
        account_id: dict(zip(Figures.PARTS, figures, strict=True))
        for account_id, *figures in month.order_by()
        .values("account_id")
        .annotate(**totals)
        .values_list("account_id", *totals)
    }
    facts = {row[0]: row[1:] for row in _facts_before(ids, period, following)}
    statements = []
    for account in accounts:
        previous_period, previous_closing, balance_before, closing, last_entry_id = facts[account.pk]
        if previous_period is not None and previous_period != add_months(period, -1):
            raise StatementError(
                f"{account.slug}: {add_months(period, -1):%Y-%m} is not closed; months close in order."
            )
        brought_forward = previous_closing if previous_period is not None else balance_before or 0
        starts_at, ends_at = month_bounds(period, account.tzinfo)
        statement = Statement(
            account=account,
            period=period,
            starts_at=starts_at,
            ends_at=ends_at,
            brought_forward=brought_forward,
            closing_balance=closing if closing is not None else brought_forward,
            last_entry_id=last_entry_id,
            **sums.get(account.pk, {}),
        )
        if statement.closing_balance != brought_forward + statement.top_ups - statement.credits_used:
            raise StatementError(
                f"{account.slug} {period:%Y-%m}: closing {statement.closing_balance} != brought forward "
                f"{brought_forward} + top-ups {statement.top_ups} - credits used {statement.credits_used}"
            )
        statements.append(statement)
    Statement.objects.bulk_create(statements)
    _copy_days(statements, period, following)
    _sum_groups(ids, period, following)
    Account.objects.filter(pk__in=ids).update(open_from=following)
    Account.objects.filter(pk__in=ids).exclude(next_time_zone="").update(
        time_zone=F("next_time_zone"), next_time_zone=""
    )
    return statements


def _facts_before(ids: list[int], period: dt.date, following: dt.date) -> list[tuple[int, ...]]:
    """Per account: the last statement before ``period`` (month, closing balance), the
    balance at the end of the last day before ``period``, the balance at the end of the
    month's last day with activity, and the last entry of the month."""
    previous = Statement.objects.filter(account=OuterRef("pk"), period__lt=period).order_by("-period")
    days = DailyRollup.objects.filter(account=OuterRef("pk")).order_by("-date").values("balance")
    return list(
        Account.objects.filter(pk__in=ids)
        .annotate(
            previous_period=Subquery(previous.values("period")[:1]),
            previous_closing=Subquery(previous.values("closing_balance")[:1]),
            balance_before=Subquery(days.filter(date__lt=period)[:1]),
            closing=Subquery(days.filter(date__gte=period, date__lt=following)[:1]),
            last_entry_id=Subquery(
                Entry.objects.filter(account=OuterRef("pk"), local_date__lt=following)
                .order_by("-id")
                .values("id")[:1]
            ),
        )
        .values_list(
            "pk", "previous_period", "previous_closing", "balance_before", "closing", "last_entry_id"
        )
    )


# The month's group days added up per dimension: the usage report's months (ledger.reports).
SUM_GROUPS = """
INSERT INTO ledger_groupmonth (account_id, month, dimension, name, debits, refunds)
SELECT account_id, %(period)s,
       CASE WHEN GROUPING(project) = 0 THEN 'project' WHEN GROUPING("user") = 0 THEN 'user'
            WHEN GROUPING(resource_class) = 0 THEN 'resource_class' ELSE 'operation' END,
       coalesce(project, "user", resource_class, operation), sum(debits), sum(refunds)
  FROM ledger_groupday
 WHERE account_id = ANY(%(ids)s) AND date >= %(period)s AND date < %(following)s
 GROUP BY account_id, GROUPING SETS ((project), ("user"), (resource_class), (operation))
"""


def _sum_groups(ids: list[int], period: dt.date, following: dt.date) -> None:
    """The closed month's credits used per project, user, resource class and operation.
    Once the month is closed no entry is dated into it, so these sums are final."""
    with connection.cursor() as cursor:
        cursor.execute(SUM_GROUPS, {"ids": ids, "period": period, "following": following})


def _copy_days(statements: list[Statement], period: dt.date, following: dt.date) -> None:
    """Each statement's daily rows, copied from its account's rollups in one INSERT ...
    SELECT (the accounts are locked, so these are the rows its figures were summed from):
    a batch's days never pass through Python. The rollups are looked up by the accounts'
    ids too, so they are read by their index for these accounts only: joined on the
    statements alone, PostgreSQL may choose to merge-join the whole month's rollups,
    every account's, up to the batch's (a cost that grows with the organizations)."""
    parts = ", ".join(Figures.PARTS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {StatementDay._meta.db_table} (statement_id, date, {parts}, balance)"
            f" SELECT s.id, r.date, {', '.join(f'r.{part}' for part in Figures.PARTS)}, r.balance"
            f" FROM {Statement._meta.db_table} s"
            f" JOIN {DailyRollup._meta.db_table} r ON r.account_id = s.account_id"
            " WHERE s.id = ANY(%s) AND r.account_id = ANY(%s) AND r.date >= %s AND r.date < %s",
            [
                [statement.pk for statement in statements],
                [statement.account_id for statement in statements],
                period,
                following,
            ],
        )
