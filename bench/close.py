"""Bench: the month close of many organizations on real Celery workers (Redis).

Target (issue 15): the month close of 100,000 organizations with 2 workers in under 3
minutes, and per organization no slower than at 1,000. `make bench` closes 1,000 and
10,000 organizations (BENCH_CLOSE_SMALL, BENCH_CLOSE_LARGE) and says what the 10,000's
pace would make of 100,000; the target itself is measured by

    BENCH_CLOSE_LARGE=100000 make bench

which takes six to ten minutes on this 2-core machine (two to four of them making the data).

Data is made with bulk SQL: per organization a Standard subscription, last month's renewal
(10,000 credits expiring at the start of this month) and a debit a day for 28 days (20
minutes of A10G through the API), each row exactly what the posting functions write for
those postings: entries, the lot and its draws, daily rollups and idempotency records.
`check_bulk_data` proves it before anything is timed: one organization made in bulk and one
posted through `ledger.postings` with the same moments must hold the same rows, and
`check_ledger`'s invariants hold on a sample of the bench's accounts before and after the
close.

The close is the real one: the hourly fan-out (`close_due_months`), one task per batch of
organizations, each batch in one transaction that expires the renewal's leftover credits,
freezes the statement with its days, issues the invoice and grants this month's credits.
The baseline is a minimal close in raw SQL, one process, one transaction per organization
(lock the account, insert the statement and its days from the rollups), measured on the
same organizations in the same run (on up to 10,000 of them, BENCH_CLOSE_BASELINE).

A second table says where the CPU went per organization closed: the workers, PostgreSQL,
Redis, the rest of the machine (another load on a shared machine shows there), beside the
wall time times the cores, which is all the close could have had.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
TARGET_S = 180.0  # for the close of 100,000 organizations with two workers
QUEUE = "bench-close"  # apart from the tests' queue on the same Redis database
# Pool processes per worker (BENCH_CLOSE_CONCURRENCY): one, so "two workers" is two processes.
CONCURRENCY = int(os.environ.get("BENCH_CLOSE_CONCURRENCY", 1))
WORKERS = 2
SMALL = int(os.environ.get("BENCH_CLOSE_SMALL", 1_000))
LARGE = int(os.environ.get("BENCH_CLOSE_LARGE", 10_000))
# The baseline closes up to this many organizations of a size (spread over its ids), and
# its time is scaled to them all: it is a per-organization figure.
BASELINE_SAMPLE = int(os.environ.get("BENCH_CLOSE_BASELINE", 10_000))
DAYS = 28  # a debit a day
DEBIT_QUANTITY = 20  # minutes of training_a10g_per_minute (10 credits a minute)
DEBIT = 200
CREDITS = 10_000  # the Standard plan's monthly credits
SAMPLE = 30  # accounts checked as check_ledger checks them, per size
FIGURES = (
    "top_ups_subscription, top_ups_purchase, top_ups_promotional, top_ups_adjustment, "
    "debits, refunds, expired, adjustments"
)


def _period() -> tuple[dt.date, dt.datetime, dt.datetime]:
    """Last month (UTC, the bench organizations' zone): its first day, start and end."""
    from django.utils import timezone

    from ledger.periods import add_months, current_period, month_bounds

    period = add_months(current_period(timezone.now(), dt.UTC), -1)
    start, end = month_bounds(period, dt.UTC)
    return period, start, end


def make_orgs(prefix: str, count: int) -> None:
    """``count`` Standard organizations with last month's renewal and a debit a day, written
    in a few INSERT ... SELECT statements as the posting functions would have written them
    (``check_bulk_data`` compares the two)."""
    from django.db import connection, transaction

    from billing.demo import seed_catalog
    from billing.models import Plan

    seed_catalog()
    plan = Plan.objects.get(slug="standard")
    period, start, end = _period()
    params = {
        "prefix": prefix,
        "n": count,
        "start": start,
        "day": period,
        "expires": end,  # Standard credits expire at the end of their month
        "plan": plan.pk,
        "credits": CREDITS,
        "debit": DEBIT,
        "quantity": DEBIT_QUANTITY,
        "days": DAYS,
        "key": f"subscription_renewal:{period:%Y-%m}",
        "memo": f"{plan.name} plan credits for {period:%B %Y}",
    }
    mine = "a.slug LIKE %(prefix)s || '%%'"
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '256MB'")  # the ORDER BYs sort millions of rows
        cur.execute(
            """
            INSERT INTO ledger_account (slug, time_zone, next_time_zone, open_from, unlimited, balance,
                                        held, notify, created_at)
            SELECT %(prefix)s || g, 'UTC', '', NULL, false, %(credits)s - %(debit)s * %(days)s, 0, false,
                   %(start)s
            FROM generate_series(1, %(n)s) g""",
            params,
        )
        cur.execute(
            f"""
            INSERT INTO billing_organization (name, slug, time_zone, account_id, storage_bytes,
                                              deployments, created_at)
            SELECT a.slug, a.slug, 'UTC', a.id, 0, 0, %(start)s FROM ledger_account a WHERE {mine}""",
            params,
        )
        cur.execute(
            """
            INSERT INTO billing_subscription (organization_id, plan_id, started_at)
            SELECT o.id, %(plan)s, %(start)s FROM billing_organization o
            WHERE o.slug LIKE %(prefix)s || '%%'""",
            params,
        )
        # ledger.top_up: the renewal's entry, its lot, its day and its idempotency record.
        cur.execute(
            f"""
            INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, quantity,
                                      job_id, hold_id, refund_of_expired, memo, created_at, local_date)
            SELECT a.id, 'top_up', 'subscription_renewal', %(credits)s, %(credits)s, NULL, NULL, NULL,
                   0, %(memo)s, %(start)s, %(day)s
            FROM ledger_account a WHERE {mine} ORDER BY a.id""",
            params,
        )
        cur.execute(
            f"""
            INSERT INTO ledger_lot (account_id, source, amount, remaining, expires_at, expired,
                                    entry_id, created_at)
            SELECT e.account_id, 'subscription', %(credits)s, %(credits)s - %(debit)s * %(days)s,
                   %(expires)s, false, e.id, %(start)s
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
            WHERE {mine} AND e.kind = 'top_up' ORDER BY e.account_id""",
            params,
        )
        cur.execute(
            f"""
            INSERT INTO ledger_idempotencyrecord (account_id, key_space, key, action, params, result,
                                                  created_at)
            SELECT e.account_id, 'tally', %(key)s, 'top_up',
                   jsonb_build_object('amount', %(credits)s::bigint, 'source', 'subscription',
                                      'operation', 'subscription_renewal',
                                      'expires_at', %(expires)s::timestamptz),
                   jsonb_build_object('action', 'top_up', 'amount', %(credits)s::bigint,
                                      'balance', %(credits)s::bigint, 'held', 0::bigint,
                                      'available', %(credits)s::bigint,
                                      'created_at', %(start)s::timestamptz, 'entry_id', e.id,
                                      'hold_id', NULL::bigint, 'forfeited', 0::bigint),
                   %(start)s
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
            WHERE {mine} AND e.kind = 'top_up' ORDER BY e.account_id""",
            params,
        )
        # ledger.debit, once a day at noon: the entry, its draw on the lot, its record.
        cur.execute(
            f"""
            INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, quantity,
                                      job_id, hold_id, refund_of_expired, memo, created_at, local_date)
            SELECT a.id, 'debit', 'training_a10g_per_minute', -%(debit)s, %(credits)s - %(debit)s * d,
                   %(quantity)s, NULL, NULL, 0, '',
                   %(start)s + make_interval(days => d - 1, hours => 12), %(day)s + (d - 1)
            FROM ledger_account a CROSS JOIN generate_series(1, %(days)s) d
            WHERE {mine} ORDER BY a.id, d""",
            params,
        )
        cur.execute(
            f"""
            INSERT INTO ledger_lotdraw (entry_id, lot_id, amount)
            SELECT e.id, l.id, -%(debit)s
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
                 JOIN ledger_lot l ON l.account_id = e.account_id
            WHERE {mine} AND e.kind = 'debit' ORDER BY e.id""",
            params,
        )
        cur.execute(
            f"""
            INSERT INTO ledger_idempotencyrecord (account_id, key_space, key, action, params, result,
                                                  created_at)
            SELECT e.account_id, 'client', 'usage-' || e.local_date, 'debit',
                   jsonb_build_object('amount', %(debit)s::bigint, 'operation', e.operation,
                                      'quantity', e.quantity, 'job', NULL::jsonb),
                   jsonb_build_object('action', 'debit', 'amount', e.amount, 'balance', e.balance_after,
                                      'held', 0::bigint, 'available', e.balance_after,
                                      'created_at', e.created_at, 'entry_id', e.id,
                                      'hold_id', NULL::bigint, 'forfeited', 0::bigint),
                   e.created_at
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
            WHERE {mine} AND e.kind = 'debit' ORDER BY e.id""",
            params,
        )
        # ledger.add_to_groups: the debits have no job; their class is the price table's.
        cur.execute(
            f"""
            INSERT INTO ledger_groupday (account_id, date, project, "user", resource_class, operation,
                                         debits, refunds)
            SELECT e.account_id, e.local_date, '', '', coalesce(p.resource_class, ''), e.operation,
                   -sum(e.amount), 0
            FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
            LEFT JOIN ledger_price p ON p.operation = e.operation
            WHERE {mine} AND e.kind = 'debit'
            GROUP BY e.account_id, e.local_date, p.resource_class, e.operation ORDER BY 1, 2""",
            params,
        )
        # ledger.add_to_day: the renewal and the first debit share the first day.
        cur.execute(
            f"""
            INSERT INTO ledger_dailyrollup (account_id, date, {FIGURES}, balance)
            SELECT a.id, %(day)s + (d - 1), CASE WHEN d = 1 THEN %(credits)s ELSE 0 END, 0, 0, 0,
                   %(debit)s, 0, 0, 0, %(credits)s - %(debit)s * d
            FROM ledger_account a CROSS JOIN generate_series(1, %(days)s) d
            WHERE {mine} ORDER BY a.id, d""",
            params,
        )


def post_orgs(prefix: str, count: int) -> None:
    """The same organizations as ``make_orgs``, posted one posting at a time through the
    ledger: what the bulk data must be identical to."""
    from billing.demo import seed_catalog
    from billing.models import Organization, Plan, Subscription
    from ledger import postings
    from ledger.models import Account, KeySpace

    seed_catalog()
    plan = Plan.objects.get(slug="standard")
    period, start, _ = _period()
    for n in range(1, count + 1):
        org = Organization.objects.create(name=f"{prefix}{n}", slug=f"{prefix}{n}")
        Account.objects.filter(pk=org.account_id).update(created_at=start)
        Organization.objects.filter(pk=org.pk).update(created_at=start)
        subscription = Subscription.objects.create(organization=org, plan=plan, started_at=start)
        subscription.renew(period, now=start)
        for d in range(1, DAYS + 1):
            moment = start + dt.timedelta(days=d - 1, hours=12)
            postings.debit(
                org.account,
                key=f"usage-{moment.date()}",
                key_space=KeySpace.CLIENT,
                operation="training_a10g_per_minute",
                quantity=DEBIT_QUANTITY,
                now=moment,
            )


def ledger_rows(account_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every ledger row of the account, without the ids that differ between two accounts
    (an entry or lot referred to by its place among the account's)."""
    from django.db import connection

    tables = {
        "account": "SELECT * FROM ledger_account WHERE id = %s",
        "entry": "SELECT * FROM ledger_entry WHERE account_id = %s ORDER BY id",
        "lot": "SELECT * FROM ledger_lot WHERE account_id = %s ORDER BY id",
        "lotdraw": "SELECT d.* FROM ledger_lotdraw d JOIN ledger_entry e ON e.id = d.entry_id "
        "WHERE e.account_id = %s ORDER BY d.id",
        "dailyrollup": "SELECT * FROM ledger_dailyrollup WHERE account_id = %s ORDER BY date",
        "idempotencyrecord": "SELECT * FROM ledger_idempotencyrecord WHERE account_id = %s ORDER BY id",
        "job": "SELECT * FROM ledger_job WHERE account_id = %s ORDER BY id",
        "hold": "SELECT * FROM ledger_hold WHERE account_id = %s ORDER BY id",
        "groupday": "SELECT * FROM ledger_groupday WHERE account_id = %s "
        'ORDER BY date, project, "user", resource_class, operation',
        "groupmonth": "SELECT * FROM ledger_groupmonth WHERE account_id = %s ORDER BY month, dimension, name",
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    with connection.cursor() as cur:
        for table, sql in tables.items():
            cur.execute(sql, [account_id])
            names = [column.name for column in cur.description]
            rows[table] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    place = {table: {row["id"]: n for n, row in enumerate(rows[table])} for table in ("entry", "lot", "job")}
    for table_rows in rows.values():
        for row in table_rows:
            for column in ("id", "account_id", "slug"):
                row.pop(column, None)
            for column in ("entry_id", "lot_id", "job_id"):
                if row.get(column) is not None:
                    row[column] = place[column.removesuffix("_id")][row[column]]
            for column in ("params", "result"):  # jsonb, read as text
                if isinstance(row.get(column), str):
                    row[column] = json.loads(row[column])
            if row.get("result", {}).get("entry_id") is not None:
                row["result"]["entry_id"] = place["entry"][row["result"]["entry_id"]]
    return rows


def check_bulk_data() -> None:
    """One organization made by ``make_orgs`` and one posted by ``post_orgs`` hold the same
    ledger rows, and both pass ``check_ledger``; all rolled back afterwards."""
    from django.db import transaction

    from ledger.checks import account_breaks
    from ledger.models import Account

    with transaction.atomic():
        make_orgs("bench-check-bulk-", 1)
        post_orgs("bench-check-posted-", 1)
        bulk, posted = (
            Account.objects.get(slug=slug) for slug in ("bench-check-bulk-1", "bench-check-posted-1")
        )
        made, wanted = ledger_rows(bulk.pk), ledger_rows(posted.pk)
        differ = [table for table in wanted if made[table] != wanted[table]]
        breaks = account_breaks(bulk) + account_breaks(posted)
        transaction.set_rollback(True)
    if differ:
        table = differ[0]
        bulk_row, posted_row = (
            next((m, w) for m, w in zip(made[table], wanted[table], strict=False) if m != w)
            if len(made[table]) == len(wanted[table])
            else (len(made[table]), len(wanted[table]))
        )
        raise AssertionError(
            f"bulk rows differ from the posted ones in {', '.join(differ)}; first in {table}: "
            f"bulk {bulk_row} != posted {posted_row}"
        )
    if breaks:
        raise AssertionError(f"the bench's ledger breaks its invariants: {breaks}")


def check_sample(prefix: str, count: int) -> None:
    """``check_ledger``'s invariants on ``SAMPLE`` of the organizations, chosen at random."""
    from ledger.checks import account_breaks
    from ledger.models import Account

    slugs = [f"{prefix}{n}" for n in random.sample(range(1, count + 1), min(SAMPLE, count))]
    breaks = [b for account in Account.objects.filter(slug__in=slugs) for b in account_breaks(account)]
    if breaks:
        raise AssertionError(f"{len(breaks)} breaks in {prefix}*, first: {breaks[:3]}")


def check_closed(prefix: str, count: int) -> None:
    """After the close: every organization has its statement, its invoice and this month's
    renewal; the sample still passes ``check_ledger`` (now with its statement)."""
    from django.db import connection

    period, _, end = _period()
    with connection.cursor() as cur:
        cur.execute(
            """SELECT count(DISTINCT s.id), count(DISTINCT i.id), count(DISTINCT l.id)
               FROM ledger_account a
               JOIN billing_organization o ON o.account_id = a.id
               LEFT JOIN ledger_statement s ON s.account_id = a.id AND s.period = %s
               LEFT JOIN billing_invoice i ON i.organization_id = o.id AND i.period = %s
               LEFT JOIN ledger_lot l
                 ON l.account_id = a.id AND l.created_at >= %s AND l.source = 'subscription'
               WHERE a.slug LIKE %s || '%%'""",
            [period, period, end, prefix],
        )
        closed = cur.fetchone()
    assert closed == (count, count, count), (prefix, closed, count)
    check_sample(prefix, count)


def baseline_close(prefix: str) -> tuple[int, float]:
    """A minimal close in raw SQL, one transaction per organization, of up to
    ``BASELINE_SAMPLE`` of the organizations: how many, in how many seconds. Statements are
    append-only, so the bench's superuser removes the baseline's own, triggers off for that
    one transaction, and the real close still has the month to do."""
    from django.db import connection, transaction

    period, start, end = _period()
    with connection.cursor() as cur:
        cur.execute("SELECT id FROM ledger_account WHERE slug LIKE %s || '%%' ORDER BY id", [prefix])
        ids = [row[0] for row in cur.fetchall()]
    ids = ids[:: -(-len(ids) // BASELINE_SAMPLE)]
    sums = ", ".join(f"sum({part.strip()})" for part in FIGURES.split(","))
    began = time.perf_counter()
    for account_id in ids:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT balance FROM ledger_account WHERE id = %s FOR UPDATE", [account_id])
            cur.execute(
                f"""
                INSERT INTO ledger_statement (account_id, period, starts_at, ends_at, brought_forward,
                                              {FIGURES}, closing_balance, created_at)
                SELECT %s, %s, %s, %s, 0, {sums}, (array_agg(balance ORDER BY date DESC))[1], now()
                FROM ledger_dailyrollup WHERE account_id = %s AND date >= %s AND date < %s
                RETURNING id""",
                [account_id, period, start, end, account_id, period, end.date()],
            )
            statement_id = cur.fetchone()[0]
            cur.execute(
                f"""
                INSERT INTO ledger_statementday (statement_id, date, {FIGURES}, balance)
                SELECT %s, date, {FIGURES}, balance
                FROM ledger_dailyrollup WHERE account_id = %s AND date >= %s AND date < %s""",
                [statement_id, account_id, period, end.date()],
            )
    elapsed = time.perf_counter() - began
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute(
            "DELETE FROM ledger_statementday WHERE statement_id IN (SELECT s.id FROM "
            "ledger_statement s JOIN ledger_account a ON a.id = s.account_id "
            "WHERE a.slug LIKE %s || '%%')",
            [prefix],
        )
        cur.execute(
            "DELETE FROM ledger_statement WHERE account_id IN (SELECT id FROM "
            "ledger_account WHERE slug LIKE %s || '%%')",
            [prefix],
        )
    return len(ids), elapsed


def _tidy() -> None:
    """Vacuum and analyze after bulk writes, so the close meets tables as a live database
    keeps them (visibility map set, statistics current)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")


@contextlib.contextmanager
def workers(count: int) -> Iterator[list[int]]:
    """``count`` real workers (``CONCURRENCY`` pool processes each) on the bench database."""
    from billing.celery import app

    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        "CELERY_QUEUE": QUEUE,
    }
    celery = str(Path(sys.executable).parent / "celery")
    procs = [
        subprocess.Popen(
            [
                celery,
                "-A",
                "billing",
                "worker",
                "--concurrency",
                str(CONCURRENCY),
                "--loglevel",
                "WARNING",
                "--prefetch-multiplier",
                "4",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"bench-close-{n}@localhost",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
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
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _processes() -> dict[int, tuple[str, int, float, float]]:
    """Every process: its name, its parent, its CPU seconds so far, and those of its
    children that ended (and were waited for)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # from the state on: ppid, ..., utime, stime, ...
        used = (int(fields[11]) + int(fields[12])) / tick
        ended = (int(fields[13]) + int(fields[14])) / tick
        found[int(entry.name)] = (name, int(fields[1]), used, ended)
    return found


def _cpu(roots: list[int]) -> dict[str, float]:
    """CPU seconds so far: of the workers (their process trees), of the PostgreSQL server
    (its processes and the backends that ended: each task connects anew), of Redis, and
    the machine's busy seconds (every core, less idle and I/O wait)."""
    found = _processes()
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, (_, parent, _, _) in found.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    postgres = {pid for pid, (name, _, _, _) in found.items() if name.startswith("postgres")}
    postmasters = {pid for pid in postgres if found[pid][1] not in postgres}
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    return {
        "workers": sum(found[pid][2] for pid in tree if pid in found),
        "PostgreSQL": sum(found[pid][2] for pid in postgres) + sum(found[pid][3] for pid in postmasters),
        "Redis": sum(used for name, _, used, _ in found.values() if name == "redis-server"),
        "machine": (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),
    }


def close_on_workers(count: int, worker_count: int) -> dict[str, float]:
    """Seconds from the hourly fan-out to the last of ``count`` statements on workers, of
    that the fan-out's own (finding the due organizations, enqueueing their batches), and
    the CPU seconds each role spent meanwhile (``_cpu``)."""
    from billing import tasks
    from billing.celery import app
    from ledger.models import Statement

    app.control.purge()
    already = Statement.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    with workers(worker_count) as pids:
        before = _cpu(pids)
        began = time.perf_counter()
        fanned = tasks.close_due_months.delay().get(timeout=600)
        assert fanned == count, (fanned, count)
        fan_out = time.perf_counter() - began
        # A cheap poll (an index range on the primary key), often while the close is short.
        while (done := Statement.objects.filter(pk__gt=already).count()) < count:
            elapsed = time.perf_counter() - began
            if elapsed > 1800:
                raise RuntimeError(f"the close did {done:,} of {count:,} organizations in {elapsed:.0f} s")
            time.sleep(min(0.5, max(0.02, elapsed / 200)))
        close = time.perf_counter() - began
        after = _cpu(pids)
    spent = {role: after[role] - before[role] for role in after}
    return {"close": close, "fan_out": fan_out, **{f"cpu {role}": seconds for role, seconds in spent.items()}}


def run_size(prefix: str, count: int) -> dict[str, float]:
    """Make ``count`` organizations, check them, time the baseline and the close."""
    began = time.perf_counter()
    make_orgs(prefix, count)
    _tidy()
    made = time.perf_counter() - began
    check_sample(prefix, count)
    sampled, baseline = baseline_close(prefix)
    _tidy()
    result = close_on_workers(count, WORKERS)
    check_closed(prefix, count)
    print(
        f"  {count:,} organizations: data {made:.0f} s; baseline {baseline:.1f} s for {sampled:,}; "
        f"close on {WORKERS} workers {result['close']:.1f} s, of which the fan-out "
        f"{result['fan_out']:.1f} s; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return {**result, "baseline": baseline / sampled * count}


def main() -> None:
    from django.conf import settings

    from bench.common import print_table

    # A SIGTERM (a timeout) unwinds like Ctrl-C, so the worker processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    settings.CELERY_BROKER_URL = REDIS_URL
    from billing.celery import app

    app.conf.broker_url = REDIS_URL
    app.conf.result_backend = REDIS_URL
    app.conf.task_default_queue = QUEUE
    small, large = SMALL, LARGE

    print(f"\nClose bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} as it starts")
    check_bulk_data()
    print("  bulk data: the same rows as the posting functions write (checked on one organization)")
    runs = {small: run_size("bench-a-", small), large: run_size("bench-b-", large)}

    def ms(seconds: float, orgs: int) -> str:
        return f"{seconds / orgs * 1000:.2f} ms"

    at_small, at_large = runs[small], runs[large]
    per_small, per_large = at_small["close"] / small, at_large["close"] / large
    rows = [
        (
            f"close {count:,} orgs, {WORKERS} workers (s)",
            f"{run['close']:.1f}",
            f"{run['baseline']:.1f}",
            f"{run['close'] / run['baseline']:.2f}x",
            f"< {TARGET_S:.0f} at 100,000" if count == large else "-",
        )
        for count, run in runs.items()
    ] + [
        (
            f"per org at {count:,} orgs",
            ms(run["close"], count),
            ms(run["baseline"], count),
            f"{run['close'] / run['baseline']:.2f}x",
            f"<= {ms(at_small['close'], small)} (at {small:,})" if count == large else "-",
        )
        for count, run in runs.items()
    ]
    print_table(
        f"Month close on {WORKERS} Celery workers (Redis); baseline: a raw-SQL close per org "
        f"(statement and days only), 1 process, on up to {BASELINE_SAMPLE:,} of the same "
        "organizations, scaled to all",
        rows,
    )
    roles = ("workers", "PostgreSQL", "Redis")
    cpu_rows = []
    for count, run in runs.items():
        ours = sum(run[f"cpu {role}"] for role in roles)
        cpu_rows.append(
            (
                f"{count:,} orgs",
                *(f"{run[f'cpu {role}'] / count * 1000:.2f}" for role in roles),
                f"{ours / count * 1000:.2f}",
                f"{max(run['cpu machine'] - ours, 0) / count * 1000:.2f}",
                f"{run['close'] * (os.cpu_count() or 1) / count * 1000:.2f}",
            )
        )
    print_table(
        "CPU per organization closed (ms), while the close ran: the workers' processes, the "
        "PostgreSQL server (all its processes), Redis; the rest of the machine's busy time (other "
        f"work on the machine); and wall time x {os.cpu_count()} cores, what the close had",
        cpu_rows,
        header=("measure", *roles, "all three", "rest of machine", "wall x cores"),
    )
    # The target is at 100,000; a smaller large size shows whether its pace would meet it.
    projected = per_large * 100_000
    within = (at_large["close"] if large >= 100_000 else projected) < TARGET_S
    print(
        f"  target: 100,000 organizations in under {TARGET_S:.0f} s: "
        + (
            f"{at_large['close']:.1f} s, {'met' if within else 'MISSED'}"
            if large >= 100_000
            else f"not run (BENCH_CLOSE_LARGE={large:,}); at this pace {projected:.0f} s, "
            f"{'would be met' if within else 'would be MISSED'}"
        )
        + f"; per org at {large:,} vs {small:,}: {per_large / per_small:.2f}x, "
        + ("met (no slower)" if per_large <= per_small else "MISSED (slower)")
    )
