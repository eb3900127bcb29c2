"""The month close and the stale-hold release on a real Celery worker process, against
real Redis and the real PostgreSQL test database: the hourly fan-out, a worker killed
with SIGKILL in the middle of a close, two closes at once, and a rerun."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.db import connection

from billing import tasks
from billing.models import Invoice, Organization
from ledger import postings
from ledger.checks import ledger_breaks
from ledger.models import Account, Entry, Hold, HoldStatus, Statement
from ledger.periods import month_start
from tests.close_helpers import (
    backdate,
    celery_worker,
    database_url,
    past_months,
    post_month,
    statements_digest,
    wait_for,
)
from tests.factories import make_org

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def _twin(slug: str, plan: str = "standard", time_zone: str = "Europe/Berlin") -> Organization:
    """An organization with two months of history; twins with the same plan and zone
    have identical ledgers."""
    org = make_org(plan, slug=slug, time_zone=time_zone)
    periods = past_months(org)
    backdate(org, month_start(periods[0], org.tzinfo))
    for period in periods:
        post_month(org, period, tag="")
    return org


def _snapshot() -> tuple[int, int, int, int]:
    return (
        Entry.objects.count(),
        Statement.objects.count(),
        Invoice.objects.count(),
        sum(Account.objects.values_list("balance", flat=True)),
    )


def test_hourly_fan_out_closes_each_organization_on_a_worker() -> None:
    orgs = [
        _twin("fan-standard"),
        _twin("fan-pro", "professional", "America/New_York"),
        _twin("fan-tokyo", "standard", "Asia/Tokyo"),
    ]
    with celery_worker(concurrency=2):
        assert tasks.close_due_months.delay().get(timeout=60) == 3
        wait_for(lambda: Statement.objects.count() == 6, timeout=60)
        assert tasks.close_due_months.delay().get(timeout=60) == 0  # nothing left to close
    for org in orgs:
        periods = list(
            Statement.objects.filter(account=org.account).order_by("pk").values_list("period", flat=True)
        )
        assert periods == past_months(org)  # oldest first
        assert org.invoices.count() == 2
    assert ledger_breaks() == []


def test_worker_killed_mid_close_then_rerun_gives_identical_statements() -> None:
    calm, crashed = _twin("twin-calm"), _twin("twin-crashed")
    assert statements_digest(calm) == statements_digest(crashed)  # nothing closed yet
    with celery_worker() as worker:
        assert tasks.close_organization_months.delay(calm.pk).get(timeout=60) == [
            f"{p:%Y-%m}" for p in past_months(calm)
        ]
        before = _snapshot()
        # Another session holds the invoice table, so the close stops half-way through
        # its transaction: lots expired and the statement written, the invoice waiting.
        with psycopg.connect(database_url()) as blocker:
            blocker.execute("LOCK TABLE billing_invoice IN EXCLUSIVE MODE")
            tasks.close_organization_months.delay(crashed.pk)
            wait_for(lambda: _waiting_on("billing_invoice"), timeout=30)
            worker.kill()
            blocker.rollback()
    connection.close()
    wait_for(lambda: not _other_sessions(), timeout=30)
    assert _snapshot() == before  # the killed close left nothing behind
    assert not Statement.objects.filter(account=crashed.account).exists()
    with celery_worker():
        assert tasks.close_due_months.delay().get(timeout=60) == 1  # the job, run again
        wait_for(lambda: Statement.objects.filter(account=crashed.account).count() == 2)
    assert statements_digest(crashed) == statements_digest(calm)
    assert ledger_breaks() == []


def test_two_closes_at_once_make_one_statement_and_a_rerun_changes_nothing() -> None:
    org = _twin("twice")
    with celery_worker(concurrency=2):
        first = tasks.close_organization_months.delay(org.pk)
        second = tasks.close_organization_months.delay(org.pk)
        closed = first.get(timeout=60) + second.get(timeout=60)
        # Each month is closed by exactly one of them (they may share the months).
        assert sorted(closed) == [f"{p:%Y-%m}" for p in past_months(org)]
        digest, snapshot = statements_digest(org), _snapshot()
        assert tasks.close_organization_months.delay(org.pk).get(timeout=60) == []
    assert (statements_digest(org), _snapshot()) == (digest, snapshot)
    assert Statement.objects.filter(account=org.account).count() == 2
    renewals = Entry.objects.filter(account=org.account, operation="subscription_renewal")
    assert renewals.count() == 3  # two months posted, and the current one granted once
    assert ledger_breaks() == []


def test_stale_holds_are_released_once_by_the_periodic_task() -> None:
    org = make_org("standard", credits=5_000)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    for n in range(6):
        postings.reserve(
            org.account, 500, key=f"hold-{n}", operation="training_a10g_per_minute", now=long_ago
        )
    fresh = postings.reserve(org.account, 400, key="fresh", operation="training_a10g_per_minute")
    assert fresh.hold_id is not None
    org.account.refresh_from_db()
    assert org.account.available == 5_000 - 3_400
    with celery_worker(concurrency=2):
        runs = [tasks.release_stale_holds.delay() for _ in range(3)]
        assert sum(run.get(timeout=60) for run in runs) == 6
    org.account.refresh_from_db()
    assert org.account.held == 400 and org.account.available == 4_600
    assert Hold.objects.filter(status=HoldStatus.EXPIRED).count() == 6
    assert Hold.objects.get(pk=fresh.hold_id).status == HoldStatus.PENDING
    assert ledger_breaks() == []


def _waiting_on(table: str) -> bool:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = %s AND NOT l.granted",
            [table],
        ).fetchone()
    return bool(row and row[0])


def _other_sessions() -> int:
    """Sessions still open on the test database besides this probe (the killed worker's
    backend ends once it finds its client gone, rolling back its transaction)."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        ).fetchone()
    return int(row[0]) if row else 0
