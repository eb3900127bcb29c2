"""The ledger's invariants, checked from the stored rows for one account at a time.

What the posting functions keep (balances, rollups) and what the close froze (statements)
is recomputed here from the entries, independently of the code that wrote it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import Sum

from ledger.models import (
    Account,
    DailyRollup,
    EntryKind,
    Figures,
    GroupDay,
    GroupMonth,
    Hold,
    HoldStatus,
    Lot,
    Statement,
    StatementDay,
)
from ledger.periods import add_months

Day = dict[str, int]


def account_breaks(account: Account) -> list[str]:
    """Every invariant the account breaks, in words; empty when the ledger is sound."""
    breaks: list[str] = []
    name = account.slug
    sources = dict(Lot.objects.filter(account=account, entry__isnull=False).values_list("entry_id", "source"))
    entries = account.entries.order_by("id").values_list(
        "id", "amount", "balance_after", "local_date", "kind"
    )
    total, running, last_after = 0, 0, 0
    days: dict[dt.date, Day] = defaultdict(lambda: dict.fromkeys([*Figures.PARTS, "balance"], 0))
    for entry_id, amount, balance_after, local_date, kind in entries.iterator(chunk_size=5000):
        total += amount
        running += amount
        if balance_after != running:
            breaks.append(
                f"{name}: entry {entry_id} balance_after {balance_after} != previous "
                f"{running - amount} + amount {amount}"
            )
            running = balance_after  # report each break once, not every entry after it
        last_after = balance_after
        part, change = EntryKind(kind).figure(amount, sources.get(entry_id))
        days[local_date][part] += change
        days[local_date]["balance"] = balance_after
    if account.balance != total:
        breaks.append(f"{name}: balance {account.balance} != sum of entries {total}")
    if account.balance != last_after:
        breaks.append(f"{name}: balance {account.balance} != last balance_after {last_after}")
    lots = Lot.objects.filter(account=account).aggregate(r=Sum("remaining"))["r"] or 0
    expected_lots = account.balance if account.balance >= 0 else 0
    if lots != expected_lots:
        breaks.append(f"{name}: sum of lots' remaining {lots} != balance {account.balance}")
    if account.balance < 0 and not account.unlimited:
        breaks.append(f"{name}: balance {account.balance} is negative on a limited account")
    held = (
        Hold.objects.filter(account=account, status=HoldStatus.PENDING).aggregate(h=Sum("amount"))["h"] or 0
    )
    if account.held != held:
        breaks.append(f"{name}: held {account.held} != sum of pending holds {held}")
    if account.held > account.balance and not account.unlimited:
        breaks.append(f"{name}: held {account.held} > balance {account.balance}: a hold lost its credits")
    rollups = {r.date: _day(r) for r in DailyRollup.objects.filter(account=account)}
    for date in sorted(days.keys() | rollups.keys()):
        stored, expected = rollups.get(date), days.get(date)
        if stored != expected:
            breaks.append(f"{name}: daily rollup for {date} is {stored}, entries say {expected}")
    groups = (
        GroupDay.objects.filter(account=account).values("date").annotate(d=Sum("debits"), r=Sum("refunds"))
    )
    grouped = {row["date"]: (row["d"], row["r"]) for row in groups}
    for date in sorted(days.keys() | grouped.keys()):
        expected_parts = (days[date]["debits"], days[date]["refunds"]) if date in days else (0, 0)
        if grouped.get(date, (0, 0)) != expected_parts:
            breaks.append(
                f"{name}: groups for {date} hold debits and refunds {grouped.get(date, (0, 0))}, "
                f"entries say {expected_parts}"
            )
    for dimension in GroupDay.GROUPS:
        summed = GroupMonth.objects.filter(account=account, dimension=dimension).values("month")
        for row in summed.annotate(d=Sum("debits"), r=Sum("refunds")):
            following = add_months(row["month"], 1)
            in_days = GroupDay.objects.filter(
                account=account, date__gte=row["month"], date__lt=following
            ).aggregate(d=Sum("debits"), r=Sum("refunds"))
            if (row["d"], row["r"]) != (in_days["d"] or 0, in_days["r"] or 0):
                breaks.append(
                    f"{name}: {dimension} sums for {row['month']:%Y-%m} are {(row['d'], row['r'])}, "
                    f"its days say {(in_days['d'] or 0, in_days['r'] or 0)}"
                )
    breaks.extend(statement_breaks(account, days))
    return breaks


def statement_breaks(account: Account, days: dict[dt.date, Day]) -> list[str]:
    """Each statement against the entries' days (``days``), and the chain of months: each
    brings forward the previous one's closing balance, and adds up."""
    breaks: list[str] = []
    previous: Statement | None = None
    for statement in Statement.objects.filter(account=account).order_by("period").prefetch_related("days"):
        where = f"{account.slug} statement {statement.period:%Y-%m}"
        following = add_months(statement.period, 1)
        expected = {date: day for date, day in days.items() if statement.period <= date < following}
        stored = {day.date: _day(day) for day in statement.days.all()}
        if stored != expected:
            changed = sorted(d for d in stored.keys() | expected.keys() if stored.get(d) != expected.get(d))
            breaks.append(f"{where}: days {', '.join(map(str, changed))} differ from the entries")
        sums = {part: sum(day[part] for day in expected.values()) for part in Figures.PARTS}
        if statement.parts() != sums:
            breaks.append(f"{where}: figures {statement.parts()} != the entries' {sums}")
        before = [day["balance"] for date, day in sorted(days.items()) if date < statement.period]
        brought_forward = previous.closing_balance if previous else (before[-1] if before else 0)
        if previous and previous.period != add_months(statement.period, -1):
            breaks.append(f"{where}: the month before has no statement")
        if statement.brought_forward != brought_forward:
            breaks.append(f"{where}: brought forward {statement.brought_forward} != {brought_forward}")
        closing = statement.brought_forward + statement.top_ups - statement.credits_used
        if statement.closing_balance != closing:
            breaks.append(
                f"{where}: closing {statement.closing_balance} != brought forward + top-ups "
                f"- credits used = {closing}"
            )
        previous = statement
    return breaks


def _day(day: DailyRollup | StatementDay) -> Day:
    return {**day.parts(), "balance": day.balance}


def ledger_breaks() -> list[str]:
    breaks: list[str] = []
    for account in Account.objects.order_by("id").iterator():
        breaks.extend(account_breaks(account))
    return breaks
