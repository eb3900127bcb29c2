"""Bench: the month close for many organizations on real Celery workers (Redis).

Data is made with bulk SQL: per organization a Standard subscription, the month's renewal
and a debit a day for 28 days, with the lots and daily rollups the ledger would have
written. The close is the real one (the hourly fan-out, one task per batch of
organizations, each batch in one transaction). The baseline is a minimal raw-SQL close per
organization (lock the account, insert the statement and its days from the rollups)
measured in the same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
TARGET_S = 60.0
QUEUE = "bench-close"  # apart from the tests' queue on the same Redis database
# Pool processes per worker (BENCH_CLOSE_CONCURRENCY): one, so "two workers" is twice the processes.
CONCURRENCY = int(os.environ.get("BENCH_CLOSE_CONCURRENCY", 1))
FAN_OUT_SECONDS: dict[tuple[int, int], float] = {}


def _period() -> tuple[dt.date, dt.datetime]:
    from django.utils import timezone

    from ledger.periods import add_months, current_period, month_start

    period = add_months(current_period(timezone.now(), dt.UTC), -1)
    return period, month_start(period, dt.UTC)


def make_orgs(prefix: str, count: int) -> None:
    """``count`` Standard organizations with a month of activity, in a few SQL statements."""
    from django.db import connection, transaction

    from billing.demo import seed_catalog
    from billing.models import Plan

    seed_catalog()
    plan = Plan.objects.get(slug="standard")
    period, start = _period()
    expires = (start + dt.timedelta(days=40)).replace(day=1)
    params = {"prefix": prefix, "n": count, "start": start, "day": period, "expires": expires,
              "plan": plan.pk}
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("""
            INSERT INTO ledger_account (slug, time_zone, unlimited, balance, held, created_at)
            SELECT %(prefix)s || g, 'UTC', false, 10000 - 200 * 28, 0, %(start)s
            FROM generate_series(1, %(n)s) g""", params)
        cur.execute("""
            INSERT INTO billing_organization (name, slug, time_zone, account_id, storage_bytes,
                                              deployments, created_at)
            SELECT a.slug, a.slug, 'UTC', a.id, 0, 0, %(start)s FROM ledger_account a
            WHERE a.slug LIKE %(prefix)s || '%%'""", params)
        cur.execute("""
            INSERT INTO billing_subscription (organization_id, plan_id, started_at)
            SELECT o.id, %(plan)s, %(start)s FROM billing_organization o
            WHERE o.slug LIKE %(prefix)s || '%%'""", params)
        cur.execute("""
            INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after,
                                      refund_of_expired, memo, created_at, local_date)
            SELECT a.id, 'top_up', 'subscription_renewal', 10000, 10000, 0, '', %(start)s, %(day)s
            FROM ledger_account a WHERE a.slug LIKE %(prefix)s || '%%'""", params)
        cur.execute("""
            INSERT INTO ledger_lot (account_id, source, amount, remaining, expires_at, expired,
                                    entry_id, created_at)
            SELECT e.account_id, 'subscription', 10000, 10000 - 200 * 28, %(expires)s, false,
                   e.id, %(start)s
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
            WHERE a.slug LIKE %(prefix)s || '%%'""", params)
        cur.execute("""
            INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after,
                                      quantity, refund_of_expired, memo, created_at, local_date)
            SELECT a.id, 'debit', 'training_a10g_per_minute', -200, 10000 - 200 * d, 20, 0, '',
                   %(start)s + make_interval(days => d - 1, hours => 12), %(day)s + (d - 1)
            FROM ledger_account a CROSS JOIN generate_series(1, 28) d
            WHERE a.slug LIKE %(prefix)s || '%%' ORDER BY a.id, d""", params)
        cur.execute("""
            INSERT INTO ledger_dailyrollup (account_id, date, top_ups, credits_used, refunds,
                                            expired, balance)
            SELECT a.id, %(day)s + (d - 1), CASE WHEN d = 1 THEN 10000 ELSE 0 END, 200, 0, 0,
                   10000 - 200 * d
            FROM ledger_account a CROSS JOIN generate_series(1, 28) d
            WHERE a.slug LIKE %(prefix)s || '%%'""", params)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")


def baseline_close(prefix: str) -> tuple[int, float]:
    """A minimal close in raw SQL, one transaction per organization; its statements are
    removed afterwards so the real close still has the month to do."""
    from django.db import connection, transaction

    period, start = _period()
    end = (start + dt.timedelta(days=40)).replace(day=1)
    with connection.cursor() as cur:
        cur.execute("SELECT id FROM ledger_account WHERE slug LIKE %s || '%%' ORDER BY id", [prefix])
        ids = [row[0] for row in cur.fetchall()]
    began = time.perf_counter()
    for account_id in ids:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT balance FROM ledger_account WHERE id = %s FOR UPDATE", [account_id])
            cur.execute("""
                INSERT INTO ledger_statement (account_id, period, starts_at, ends_at,
                    brought_forward, purchased, consumed, refunded, expired, closing_balance,
                    created_at)
                SELECT %s, %s, %s, %s, 0, sum(top_ups), sum(credits_used), sum(refunds),
                       sum(expired), (array_agg(balance ORDER BY date DESC))[1], now()
                FROM ledger_dailyrollup WHERE account_id = %s AND date >= %s AND date < %s
                RETURNING id""", [account_id, period, start, end, account_id, period, end.date()])
            statement_id = cur.fetchone()[0]
            cur.execute("""
                INSERT INTO ledger_statementday (statement_id, date, top_ups, credits_used,
                                                 refunds, expired, balance)
                SELECT %s, date, top_ups, credits_used, refunds, expired, balance
                FROM ledger_dailyrollup WHERE account_id = %s AND date >= %s AND date < %s""",
                        [statement_id, account_id, period, end.date()])
    elapsed = time.perf_counter() - began
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM ledger_statementday WHERE statement_id IN (SELECT s.id FROM "
                    "ledger_statement s JOIN ledger_account a ON a.id = s.account_id "
                    "WHERE a.slug LIKE %s || '%%')", [prefix])
        cur.execute("DELETE FROM ledger_statement WHERE account_id IN (SELECT id FROM "
                    "ledger_account WHERE slug LIKE %s || '%%')", [prefix])
    return len(ids), elapsed


@contextlib.contextmanager
def workers(count: int) -> Iterator[None]:
    """``count`` real workers (``CONCURRENCY`` pool processes each) on the bench database."""
    from billing.celery import app

    env = {**os.environ, "REDIS_URL": REDIS_URL, "DB_CONN_MAX_AGE": "600", "LOG_LEVEL": "WARNING",
           "CELERY_QUEUE": QUEUE}
    celery = str(Path(sys.executable).parent / "celery")
    procs = [
        subprocess.Popen(
            [celery, "-A", "billing", "worker", "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING",
             "--prefetch-multiplier", "4",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--hostname", f"bench-close-{n}@localhost"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for n in range(count)
    ]
    try:
        names = [f"bench-close-{n}@localhost" for n in range(count)]
        deadline = time.monotonic() + 60
        while len(app.control.ping(destination=names, timeout=0.5)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("bench workers did not start")
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def close_on_workers(prefix: str, count: int, worker_count: int) -> float:
    """Seconds from the hourly fan-out to the last of ``count`` statements, on workers."""
    from billing import tasks
    from billing.celery import app
    from ledger.models import Statement

    app.control.purge()
    already = Statement.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    with workers(worker_count):
        began = time.perf_counter()
        fanned = tasks.close_due_months.delay().get(timeout=600)
        assert fanned == count, (fanned, count)
        FAN_OUT_SECONDS[(count, worker_count)] = time.perf_counter() - began
        # A cheap poll (an index range on the primary key), so it barely loads the database.
        while Statement.objects.filter(pk__gt=already).count() < count:
            time.sleep(0.5)
        return time.perf_counter() - began


def main() -> None:
    from django.conf import settings

    # A SIGTERM (a timeout) unwinds like Ctrl-C, so the worker processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    settings.CELERY_BROKER_URL = REDIS_URL
    from billing.celery import app

    app.conf.broker_url = REDIS_URL
    app.conf.result_backend = REDIS_URL
    app.conf.task_default_queue = QUEUE
    small, large = int(os.environ.get("BENCH_CLOSE_SMALL", 1_000)), int(
        os.environ.get("BENCH_CLOSE_LARGE", 10_000))
    rows = []
    make_orgs("bench-a-", small)
    n, base_small = baseline_close("bench-a-")
    small_2w = close_on_workers("bench-a-", small, 2)
    make_orgs("bench-b-", large)
    n_large, base_large = baseline_close("bench-b-")
    large_1w = close_on_workers("bench-b-", large, 1)
    make_orgs("bench-c-", large)
    large_2w = close_on_workers("bench-c-", large, 2)

    def ms(seconds: float, orgs: int) -> str:
        return f"{seconds / orgs * 1000:.2f} ms/org"

    rows.append((f"close {large:,} orgs, 1 worker", f"{large_1w:.1f} s", f"{base_large:.1f} s",
                 f"{large_1w / base_large:.1f}x", "-"))
    rows.append((f"close {large:,} orgs, 2 workers", f"{large_2w:.1f} s", f"{base_large:.1f} s",
                 f"{large_2w / base_large:.1f}x", f"< {TARGET_S:.0f} s"))
    rows.append((f"per org at {small:,} orgs, 2 workers", ms(small_2w, small), ms(base_small, n),
                 f"{small_2w / small / (base_small / n):.1f}x", "flat"))
    rows.append((f"per org at {large:,} orgs, 2 workers", ms(large_2w, large),
                 ms(base_large, n_large), f"{large_2w / large / (base_large / n_large):.1f}x", "flat"))
    from bench.common import print_table

    print_table("Month close on Celery workers (Redis), baseline: raw-SQL close per org, 1 process",
                rows)
    verdict = "met" if large_2w < TARGET_S else "MISSED"
    flat = (large_2w / large) / (small_2w / small)
    print(f"  target under {TARGET_S:.0f} s with two workers: {verdict}; per-org cost at "
          f"{large:,} vs {small:,} orgs: {flat:.2f}x")
    fan_outs = ", ".join(f"{orgs:,} orgs / {n} worker(s) {seconds:.1f} s"
                         for (orgs, n), seconds in FAN_OUT_SECONDS.items())
    print(f"  of which the hourly fan-out (finding due orgs, enqueueing their batches): {fan_outs}")
