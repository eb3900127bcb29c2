"""The ledger's invariants, checked from the stored rows for one account at a time."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import Sum

from ledger.models import Account, DailyRollup, EntryKind, Hold, HoldStatus, Lot


def account_breaks(account: Account) -> list[str]:
    """Every invariant the account breaks, in words; empty when the ledger is sound."""
    breaks: list[str] = []
    name = account.slug
    entries = account.entries.order_by("id").values_list(
        "id", "amount", "balance_after", "local_date", "kind"
    )
    total, running, last_after = 0, 0, 0
    days: dict[dt.date, dict[str, int]] = defaultdict(
        lambda: {"top_ups": 0, "credits_used": 0, "refunds": 0, "expired": 0, "balance": 0}
    )
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
        totals = days[local_date]
        entry_kind = EntryKind(kind)
        totals[entry_kind.rollup_column] += entry_kind.rollup_change(amount)
        totals["balance"] = balance_after
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
        Hold.objects.filter(account=account, status=HoldStatus.PENDING).aggregate(h=Sum("amount"))["h"]
        or 0
    )
    if account.held != held:
        breaks.append(f"{name}: held {account.held} != sum of pending holds {held}")
    rollups = {
        r.date: {"top_ups": r.top_ups, "credits_used": r.credits_used, "refunds": r.refunds,
                 "expired": r.expired, "balance": r.balance}
        for r in DailyRollup.objects.filter(account=account)
    }
    for date in sorted(days.keys() | rollups.keys()):
        stored, expected = rollups.get(date), days.get(date)
        if stored != expected:
            breaks.append(f"{name}: daily rollup for {date} is {stored}, entries say {expected}")
    return breaks


def ledger_breaks() -> list[str]:
    breaks: list[str] = []
    for account in Account.objects.order_by("id").iterator():
        breaks.extend(account_breaks(account))
    return breaks
