"""Lots: the order debits draw them in, refunds back to them, and expiry."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from ledger import postings
from ledger.models import Account, Entry, EntryKind, Lot, LotDraw, LotSource
from tests.ledger_helpers import assert_clean, key, new_account, top_up

pytestmark = [pytest.mark.ledger, pytest.mark.django_db]

NOW = timezone.now()


def _lots(account: Account) -> dict[str, int]:
    return {
        lot.source + (f"@{lot.expires_at:%d}" if lot.expires_at else ""): lot.remaining
        for lot in Lot.objects.filter(account=account)
    }


def _job(name: str = "job-1") -> postings.JobInfo:
    return postings.JobInfo(name, "finetune", "vision", "ada", "a100")


def test_debits_draw_soonest_expiry_first_and_never_expiring_last() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PURCHASE, now=NOW)
    top_up(account, 100, source=LotSource.SUBSCRIPTION, expires_at=NOW + dt.timedelta(days=20), now=NOW)
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(days=5), now=NOW)
    postings.debit(account, 150, key=key(), operation="op", job=_job(), now=NOW)
    remaining = {lot.source: lot.remaining for lot in Lot.objects.filter(account=account)}
    assert remaining == {"promotional": 0, "subscription": 50, "purchase": 100}
    entry = Entry.objects.get(account=account, kind=EntryKind.DEBIT)
    assert sorted(d.amount for d in LotDraw.objects.filter(entry=entry)) == [-100, -50]
    assert_clean(account)


def test_oldest_first_among_lots_with_the_same_expiry() -> None:
    account = new_account()
    top_up(account, 40, now=NOW - dt.timedelta(days=2))
    top_up(account, 40, now=NOW - dt.timedelta(days=1))
    postings.debit(account, 50, key=key(), operation="op", now=NOW)
    assert list(
        Lot.objects.filter(account=account).order_by("created_at").values_list("remaining", flat=True)
    ) == [0, 30]


def test_a_refund_returns_credits_to_the_lots_they_came_from() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(days=5), now=NOW)
    top_up(account, 100, source=LotSource.PURCHASE, now=NOW)
    postings.debit(account, 150, key=key(), operation="op", job=_job(), now=NOW)
    receipt = postings.refund(account, "job-1", 120, key=key(), operation="training_refund_a100", now=NOW)
    assert (receipt.amount, receipt.balance, receipt.forfeited) == (120, 170, 0)
    remaining = {lot.source: lot.remaining for lot in Lot.objects.filter(account=account)}
    # The last credits taken (from the purchase) are the first given back.
    assert remaining == {"promotional": 70, "purchase": 100}
    refund = Entry.objects.get(kind=EntryKind.REFUND, account=account)
    assert refund.job and refund.job.external_id == "job-1"
    assert_clean(account)


def test_an_expired_lots_share_of_a_refund_is_not_revived() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(days=1), now=NOW)
    top_up(account, 100, source=LotSource.PURCHASE, now=NOW)
    postings.debit(account, 150, key=key(), operation="op", job=_job(), now=NOW)
    later = NOW + dt.timedelta(days=2)
    receipt = postings.refund(account, "job-1", 150, key=key(), operation="training_refund_a100", now=later)
    assert (receipt.amount, receipt.forfeited, receipt.balance) == (50, 100, 100)
    assert Lot.objects.get(account=account, source=LotSource.PROMOTIONAL).remaining == 0
    assert_clean(account)


def test_a_refund_is_never_more_than_the_job_consumed() -> None:
    account = new_account(500)
    postings.debit(account, 100, key=key(), operation="op", job=_job())
    postings.refund(account, "job-1", 60, key=key(), operation="refund")
    with pytest.raises(postings.InvalidPosting, match="40 credits left to refund"):
        postings.refund(account, "job-1", 41, key=key(), operation="refund")
    with pytest.raises(postings.InvalidPosting):
        postings.refund(account, "no-such-job", 1, key=key(), operation="refund")
    account.refresh_from_db()
    assert account.balance == 460


def test_expiry_posts_exactly_what_remained_once() -> None:
    account = new_account()
    top_up(account, 300, source=LotSource.SUBSCRIPTION, expires_at=NOW + dt.timedelta(days=1), now=NOW)
    top_up(account, 50, source=LotSource.PURCHASE, now=NOW)
    postings.debit(account, 120, key=key(), operation="op", now=NOW)
    later = NOW + dt.timedelta(days=1)
    entries = postings.expire_lots(account, now=later)
    assert [e.amount for e in entries] == [-180]
    assert postings.expire_lots(account, now=later + dt.timedelta(hours=1)) == []
    account.refresh_from_db()
    assert account.balance == 50
    assert_clean(account)


def test_a_debit_never_draws_on_a_lot_past_its_expiry() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    top_up(account, 30, now=NOW)
    with pytest.raises(postings.InsufficientCredits) as refused:
        postings.debit(account, 50, key=key(), operation="op", now=NOW + dt.timedelta(hours=2))
    assert refused.value.remaining == 30


def test_estimate_names_the_lots_it_would_draw_on_and_posts_nothing() -> None:
    from tests.factories import catalog

    catalog()
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(days=3))
    top_up(account, 500)
    estimate = postings.estimate(account, "training_a10g_per_minute", 30)
    assert (estimate.total_credits, estimate.credits_available, estimate.sufficient) == (300, 600, True)
    assert [(lot.source, lot.credits) for lot in estimate.lots] == [("promotional", 100), ("purchase", 200)]
    assert postings.estimate(account, "training_h100_per_minute", 30).sufficient is False
    with pytest.raises(postings.UnknownOperation):
        postings.estimate(account, "training_tpu_per_minute", 1)
    assert Entry.objects.filter(account=account, kind=EntryKind.DEBIT).count() == 0


def test_an_unlimited_account_is_never_refused_and_overdraws_cleanly() -> None:
    account = new_account(100, unlimited=True)
    postings.debit(account, 250, key=key(), operation="op", job=_job())
    account.refresh_from_db()
    assert account.balance == -150
    assert_clean(account)
    top_up(account, 400)
    account.refresh_from_db()
    assert account.balance == 250
    assert Lot.objects.filter(account=account).order_by("-id").first().remaining == 250  # type: ignore[union-attr]
    postings.refund(account, "job-1", 250, key=key(), operation="refund")
    assert_clean(account)


def test_a_negative_adjustment_is_a_new_entry_drawing_on_lots() -> None:
    account = new_account(100)
    receipt = postings.adjust(account, -30, key=key(), memo="duplicate grant")
    assert (receipt.amount, receipt.balance) == (-30, 70)
    assert receipt.entry_id is not None
    entry = Entry.objects.get(pk=receipt.entry_id)
    assert (entry.kind, entry.memo) == (EntryKind.ADJUSTMENT, "duplicate grant")
    assert_clean(account)


def test_the_sweep_expires_lots_on_quiet_accounts_exactly_once() -> None:
    quiet = new_account()
    top_up(quiet, 200, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    top_up(quiet, 50, now=NOW)
    fresh = new_account()
    top_up(fresh, 80, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(days=9), now=NOW)
    later = NOW + dt.timedelta(hours=2)
    assert postings.expire_due_lots(now=later) == 1
    assert postings.expire_due_lots(now=later) == 0
    quiet.refresh_from_db()
    fresh.refresh_from_db()
    assert (quiet.balance, fresh.balance) == (50, 80)
    assert_clean(quiet)
