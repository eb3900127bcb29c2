"""The posting functions themselves: installed as their files say, batches, key spaces,
and a hold as a promise."""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from django.db import connection, transaction

from ledger import functions, postings
from ledger.models import Account, Entry, EntryKind, Hold, HoldStatus, IdempotencyRecord, KeySpace, LotSource
from tests.ledger_helpers import assert_clean, in_threads, key, new_account, top_up

pytestmark = pytest.mark.ledger

NOW = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_the_database_functions_are_those_in_the_files() -> None:
    assert functions.differences(connection) == []


@pytest.mark.django_db
def test_a_function_changed_in_the_database_is_reported() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION ledger.price(p_operation text, p_quantity bigint) "
            "RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'"
        )
        cursor.execute("CREATE FUNCTION ledger.free_credits() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    assert functions.differences(connection) == [
        "ledger.free_credits() is in the database but in no file",
        "ledger.price(p_operation text, p_quantity bigint) differs from its file",
    ]


# --- Key spaces --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_client_key_never_meets_tallys_own_key_of_the_same_text() -> None:
    account = new_account(100)
    attack = postings.reserve(
        account, 1, key="subscription_renewal:2027-01", operation="op", key_space=KeySpace.CLIENT
    )
    renewal = postings.post_top_up(
        account,
        1_000,
        key="subscription_renewal:2027-01",
        source=LotSource.SUBSCRIPTION,
        operation="subscription_renewal",
    )
    assert (attack.action, renewal.action) == ("reserve", "top_up")
    assert renewal.balance == 1_100
    # and the client's retry still replays its own posting, not Tally's
    again = postings.reserve(
        account, 1, key="subscription_renewal:2027-01", operation="op", key_space=KeySpace.CLIENT
    )
    assert again == attack
    assert IdempotencyRecord.objects.filter(account=account, key="subscription_renewal:2027-01").count() == 2
    assert_clean(account)


# --- A hold is a promise -----------------------------------------------------------------


@pytest.mark.django_db
def test_settling_up_to_the_hold_never_fails_when_its_lots_expire_first() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    hold = postings.reserve(account, 80, key=key(), operation="op", now=NOW)
    assert hold.hold_id is not None
    later = NOW + dt.timedelta(hours=2)
    # The sweep expires what the hold does not stand on, and keeps the 80 it does.
    gone = postings.expire_lots(account, now=later)
    assert [entry.amount for entry in gone] == [-20]
    assert (account.balance, account.held) == (80, 80)
    receipt = postings.settle(account, hold.hold_id, 80, key=key(), now=later)
    assert (receipt.amount, receipt.balance, receipt.held) == (-80, 0, 0)
    assert_clean(account)


@pytest.mark.django_db
def test_what_a_hold_stood_on_expires_when_it_is_settled_for_less() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    hold = postings.reserve(account, 60, key=key(), operation="op", now=NOW)
    assert hold.hold_id is not None
    later = NOW + dt.timedelta(hours=2)
    receipt = postings.settle(account, hold.hold_id, 25, key=key(), now=later)
    assert (receipt.balance, receipt.held, receipt.available) == (0, 0, 0)
    kinds = list(Entry.objects.filter(account=account).order_by("id").values_list("kind", "amount"))
    # 40 expire before the settle (the hold stands on 60), the settle takes 25, the 35 left
    # of the promise expire once it is resolved.
    assert kinds == [
        (EntryKind.TOP_UP, 100),
        (EntryKind.EXPIRY, -40),
        (EntryKind.DEBIT, -25),
        (EntryKind.EXPIRY, -35),
    ]
    assert_clean(account)


@pytest.mark.django_db
def test_a_hold_on_expiring_credits_leaves_nothing_else_to_spend() -> None:
    account = new_account()
    top_up(account, 100, source=LotSource.PROMOTIONAL, expires_at=NOW + dt.timedelta(hours=1), now=NOW)
    top_up(account, 10, now=NOW)
    postings.reserve(account, 50, key=key(), operation="op", now=NOW)
    later = NOW + dt.timedelta(hours=2)
    with pytest.raises(postings.InsufficientCredits) as refused:
        postings.debit(account, 1, key=key(), operation="op", now=later)
    assert refused.value.remaining == 0  # the 10 never-expiring credits are the hold's now
    assert_clean(account)


# --- Batches -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_posts_any_kinds_on_any_accounts_each_standing_alone() -> None:
    first, second = new_account(100), new_account(50)
    hold = postings.reserve(first, 30, key=key(), operation="op")
    assert hold.hold_id is not None
    postings.debit(second, 5, key="used-before", operation="op", job=postings.JobInfo("j-0"))
    results = postings.post_batch(
        [
            postings.Posting.debit(
                second.pk, key=key(), amount=20, operation="op", job=postings.JobInfo("j-1")
            ),
            postings.Posting.debit(first.pk, key=key(), amount=500, operation="op"),  # refused alone
            postings.Posting.settle(first.pk, hold.hold_id, key=key(), amount=10),
            postings.Posting.refund(second.pk, "j-1", 4, key=key(), operation="refund"),
            postings.Posting.release(first.pk, hold.hold_id, key=key()),
            postings.Posting.debit(second.pk, key="used-before", amount=6, operation="op"),
            postings.Posting.settle(first.pk, 10**12, key=key(), amount=1),
            postings.Posting.debit(first.pk, key=key(), operation="no_such_price", quantity=1),
        ]
    )
    kinds = [type(result).__name__ for result in results]
    assert kinds == [
        "Receipt",
        "InsufficientCredits",
        "Receipt",
        "Receipt",
        "HoldNotPending",
        "IdempotencyConflict",
        "HoldNotFound",
        "UnknownOperation",
    ]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.balance, first.held) == (90, 0)
    assert second.balance == 50 - 5 - 20 + 4
    assert Hold.objects.get(pk=hold.hold_id).status == HoldStatus.SETTLED
    assert_clean(first)
    assert_clean(second)


@pytest.mark.django_db
def test_a_retried_batch_replays_each_posting() -> None:
    account = new_account(100)
    batch = [postings.Posting.debit(account.pk, key=f"b-{n}", amount=30, operation="op") for n in range(4)]
    first = postings.post_batch(batch)
    again = postings.post_batch(batch)
    assert first[:3] == again[:3]
    assert [type(r).__name__ for r in first] == ["Receipt"] * 3 + ["InsufficientCredits"]
    assert str(first[3]) == str(again[3]) == "This needs 30 credits; 10 are available."
    assert Entry.objects.filter(account=account, kind=EntryKind.DEBIT).count() == 3


@pytest.mark.django_db(transaction=True)
def test_batches_locking_the_same_accounts_in_opposite_orders_never_deadlock() -> None:
    accounts = [new_account(10_000) for _ in range(4)]

    def batch(order: list[Account]) -> list[postings.Receipt | postings.LedgerError]:
        return postings.post_batch(
            [
                postings.Posting.debit(a.pk, key=key(), amount=1, operation="op")
                for _ in range(25)
                for a in order
            ]
        )

    results = in_threads(
        [functools.partial(batch, accounts if n % 2 else accounts[::-1]) for n in range(16)], workers=16
    )
    assert all(isinstance(r, list) for r in results), results
    for account in accounts:
        account.refresh_from_db()
        assert account.balance == 10_000 - 16 * 25
        assert_clean(account)


@pytest.mark.django_db
def test_a_batch_inside_a_transaction_rolls_back_with_it() -> None:
    account = new_account(100)
    with pytest.raises(RuntimeError), transaction.atomic():
        postings.post_batch([postings.Posting.debit(account.pk, key=key(), amount=30, operation="op")])
        raise RuntimeError("the caller fails")
    account.refresh_from_db()
    assert account.balance == 100
    assert_clean(account)
