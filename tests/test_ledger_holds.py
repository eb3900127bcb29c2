"""Holds: reserve, settle, release, expiry; each resolves exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from ledger import postings
from ledger.models import Account, Entry, EntryKind, Hold, HoldStatus
from tests.ledger_helpers import assert_clean, in_threads, key, new_account

pytestmark = pytest.mark.ledger


def _hold(account: Account, amount: int = 100, **kw: Any) -> int:
    receipt = postings.reserve(account, amount, key=key(), operation="training_a10g_per_minute", **kw)
    assert receipt.hold_id is not None
    return receipt.hold_id


@pytest.mark.django_db
def test_reserve_lowers_available_not_balance() -> None:
    account = new_account(500)
    _hold(account, 200)
    account.refresh_from_db()
    assert (account.balance, account.held, account.available) == (500, 200, 300)


@pytest.mark.django_db
def test_partial_settle_charges_the_amount_and_releases_the_rest() -> None:
    account = new_account(500)
    hold_id = _hold(account, 200)
    receipt = postings.settle(account, hold_id, 70, key=key())
    assert (receipt.amount, receipt.balance, receipt.held, receipt.available) == (-70, 430, 0, 430)
    hold = Hold.objects.get(pk=hold_id)
    assert (hold.status, hold.settled_amount) == (HoldStatus.SETTLED, 70)
    assert Entry.objects.get(hold=hold).amount == -70
    assert_clean(account)


@pytest.mark.django_db
def test_a_second_settle_or_a_release_after_settle_is_refused() -> None:
    account = new_account(500)
    hold_id = _hold(account, 200)
    postings.settle(account, hold_id, 50, key=key())
    with pytest.raises(postings.HoldNotPending):
        postings.settle(account, hold_id, 50, key=key())
    with pytest.raises(postings.HoldNotPending):
        postings.release(account, hold_id, key=key())
    account.refresh_from_db()
    assert account.balance == 450
    assert_clean(account)


@pytest.mark.django_db
def test_release_frees_everything_and_charges_nothing() -> None:
    account = new_account(500)
    hold_id = _hold(account, 200)
    receipt = postings.release(account, hold_id, key=key())
    assert (receipt.balance, receipt.held, receipt.available) == (500, 0, 500)
    assert not Entry.objects.filter(account=account, kind=EntryKind.DEBIT).exists()


@pytest.mark.django_db
def test_settling_more_than_held_charges_the_excess_from_available() -> None:
    account = new_account(500)
    hold_id = _hold(account, 100)
    receipt = postings.settle(account, hold_id, 180, key=key())
    assert (receipt.balance, receipt.held) == (320, 0)
    assert_clean(account)


@pytest.mark.django_db
def test_settling_more_than_available_covers_fails_and_leaves_the_hold_pending() -> None:
    account = new_account(500)
    hold_id = _hold(account, 100)
    _hold(account, 350)  # only 50 left available besides the first hold
    with pytest.raises(postings.InsufficientCredits) as refused:
        postings.settle(account, hold_id, 200, key=key())
    assert (refused.value.required, refused.value.remaining) == (200, 150)
    assert Hold.objects.get(pk=hold_id).status == HoldStatus.PENDING
    account.refresh_from_db()
    assert (account.balance, account.held) == (500, 450)
    assert_clean(account)


@pytest.mark.django_db
def test_reserve_beyond_available_is_refused_so_available_never_goes_below_zero() -> None:
    account = new_account(300)
    _hold(account, 250)
    with pytest.raises(postings.InsufficientCredits):
        _hold(account, 51)
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(account, 51, key=key(), operation="op")
    account.refresh_from_db()
    assert account.available == 50


@pytest.mark.django_db(transaction=True)
def test_an_expired_hold_is_released_exactly_once_even_when_swept_concurrently() -> None:
    account = new_account(500)
    start = timezone.now() - dt.timedelta(hours=2)
    hold_id = _hold(account, 200, ttl=dt.timedelta(hours=1), now=start)
    _hold(account, 100)  # still within its time
    results = in_threads([postings.release_expired_holds] * 5, workers=5)
    assert sorted(results) == [0, 0, 0, 0, 1]  # type: ignore[type-var]
    assert Hold.objects.get(pk=hold_id).status == HoldStatus.EXPIRED
    account.refresh_from_db()
    assert (account.balance, account.held) == (500, 100)
    with pytest.raises(postings.HoldNotPending):
        postings.settle(account, hold_id, 10, key=key())
    assert_clean(account)
