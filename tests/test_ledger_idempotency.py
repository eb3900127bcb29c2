"""One idempotency key, one posting: retries replay, changed parameters conflict."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, transaction

from ledger import postings
from ledger.models import Account, Entry, EntryKind, IdempotencyRecord, Job
from tests.ledger_helpers import assert_clean, in_threads, new_account, top_up

pytestmark = pytest.mark.ledger


@pytest.mark.django_db(transaction=True)
def test_one_key_sent_ten_times_at_once_posts_once_with_ten_identical_results() -> None:
    account = new_account(1_000)
    job = postings.JobInfo("job-1", "train", "proj", "ada", "a100")
    results = in_threads(
        [
            lambda: postings.debit(
                account, 120, key="same-key", operation="training_a100_per_minute", job=job, quantity=2
            )
        ]
        * 10,
        workers=10,
    )
    assert all(isinstance(r, postings.Receipt) for r in results), results
    assert len(set(results)) == 1
    assert Entry.objects.filter(account=account, kind=EntryKind.DEBIT).count() == 1
    account.refresh_from_db()
    assert account.balance == 880
    assert_clean(account)


@pytest.mark.django_db
def test_same_key_with_another_amount_is_a_conflict_naming_the_field() -> None:
    account = new_account(1_000)
    postings.debit(account, 100, key="k", operation="image_inference")
    with pytest.raises(postings.IdempotencyConflict) as conflict:
        postings.debit(account, 150, key="k", operation="image_inference")
    assert conflict.value.fields == ["amount"]
    account.refresh_from_db()
    assert account.balance == 900


@pytest.mark.django_db
def test_same_key_for_another_action_is_a_conflict() -> None:
    account = new_account(1_000)
    postings.debit(account, 100, key="k", operation="image_inference")
    with pytest.raises(postings.IdempotencyConflict) as conflict:
        postings.reserve(account, 100, key="k", operation="image_inference")
    assert conflict.value.fields[0] == "action"


@pytest.mark.django_db
def test_refused_then_top_up_then_same_key_succeeds() -> None:
    account = new_account(50)
    with pytest.raises(postings.InsufficientCredits) as refused:
        postings.debit(account, 80, key="retry-me", operation="image_inference")
    assert (refused.value.required, refused.value.remaining) == (80, 50)
    assert refused.value.upgrade_url.endswith(f"/orgs/{account.slug}/billing/")
    assert not IdempotencyRecord.objects.filter(account=account, key="retry-me").exists()
    top_up(account, 100)
    receipt = postings.debit(account, 80, key="retry-me", operation="image_inference")
    assert receipt.balance == 70
    assert_clean(account)


@pytest.mark.django_db
def test_refused_posting_changes_nothing() -> None:
    account = new_account(10)
    before = list(Entry.objects.filter(account=account).values_list("id", flat=True))
    with pytest.raises(postings.InsufficientCredits):
        postings.reserve(account, 11, key="r", operation="op")
    account.refresh_from_db()
    assert (account.balance, account.held) == (10, 0)
    assert list(Entry.objects.filter(account=account).values_list("id", flat=True)) == before


@pytest.mark.django_db
def test_bad_amounts_are_refused_before_anything_is_stored() -> None:
    account = new_account(10)
    for amount in (0, -5):
        with pytest.raises(postings.InvalidPosting):
            postings.debit(account, amount, key=f"bad-{amount}", operation="op")
    with pytest.raises(postings.InvalidPosting):
        postings.debit(account, 1, key="", operation="op")
    assert not IdempotencyRecord.objects.filter(account=account).exclude(key__startswith="top-up").exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_is_made_once_and_keeps_its_first_description() -> None:
    account = new_account(1_000)
    postings.debit(account, 10, key="a", operation="op", job=postings.JobInfo("j-1", "first run"))
    postings.debit(account, 10, key="b", operation="op", job=postings.JobInfo("j-1", "renamed"))
    jobs = list(Job.objects.filter(account=account).values_list("external_id", "name"))
    assert jobs == [("j-1", "first run")]
    assert Entry.objects.filter(account=account, job__external_id="j-1").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_refused_or_conflicting_posting_makes_no_job() -> None:
    account = new_account(100)
    postings.debit(account, 10, key="k", operation="op", job=postings.JobInfo("j-1"))
    with pytest.raises(postings.IdempotencyConflict) as conflict:
        postings.debit(account, 10, key="k", operation="op", job=postings.JobInfo("j-2"))
    assert conflict.value.fields == ["job"]
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(account, 500, key="too-much", operation="op", job=postings.JobInfo("j-3"))
    assert list(Job.objects.filter(account=account).values_list("external_id", flat=True)) == ["j-1"]
    assert postings.debit(account, 10, key="k", operation="op", job=postings.JobInfo("j-1")).balance == 90


@pytest.mark.django_db(transaction=True)
def test_a_posting_inside_the_callers_transaction_rolls_back_with_it() -> None:
    account = new_account(100)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert postings.debit(account, 10, key="inside", operation="op").balance == 90
        raise RuntimeError("the caller fails after the debit")
    account.refresh_from_db()
    assert account.balance == 100
    assert not IdempotencyRecord.objects.filter(account=account, key="inside").exists()
    assert postings.debit(account, 10, key="inside", operation="op").balance == 90
    assert_clean(account)


def _committed(slug: str) -> bool:
    """Whether a second connection sees the account: only committed writes show there."""
    return bool(in_threads([lambda: Account.objects.filter(slug=slug).exists()], workers=1)[0])


def _write_outside_any_posting() -> str:
    slug = f"later-{uuid.uuid4().hex[:8]}"
    Account.objects.create(slug=slug)
    return slug


@pytest.mark.django_db(transaction=True)
def test_a_refused_posting_leaves_no_transaction_open_behind_it() -> None:
    """What the connection does next, outside any posting, is committed as usual: a
    refused posting's transaction is rolled back, not left open around later writes."""
    account = new_account(100)
    with pytest.raises(postings.InsufficientCredits):
        postings.debit(account, 500, key="too-much", operation="op", job=postings.JobInfo("j-1"))
    assert _committed(_write_outside_any_posting())
    postings.debit(account, 10, key="ok", operation="op")
    with pytest.raises(postings.IdempotencyConflict):
        postings.debit(account, 20, key="ok", operation="op")
    assert _committed(_write_outside_any_posting())
    assert not Job.objects.filter(account=account).exists()
    assert_clean(account)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("job", "operation"),
    [
        (postings.JobInfo("j-1", name="x" * 201), "op"),  # fails as it writes the job
        (None, None),  # fails as it writes the entry
    ],
    ids=["failing-job", "failing-entry"],
)
def test_a_posting_whose_statement_fails_stores_nothing_and_the_connection_goes_on(
    job: postings.JobInfo | None, operation: str
) -> None:
    account = new_account(100)
    with pytest.raises(DatabaseError):
        postings.debit(account, 10, key="fails", operation=operation, job=job)
    assert not IdempotencyRecord.objects.filter(account=account, key="fails").exists()
    assert not Job.objects.filter(account=account).exists()
    assert _committed(_write_outside_any_posting())
    assert postings.debit(account, 10, key="next", operation="op").balance == 90
    assert_clean(account)
