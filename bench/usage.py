"""The usage page and the ledger CSV on a month of 1,000,000 entries.

- The page's median server time for that organization beside one with 1,000 entries
  (target: within 1.5x: the day table reads rollups, never the entries).
- The CSV export of the 1,000,000-entry month beside PostgreSQL's COPY of the same rows
  (target: within 3x), and the export's peak memory above the idle process (target: flat,
  under 50 MB).

The entries, their jobs and matching daily rollups are written with INSERT ... SELECT
generate_series straight into the bench database; going through the postings one by one
would take the whole bench budget."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

BIG, SMALL = 1_000_000, 1_000
ENTRIES_PER_JOB = 20
PAGE_REPEAT = int(os.environ.get("BENCH_USAGE_REPEAT", "15"))


def main() -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from bench.common import median_seconds, print_table
    from billing import demo
    from billing.models import Membership, Organization, Plan, Role, Subscription
    from ledger.periods import current_period

    demo.seed_catalog()
    user = get_user_model().objects.create_user("bench-usage-manager", password="bench-password")
    orgs = {}
    for slug, entries in (("bench-usage-small", SMALL), ("bench-usage-big", BIG)):
        org = Organization.objects.create(name=slug, slug=slug)
        Subscription.objects.create(organization=org, plan=Plan.objects.get(slug="professional"))
        Membership.objects.create(organization=org, user=user, role=Role.MANAGER)
        started = time.perf_counter()
        _fill_month(org.account_id, entries, current_period(timezone.now(), org.tzinfo),
                    timezone.localdate(timezone.now(), org.tzinfo))
        print(f"  {slug}: {entries:,} entries written in {time.perf_counter() - started:.1f}s")
        orgs[entries] = org
    client = Client()
    client.force_login(user)

    def page(org: Organization) -> Callable[[], object]:
        def get() -> object:
            response = client.get(f"/orgs/{org.slug}/usage/")
            assert response.status_code == 200
            return response
        return get

    page(orgs[BIG])()  # warm up both
    page(orgs[SMALL])()
    small_page = median_seconds(page(orgs[SMALL]), PAGE_REPEAT)
    big_page = median_seconds(page(orgs[BIG]), PAGE_REPEAT)

    big = orgs[BIG]
    export_seconds, export_bytes, rows, peak = _export(client, big.slug)
    copy_seconds, copy_bytes = _copy_same_rows(big.account_id)
    raw_seconds, _ = _copy_raw_entries(big.account_id)
    print_table("usage: the usage page and the ledger CSV export (PostgreSQL)", [
        ("page median, 1,000,000 entries vs 1,000 (ms)", f"{big_page * 1000:.1f}",
         f"{small_page * 1000:.1f}", f"{big_page / small_page:.2f}x", "<= 1.5x"),
        (f"CSV export of 1,000,000 entries ({rows:,} rows, {export_bytes / 1e6:.1f} MB) vs COPY "
         f"of the same rows ({copy_bytes / 1e6:.1f} MB) (s)", f"{export_seconds:.2f}",
         f"{copy_seconds:.2f}", f"{export_seconds / copy_seconds:.2f}x", "<= 3x"),
        ("CSV export vs COPY of the 1,000,000 raw entries (s, for scale)", f"{export_seconds:.2f}",
         f"{raw_seconds:.2f}", f"{export_seconds / raw_seconds:.2f}x", "-"),
        ("export peak memory above idle (MB)", f"{peak / 1e6:.1f}", "0 (idle)", "-", "< 50 MB"),
    ])


def _fill_month(account_id: int, entries: int, period, today) -> None:  # type: ignore[no-untyped-def]
    """``entries`` entries over the month's days so far: a top-up first, then debits in
    runs of ``ENTRIES_PER_JOB`` per job; the jobs; the rollups; the account's balance."""
    from django.db import connection, transaction

    days = (today - period).days + 1
    jobs = -(-entries // ENTRIES_PER_JOB)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            """INSERT INTO ledger_job (account_id, external_id, name, project, "user", resource_class,
                                       created_at)
               SELECT %s, 'job-' || g, 'experiment-' || g, 'project-' || (g %% 7),
                      'user' || (g %% 13) || '@example.com', (ARRAY['a10g','a100','h100'])[g %% 3 + 1], now()
               FROM generate_series(1, %s) AS g""",
            [account_id, jobs],
        )
        cur.execute("SELECT min(id) FROM ledger_job WHERE account_id = %s", [account_id])
        first_job = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, quantity,
                                         job_id, refund_of_expired, memo, created_at, local_date)
               SELECT %(account)s, kind, operation, amount, sum(amount) OVER (ORDER BY g), NULL,
                      job_id, 0, '', %(start)s::date + day + interval '1 minute' * (g %% 1400),
                      %(start)s::date + day
               FROM (
                 SELECT g, ((g - 1)::bigint * %(days)s / %(n)s)::int AS day,
                        CASE WHEN g = 1 THEN 'top_up' ELSE 'debit' END AS kind,
                        CASE WHEN g = 1 THEN 'credit_pack_bench' ELSE 'training_a100_per_minute' END
                          AS operation,
                        CASE WHEN g = 1 THEN 100000000000 ELSE -(g %% 50 + 1) END AS amount,
                        CASE WHEN g = 1 THEN NULL ELSE %(job)s + (g - 1) / %(per_job)s END AS job_id
                 FROM generate_series(1, %(n)s) AS g
               ) AS s ORDER BY g""",
            {"account": account_id, "start": period, "days": days, "n": entries, "job": first_job,
             "per_job": ENTRIES_PER_JOB},
        )
        cur.execute(
            """INSERT INTO ledger_dailyrollup (account_id, date, top_ups, credits_used, refunds, expired,
                                               balance)
               SELECT account_id, local_date, sum(greatest(amount, 0)), sum(greatest(-amount, 0)), 0, 0,
                      (array_agg(balance_after ORDER BY id DESC))[1]
               FROM ledger_entry WHERE account_id = %s GROUP BY account_id, local_date""",
            [account_id],
        )
        cur.execute(
            """UPDATE ledger_account SET balance = (SELECT sum(amount) FROM ledger_entry
                                                    WHERE account_id = %s) WHERE id = %s""",
            [account_id, account_id],
        )
    with connection.cursor() as cur:
        cur.execute("ANALYZE ledger_entry; ANALYZE ledger_job; ANALYZE ledger_dailyrollup")


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _export(client, slug: str) -> tuple[float, int, int, int]:  # type: ignore[no-untyped-def]
    """Stream the export, counting bytes and rows without keeping them; sample the RSS."""
    idle = _rss()
    peak = idle
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    response = client.get(f"/orgs/{slug}/usage/export.csv")
    assert response.status_code == 200
    size = rows = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        rows += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return seconds, size, rows - 1, max(peak - idle, 0)


def _copy(sql: str, params: list[object]) -> tuple[float, int]:
    from django.db import connection

    started = time.perf_counter()
    size = 0
    with connection.cursor() as cur, cur.cursor.copy(sql, params) as copy:
        for data in copy:
            size += len(data)
    return time.perf_counter() - started, size


def _copy_same_rows(account_id: int) -> tuple[float, int]:
    """The export's job rows (each day's jobs with what they used), as COPY writes them."""
    return _copy(
        """COPY (SELECT 'job', e.local_date, '', -sum(e.amount), '', j.name, j.project, j."user",
                        j.resource_class
                 FROM ledger_entry e LEFT JOIN ledger_job j ON j.id = e.job_id
                 WHERE e.account_id = %s AND e.kind IN ('debit', 'refund', 'expiry')
                 GROUP BY e.local_date, e.job_id, j.id
                 ORDER BY e.local_date, sum(e.amount), e.job_id) TO STDOUT WITH (FORMAT csv)""",
        [account_id],
    )


def _copy_raw_entries(account_id: int) -> tuple[float, int]:
    return _copy(
        """COPY (SELECT e.local_date, e.amount, e.balance_after, j.name, j.project, j."user",
                        j.resource_class
                 FROM ledger_entry e LEFT JOIN ledger_job j ON j.id = e.job_id
                 WHERE e.account_id = %s ORDER BY e.id) TO STDOUT WITH (FORMAT csv)""",
        [account_id],
    )
