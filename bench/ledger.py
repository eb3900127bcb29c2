"""Debits per second through `postings.debit` with 8 concurrent workers, beside a raw-SQL
baseline doing the minimal work (lock the balance row, insert one entry, commit), on one
hot organization and spread over 1,000 organizations, each side in alternating rounds (the
medians shown). Target: hot >= 0.5x the baseline."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
import uuid

WORKERS = 8
SECONDS = float(os.environ.get("BENCH_LEDGER_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_LEDGER_ROUNDS", "3"))
SPREAD = 1_000
FUNDS = 10**12


def _make_accounts(prefix: str, count: int) -> list[int]:
    from ledger import postings
    from ledger.models import LotSource

    ids = []
    for n in range(count):
        account = postings.open_account(f"{prefix}-{n}")
        postings.post_top_up(account, FUNDS, key="funding", source=LotSource.PURCHASE,
                             operation="credit_pack_bench")
        ids.append(account.pk)
    return ids


def _debit_worker(
    account_ids: list[int], run: str, worker: int, deadline: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    from django.db import connections

    from ledger import postings
    from ledger.models import Account

    connections.close_all()  # never share the parent's connection
    accounts = list(Account.objects.filter(pk__in=account_ids))
    done, n = 0, worker
    while time.monotonic() < deadline:
        account = accounts[n % len(accounts)]
        postings.debit(account, 3, key=f"bench-{run}-{worker}-{done}", operation="image_edit_gemini_flash",
                       job=postings.JobInfo(f"bench-job-{run}-{worker}-{done % 50}"))
        done += 1
        n += 7
    out.put(done)


def _raw_worker(
    account_ids: list[int], run: str, worker: int, deadline: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    conn = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"])
    done, n = 0, worker
    while time.monotonic() < deadline:
        account_id = account_ids[n % len(account_ids)]
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT balance FROM ledger_account WHERE id = %s FOR UPDATE", [account_id])
            (balance,) = cur.fetchone()  # type: ignore[misc]
            cur.execute(
                "INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, "
                "refund_of_expired, memo, created_at, local_date) "
                "VALUES (%s, 'debit', 'raw', -3, %s, 0, '', now(), current_date)",
                [account_id, balance - 3],
            )
        done += 1
        n += 7
    conn.close()
    out.put(done)


def _rate(worker, account_ids: list[int]) -> float:  # type: ignore[no-untyped-def]
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    deadline = time.monotonic() + SECONDS
    # Every run is named anew: the name is part of each idempotency key, and a key posted
    # in an earlier round would be answered as a replay, which writes nothing.
    run = uuid.uuid4().hex[:8]
    procs = [ctx.Process(target=worker, args=(account_ids, run, n, deadline, out))
             for n in range(WORKERS)]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get(timeout=SECONDS + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / (time.monotonic() - start)


def main() -> None:
    from bench.common import print_table
    from ledger.checks import account_breaks
    from ledger.models import Account

    tag = uuid.uuid4().hex[:6]
    rows = []
    for label, count in (("hot organization", 1), (f"{SPREAD:,} organizations", SPREAD)):
        # Separate but identical accounts for each side, so ours can be checked afterwards.
        ours_ids = _make_accounts(f"bench-{tag}-ours-{count}", count)
        raw_ids = _make_accounts(f"bench-{tag}-raw-{count}", count)
        # Both sides run ROUNDS times, alternating which goes first, so a passing burst of
        # load on this small machine moves one round, not the figure: the medians are shown,
        # with every round's ratio.
        ours_rates, raw_rates, ratios = [], [], []
        for round_ in range(ROUNDS):
            first, second = (_debit_worker, _raw_worker) if round_ % 2 == 0 else (_raw_worker, _debit_worker)
            rates = {first: _rate(first, ours_ids if first is _debit_worker else raw_ids),
                     second: _rate(second, ours_ids if second is _debit_worker else raw_ids)}
            ours_rates.append(rates[_debit_worker])
            raw_rates.append(rates[_raw_worker])
            ratios.append(rates[_debit_worker] / rates[_raw_worker])
        target = ">= 0.50x" if count == 1 else "-"
        rows.append((f"debits/s, {WORKERS} workers, {label}", f"{statistics.median(ours_rates):,.0f}",
                     f"{statistics.median(raw_rates):,.0f}",
                     f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})", target))
    print_table("Ledger: postings.debit vs raw SQL (lock row, insert entry, commit)", rows)
    checked = Account.objects.filter(slug__startswith=f"bench-{tag}-ours-")
    breaks = [line for account in checked for line in account_breaks(account)]
    print(f"  check_ledger on the {checked.count():,} accounts debited: "
          f"{'clean' if not breaks else f'{len(breaks)} breaks'}")
