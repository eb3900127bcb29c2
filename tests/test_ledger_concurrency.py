"""Many writers on one account: exactly the covered postings succeed, none overspends."""

from __future__ import annotations

import functools
import random

import pytest

from ledger import budgets, postings
from ledger.models import Entry, EntryKind, Hold, HoldStatus
from tests.ledger_helpers import assert_clean, in_threads, key, new_account

pytestmark = [pytest.mark.ledger, pytest.mark.django_db(transaction=True)]

THREADS, PER_THREAD, PRICE = 50, 20, 7


def test_exactly_the_covered_debits_succeed_under_50_threads() -> None:
    covered = 333  # K of the 1,000 debits
    account = new_account(covered * PRICE)

    def worker() -> list[str]:
        outcomes = []
        for _ in range(PER_THREAD):
            try:
                receipt = postings.debit(account, PRICE, key=key(), operation="image_inference")
                assert receipt.balance >= 0
                outcomes.append("ok")
            except postings.InsufficientCredits as refused:
                assert refused.required == PRICE and refused.remaining < PRICE
                outcomes.append("refused")
        return outcomes

    results = in_threads([worker] * THREADS)
    outcomes = [o for r in results for o in r]  # type: ignore[union-attr]
    assert outcomes.count("ok") == covered
    assert outcomes.count("refused") == THREADS * PER_THREAD - covered
    account.refresh_from_db()
    assert account.balance == 0
    assert Entry.objects.filter(account=account, kind=EntryKind.DEBIT).count() == covered
    assert not Entry.objects.filter(account=account, balance_after__lt=0).exists()
    assert_clean(account)


def test_reserve_settle_release_and_debits_mixed_never_overspend() -> None:
    account = new_account(5_000)

    def worker(seed: int) -> int:
        rng = random.Random(seed)
        spent = 0
        for _ in range(PER_THREAD):
            try:
                action = rng.choice(["debit", "hold-settle", "hold-release", "hold-settle-more"])
                if action == "debit":
                    spent -= postings.debit(account, 9, key=key(), operation="op").amount
                    continue
                hold = postings.reserve(account, 20, key=key(), operation="op")
                assert hold.available >= 0
                if action == "hold-release":
                    postings.release(account, hold.hold_id, key=key())  # type: ignore[arg-type]
                else:
                    amount = 12 if action == "hold-settle" else 25
                    spent -= postings.settle(account, hold.hold_id, amount, key=key()).amount  # type: ignore[arg-type]
            except postings.InsufficientCredits:
                pass
        return spent

    results = in_threads([functools.partial(worker, s) for s in range(THREADS)])
    assert all(isinstance(r, int) for r in results), [r for r in results if not isinstance(r, int)]
    account.refresh_from_db()
    assert account.balance == 5_000 - sum(results)  # type: ignore[arg-type]
    assert account.balance >= 0
    assert account.held == sum(
        h.amount for h in Hold.objects.filter(account=account, status=HoldStatus.PENDING)
    )
    assert_clean(account)


def test_exactly_the_holds_a_budget_covers_succeed_under_50_threads() -> None:
    covered = 271  # K of the 1,000 holds, with credits for all of them
    account = new_account(THREADS * PER_THREAD * PRICE)
    budgets.set_budget(account, "project", "vision", covered * PRICE)

    def worker(thread: int) -> list[str]:
        outcomes = []
        for n in range(PER_THREAD):
            try:
                job = postings.JobInfo(f"job-{thread}-{n}", project="vision")
                postings.reserve(account, PRICE, key=key(), operation="op", job=job)
                outcomes.append("ok")
            except postings.BudgetExceeded as refused:
                assert refused.budget["remaining"] < PRICE
                outcomes.append("refused")
        return outcomes

    results = in_threads([functools.partial(worker, t) for t in range(THREADS)])
    outcomes = [o for r in results for o in r]  # type: ignore[union-attr]
    assert outcomes.count("ok") == covered
    assert outcomes.count("refused") == THREADS * PER_THREAD - covered
    figures = budgets.find(account, "project", "vision")
    assert figures is not None and (figures.used, figures.held, figures.remaining) == (0, covered * PRICE, 0)
    account.refresh_from_db()
    assert account.held == covered * PRICE
    assert_clean(account)
