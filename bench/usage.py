"""The usage page and the ledger CSV on a month of 1,000,000 entries.

- The page's median server time for that organization beside one with 1,000 entries
  (target: within 1.5x: the day table reads rollups, never the entries).
- The CSV export of the 1,000,000-entry month beside PostgreSQL's COPY of the same rows
  (target: within 3x), and the export's peak memory above the idle process (target: flat,
  under 50 MB).

Each month starts with a custom credit allocation posted by the ledger; its debits (a job
per 20) are written with INSERT ... SELECT generate_series straight into the bench
database, since going through the postings one by one would take the whole bench budget.
They are exactly the rows `ledger.debit` writes (jobs, entries, lot draws, idempotency
records, rollups, the lot's and the account's balance): `check_bulk_month` compares a
small month written both ways before anything is timed, and both bench organizations pass
`check_ledger`'s invariants afterwards."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable

BIG, SMALL = 1_000_000, 1_000
# The usage report's organization: REPORT_ENTRIES entries over the last 13 months (each a
# job of one of REPORT_PROJECTS projects), every past month closed.
REPORT_ENTRIES = int(os.environ.get("BENCH_REPORT_ENTRIES", "2000000"))
REPORT_PROJECTS = 500
ENTRIES_PER_JOB = 20
ALLOCATION = 100_000_000_000  # credits: more than a million debits of up to 50 use
OPERATION = "training_a100_per_minute"
PAGE_REPEAT = int(os.environ.get("BENCH_USAGE_REPEAT", "15"))


def main() -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from bench.common import median_seconds, print_table
    from billing import demo
    from billing.models import Membership, Organization, Plan, Role, Subscription
    from ledger.checks import account_breaks
    from ledger.periods import current_period, month_start

    demo.seed_catalog()
    now = timezone.now()
    check_bulk_month(month_start(current_period(now, dt.UTC), dt.UTC), now)
    user = get_user_model().objects.create_user("bench-usage-manager", password="bench-password")
    orgs = {}
    for slug, entries in (("bench-usage-small", SMALL), ("bench-usage-big", BIG)):
        org = Organization.objects.create(name=slug, slug=slug)
        Subscription.objects.create(organization=org, plan=Plan.objects.get(slug="professional"))
        Membership.objects.create(organization=org, user=user, role=Role.MANAGER)
        started = time.perf_counter()
        _fill_month(org.account_id, entries, month_start(current_period(now, org.tzinfo), org.tzinfo), now)
        written = time.perf_counter() - started
        org.account.refresh_from_db()
        breaks = account_breaks(org.account)
        assert not breaks, breaks[:3]
        print(
            f"  {slug}: {entries:,} entries written in {written:.1f}s, the same rows as the postings "
            f"write; check_ledger clean ({time.perf_counter() - started - written:.1f}s)"
        )
        orgs[entries] = org
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE ledger_entry, ledger_job, ledger_dailyrollup")
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
    print_table(
        "usage: the usage page and the ledger CSV export (PostgreSQL)",
        [
            (
                "page median, 1,000,000 entries vs 1,000 (ms)",
                f"{big_page * 1000:.1f}",
                f"{small_page * 1000:.1f}",
                f"{big_page / small_page:.2f}x",
                "<= 1.5x",
            ),
            (
                f"CSV export of 1,000,000 entries ({rows:,} rows, {export_bytes / 1e6:.1f} MB) vs COPY "
                f"of the same rows ({copy_bytes / 1e6:.1f} MB) (s)",
                f"{export_seconds:.2f}",
                f"{copy_seconds:.2f}",
                f"{export_seconds / copy_seconds:.2f}x",
                "<= 3x",
            ),
            (
                "CSV export vs COPY of the 1,000,000 raw entries (s, for scale)",
                f"{export_seconds:.2f}",
                f"{raw_seconds:.2f}",
                f"{export_seconds / raw_seconds:.2f}x",
                "-",
            ),
            ("export peak memory above idle (MB)", f"{peak / 1e6:.1f}", "0 (idle)", "-", "< 50 MB"),
        ],
    )
    report_bench(user, now)


def report_bench(user: object, now: dt.datetime) -> None:
    """The usage report by project over a year beside the same over one month, for an
    organization with REPORT_ENTRIES entries and REPORT_PROJECTS projects."""
    from django.db import connection, transaction
    from django.test import Client

    from bench.common import median_seconds, print_table
    from billing.models import Membership, Organization, Plan, Role, Subscription
    from ledger.checks import account_breaks
    from ledger.models import Account
    from ledger.periods import add_months, current_period, month_start
    from ledger.statements import freeze_statements

    org = Organization.objects.create(name="bench-report", slug="bench-report")
    Subscription.objects.create(organization=org, plan=Plan.objects.get(slug="professional"))
    Membership.objects.create(organization=org, user=user, role=Role.MANAGER)
    current = current_period(now, org.tzinfo)
    first = add_months(current, -12)
    started = time.perf_counter()
    Account.objects.filter(pk=org.account_id).update(created_at=month_start(first, org.tzinfo))
    _fill_month(
        org.account_id,
        REPORT_ENTRIES,
        month_start(first, org.tzinfo),
        now,
        projects=REPORT_PROJECTS,
        per_job=1,
    )
    for n in range(12):  # the month close's ledger half, month by month
        with transaction.atomic():
            freeze_statements(
                [Account.objects.select_for_update().get(pk=org.account_id)], add_months(first, n)
            )
    written = time.perf_counter() - started
    org.account.refresh_from_db()
    breaks = account_breaks(org.account)
    assert not breaks, breaks[:3]
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE ledger_groupday, ledger_groupmonth, ledger_dailyrollup, ledger_statement")
        cur.execute("SELECT count(*) FROM ledger_groupday WHERE account_id = %s", [org.account_id])
        (group_days,) = cur.fetchone() or (0,)
    print(
        f"  bench-report: {REPORT_ENTRIES:,} entries over 13 months, {REPORT_PROJECTS} projects, 12 months "
        f"closed, {group_days:,} group days, in {written:.1f}s; check_ledger clean"
    )
    client = Client()
    client.force_login(user)  # type: ignore[arg-type]
    today = org.account.local_date(now)
    last_month = add_months(current, -1)
    ranges = {
        "year": (today - dt.timedelta(days=364), today),
        "month": (last_month, current - dt.timedelta(days=1)),
    }

    def report(span: str) -> Callable[[], object]:
        start, end = ranges[span]

        def get() -> object:
            response = client.get(f"/orgs/{org.slug}/usage/report/?from={start}&to={end}&group=project")
            assert response.status_code == 200 and b"report-total" in response.content
            return response

        return get

    report("year")()
    report("month")()
    year = median_seconds(report("year"), PAGE_REPEAT)
    month = median_seconds(report("month"), PAGE_REPEAT)
    print_table(
        "usage report: credits used by project, a page over HTTP (Django's client)",
        [
            (
                f"a year, month by month, vs one month, day by day ({REPORT_ENTRIES:,} entries, "
                f"{REPORT_PROJECTS} projects) (ms)",
                f"{year * 1000:.1f}",
                f"{month * 1000:.1f}",
                f"{year / month:.2f}x",
                "<= 3x",
            )
        ],
    )


def _fill_month(
    account_id: int,
    entries: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    projects: int = 7,
    per_job: int = ENTRIES_PER_JOB,
) -> None:
    """``entries`` entries between ``start`` and ``end``: a custom credit allocation first,
    posted by the ledger, then debits of jobs (``ENTRIES_PER_JOB`` each, priced by amount)
    written in bulk exactly as ``ledger.debit`` writes them (``check_bulk_month`` compares
    the two): the jobs, the entries, their draws on the allocation's lot, their idempotency
    records, the days' rollups, the lot's and the account's balance."""
    from django.db import connection, transaction

    from ledger import postings
    from ledger.models import Account, LotSource

    account = Account.objects.get(pk=account_id)
    step = (end - start) // entries  # the debits' moments: start + g * step, g = 1 .. entries - 1
    params = {
        "account": account_id,
        "start": start,
        "step": step // dt.timedelta(microseconds=1),
        "n": entries - 1,
        "per_job": per_job,
        "projects": projects,
        "operation": OPERATION,
    }
    with transaction.atomic():
        postings.post_top_up(
            account,
            ALLOCATION,
            key="purchase:bench:usage",
            source=LotSource.PURCHASE,
            operation="credit_pack_enterprise",
            memo="Enterprise allocation, payment bench-usage",
            now=start,
        )
        params["opening"] = account.balance
        with connection.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")  # the ORDER BYs sort a million rows
            # ledger.job: each job made on first sight, at its first debit.
            cur.execute(
                """
                INSERT INTO ledger_job (account_id, external_id, name, project, "user", resource_class,
                                        created_at)
                SELECT %(account)s, 'job-' || k, 'experiment-' || k, 'project-' || (k %% %(projects)s),
                       'user' || (k %% 13) || '@example.com', (ARRAY['a10g', 'a100', 'h100'])[k %% 3 + 1],
                       %(start)s
                         + (((k - 1) * %(per_job)s + 1)::bigint * %(step)s::bigint) * interval '1 microsecond'
                FROM generate_series(1, (%(n)s - 1) / %(per_job)s + 1) AS k ORDER BY k""",
                params,
            )
            # ledger.append: the entry, dated on its local day (never into a closed month).
            cur.execute(
                """
                INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, quantity,
                                          job_id, hold_id, refund_of_expired, memo, created_at, local_date)
                SELECT a.id, 'debit', %(operation)s, d.amount,
                       %(opening)s + sum(d.amount) OVER (ORDER BY d.g), NULL, j.id, NULL, 0, '', d.at,
                       greatest((d.at AT TIME ZONE a.time_zone)::date, a.open_from)
                FROM (SELECT g, -(g %% 50 + 1) AS amount, (g - 1) / %(per_job)s + 1 AS k,
                             %(start)s + (g::bigint * %(step)s::bigint) * interval '1 microsecond' AS at
                      FROM generate_series(1, %(n)s) AS g) AS d
                JOIN ledger_account a ON a.id = %(account)s
                JOIN ledger_job j ON j.account_id = a.id AND j.external_id = 'job-' || d.k
                ORDER BY d.g""",
                params,
            )
            # ledger.draw: the one lot covers every debit.
            cur.execute(
                """
                INSERT INTO ledger_lotdraw (entry_id, lot_id, amount)
                SELECT e.id, l.id, e.amount
                FROM ledger_entry e JOIN ledger_lot l ON l.account_id = e.account_id
                WHERE e.account_id = %(account)s AND e.kind = 'debit' ORDER BY e.id""",
                params,
            )
            # ledger.answer: the receipt, recorded against the client's key.
            cur.execute(
                """
                INSERT INTO ledger_idempotencyrecord (account_id, key_space, key, action, params, result,
                                                      created_at)
                SELECT e.account_id, 'client', 'debit-' || row_number() OVER (ORDER BY e.id), 'debit',
                       jsonb_build_object(
                           'amount', -e.amount, 'operation', e.operation, 'quantity', e.quantity,
                           'job', jsonb_build_object('external_id', j.external_id, 'name', j.name,
                                                     'project', j.project, 'user', j."user",
                                                     'resource_class', j.resource_class)),
                       jsonb_build_object('action', 'debit', 'amount', e.amount, 'balance', e.balance_after,
                                          'held', 0::bigint, 'available', e.balance_after,
                                          'created_at', e.created_at, 'entry_id', e.id,
                                          'hold_id', NULL::bigint, 'forfeited', 0::bigint),
                       e.created_at
                FROM ledger_entry e JOIN ledger_job j ON j.id = e.job_id
                WHERE e.account_id = %(account)s AND e.kind = 'debit' ORDER BY e.id""",
                params,
            )
            # ledger.add_to_groups: each day's debits by the jobs' project, user and class.
            cur.execute(
                """
                INSERT INTO ledger_groupday (account_id, date, project, "user", resource_class, operation,
                                             debits, refunds)
                SELECT e.account_id, e.local_date, j.project, j."user", j.resource_class, e.operation,
                       -sum(e.amount), 0
                FROM ledger_entry e JOIN ledger_job j ON j.id = e.job_id
                WHERE e.account_id = %(account)s AND e.kind = 'debit'
                GROUP BY 1, 2, 3, 4, 5, 6""",
                params,
            )
            # ledger.add_to_day: the allocation's day has its rollup already.
            cur.execute(
                """
                INSERT INTO ledger_dailyrollup AS r (account_id, date, top_ups_subscription,
                    top_ups_purchase, top_ups_promotional, top_ups_adjustment, debits, refunds, expired,
                    adjustments, balance)
                SELECT account_id, local_date, 0, 0, 0, 0, -sum(amount), 0, 0, 0,
                       (array_agg(balance_after ORDER BY id DESC))[1]
                FROM ledger_entry WHERE account_id = %(account)s AND kind = 'debit'
                GROUP BY account_id, local_date
                ON CONFLICT (account_id, date) DO UPDATE SET debits = r.debits + excluded.debits,
                                                             balance = excluded.balance""",
                params,
            )
            cur.execute(
                """
                WITH used AS (SELECT coalesce(sum(amount), 0) AS amount FROM ledger_entry
                              WHERE account_id = %(account)s AND kind = 'debit')
                UPDATE ledger_lot SET remaining = remaining + used.amount FROM used
                WHERE account_id = %(account)s""",
                params,
            )
            cur.execute(
                """
                UPDATE ledger_account SET balance = (SELECT sum(amount) FROM ledger_entry
                                                     WHERE account_id = %(account)s)
                WHERE id = %(account)s""",
                params,
            )


def _post_month(account_id: int, entries: int, start: dt.datetime, end: dt.datetime) -> None:
    """The month ``_fill_month`` writes, posted one posting at a time through the ledger."""
    from ledger import postings
    from ledger.models import Account, KeySpace, LotSource

    account = Account.objects.get(pk=account_id)
    step = (end - start) // entries
    postings.post_top_up(
        account,
        ALLOCATION,
        key="purchase:bench:usage",
        source=LotSource.PURCHASE,
        operation="credit_pack_enterprise",
        memo="Enterprise allocation, payment bench-usage",
        now=start,
    )
    for g in range(1, entries):
        k = (g - 1) // ENTRIES_PER_JOB + 1
        job = postings.JobInfo(
            f"job-{k}", f"experiment-{k}", f"project-{k % 7}", f"user{k % 13}@example.com",
            ["a10g", "a100", "h100"][k % 3],
        )  # fmt: skip
        postings.debit(
            account,
            g % 50 + 1,
            key=f"debit-{g}",
            key_space=KeySpace.CLIENT,
            operation=OPERATION,
            job=job,
            now=start + g * step,
        )


def check_bulk_month(start: dt.datetime, end: dt.datetime) -> None:
    """A month of 100 entries written by ``_fill_month`` and the same posted by
    ``_post_month`` hold the same ledger rows, and pass ``check_ledger``; rolled back."""
    from django.db import transaction

    from bench.close import ledger_rows
    from ledger import postings
    from ledger.checks import account_breaks
    from ledger.models import Account

    with transaction.atomic():
        bulk, posted = (postings.open_account(slug) for slug in ("bench-usage-bulk", "bench-usage-posted"))
        Account.objects.filter(pk__in=[bulk.pk, posted.pk]).update(created_at=start)
        _fill_month(bulk.pk, 100, start, end)
        _post_month(posted.pk, 100, start, end)
        made, wanted = ledger_rows(bulk.pk), ledger_rows(posted.pk)
        breaks = [
            b
            for account in Account.objects.filter(pk__in=[bulk.pk, posted.pk])
            for b in account_breaks(account)
        ]
        transaction.set_rollback(True)
    differ = [table for table in wanted if made[table] != wanted[table]]
    if differ:
        table = differ[0]
        first = next((m, w) for m, w in zip(made[table], wanted[table], strict=False) if m != w)
        raise AssertionError(
            f"bulk rows differ from the posted ones in {', '.join(differ)}; the first: {first}"
        )
    if breaks:
        raise AssertionError(f"the bench's ledger breaks its invariants: {breaks}")


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
    """The export's job rows (each day's jobs, or operations without a job, with the
    credits they used), as COPY writes them."""
    return _copy(
        """COPY (SELECT 'job', e.local_date, '', -sum(e.amount), '',
                        coalesce(CASE WHEN e.job_id IS NULL THEN e.operation END, nullif(j.name, ''),
                                 j.external_id),
                        j.project, j."user", j.resource_class
                 FROM ledger_entry e LEFT JOIN ledger_job j ON j.id = e.job_id
                 WHERE e.account_id = %s AND e.kind IN ('debit', 'refund', 'expiry', 'adjustment')
                   AND NOT (e.kind = 'adjustment' AND e.amount > 0)
                 GROUP BY e.local_date, e.job_id, j.id, CASE WHEN e.job_id IS NULL THEN e.operation END
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
