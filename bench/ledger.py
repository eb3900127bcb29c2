"""`python -m bench ledger`: how fast Tally's ledger posts debits, beside two baselines
measured in the same run.

Every figure is a rate with 8 worker processes posting at once, each process calling one
"side" in a loop for a few seconds. The sides take turns in rounds (the order rotates every
round, so a passing burst of load on this 2-core machine moves one round, not the figure);
the tables show medians, and each round's ratio in brackets.

Part 1, single debits ("the organization consumed 3 credits"), one call each:
- Tally: `postings.debit`, one PL/pgSQL call that prices the operation from the price table,
  locks the account, draws from its lots and writes the entry, the daily rollup, the job and
  the idempotency record.
- raw SQL: the least any ledger could do, by hand: lock the account row, insert one entry,
  commit (no price, no lots, no rollup, no idempotency, the balance not even updated).
- pgledger (https://github.com/pgr0ss/pgledger, a public ledger built in PostgreSQL, vendored
  as bench/pgledger.sql): `pgledger_create_transfer` of 3 from the organization's account to
  its own "consumed" account (one per organization, so spread organizations share no row).
Each on one hot organization (all 8 workers debit the same account, so its row lock
serializes them) and spread over 1,000 organizations.

Part 2, batches of 100 debits per call, rates in postings/s:
- Tally: `postings.post_batch`, one PL/pgSQL call for the 100.
- raw SQL: the raw debit's insert 100 times in one transaction, after locking the batch's
  accounts in id order.
On one hot organization (100 debits of one account) and spread (each batch 100 accounts
drawn at random from 1,000, so concurrent batches do meet on some accounts).

Part 3: every account Tally debited is checked as `check_ledger` checks it, and each side's
rows are counted against the postings it was credited with.

Every side has its own accounts (the raw side leaves its accounts inconsistent on purpose),
funded far beyond what the run can spend. BENCH_LEDGER_SECONDS (default 5) and
BENCH_LEDGER_ROUNDS (default 3) set the length of a round and the number of rounds.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

WORKERS = 8
SECONDS = float(os.environ.get("BENCH_LEDGER_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_LEDGER_ROUNDS", "3"))
SPREAD = 1_000
BATCH = 100
FUNDS = 10**12
OPERATION = "image_edit_gemini_flash"  # 3 credits a unit (billing.demo's price table)
PRICE = 3  # what one OPERATION costs: the raw and pgledger sides move the same 3 credits
PGLEDGER_SQL = Path(__file__).with_name("pgledger.sql")
PGLEDGER_SCHEMA = "pgledger"

# A step does a worker's call number n and answers how many postings it made.
Step = Callable[[int], int]


@dataclass(frozen=True)
class Side:
    name: str
    # Run in each worker process, before the clock starts: opens what the side needs and
    # answers its step. Takes the side's targets (account ids, or pgledger account pairs),
    # the run's name (unique per side and round: it is part of every idempotency key, and a
    # key posted in an earlier round would be answered as a replay, which writes nothing)
    # and the worker's number.
    start: Callable[[Sequence[Any], str, int], Step]


_OPENED: list[psycopg.Connection[Any]] = []  # by this process, closed when its worker ends


def _connect(**kwargs: Any) -> psycopg.Connection[Any]:
    """A plain psycopg connection to the bench database (Django's settings name it)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "password": db["PASSWORD"]}
    conn = psycopg.connect(dbname=db["NAME"], **{k: v for k, v in params.items() if v}, **kwargs)
    _OPENED.append(conn)
    return conn


def _pgledger_connect() -> psycopg.Connection[Any]:
    # pgledger's functions name their tables unqualified: they live in their own schema.
    return _connect(autocommit=True, options=f"-c search_path={PGLEDGER_SCHEMA},public")


def _one(targets: Sequence[Any], worker: int, n: int) -> Any:
    """The target of a single debit: the workers walk the accounts in steps of 7 from
    different starting points, so spread workers seldom meet on an account."""
    return targets[(worker + 7 * n) % len(targets)]


def _hundred(targets: Sequence[Any], worker: int, n: int) -> list[Any]:
    """The targets of a batch: the one hot account 100 times, or 100 accounts drawn at
    random (the same draws for every side: the seed is the worker and the call)."""
    if len(targets) == 1:
        return [targets[0]] * BATCH
    return random.Random(worker * 1_000_003 + n).sample(list(targets), BATCH)


# --- The sides ------------------------------------------------------------------------

# Every Tally debit is for a job of this project and user, posted with a key of this name;
# the budgeted accounts have a budget on each (limits never reached), the others none.
BUDGETED_PROJECT, BUDGETED_USER, BUDGETED_KEY = "bench-project", "bench-user", "bench-key"


def _job(run: str, worker: int, n: int) -> Any:
    from ledger import postings

    return postings.JobInfo(
        f"bench-job-{run}-{worker}-{n % 50}", project=BUDGETED_PROJECT, user=BUDGETED_USER
    )


# The raw side's entry: the row Tally's debit appends, without its job, price or lot links.
RAW_INSERT = (
    "INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, "
    "refund_of_expired, memo, created_at, local_date) "
    "VALUES (%s, 'debit', 'raw', -3, %s, 0, '', now(), current_date)"
)


def _tally_debits(targets: Sequence[Any], run: str, worker: int) -> Step:
    from ledger import postings
    from ledger.models import Account

    by_id = Account.objects.in_bulk(list(targets))
    accounts = [by_id[pk] for pk in targets]

    def step(n: int) -> int:
        postings.debit(
            _one(accounts, worker, n),
            key=f"bench-{run}-{worker}-{n}",
            operation=OPERATION,
            quantity=1,
            job=_job(run, worker, n),
            api_key=BUDGETED_KEY,
        )
        return 1

    return step


def _raw_debits(targets: Sequence[Any], run: str, worker: int) -> Step:
    conn = _connect()

    def step(n: int) -> int:
        account_id = _one(targets, worker, n)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT balance FROM ledger_account WHERE id = %s FOR UPDATE", [account_id])
            (balance,) = cur.fetchone()  # type: ignore[misc]
            cur.execute(RAW_INSERT, [account_id, balance - PRICE])
        return 1

    return step


def _pgledger_debits(targets: Sequence[Any], run: str, worker: int) -> Step:
    conn = _pgledger_connect()

    def step(n: int) -> int:
        organization, consumed = _one(targets, worker, n)
        conn.execute("SELECT id FROM pgledger_create_transfer(%s, %s, 3)", [organization, consumed])
        return 1

    return step


def _tally_batches(targets: Sequence[Any], run: str, worker: int) -> Step:
    from ledger import postings

    def step(n: int) -> int:
        batch = [
            postings.Posting.debit(
                account_id,
                key=f"bench-{run}-{worker}-{n}-{i}",
                operation=OPERATION,
                quantity=1,
                job=_job(run, worker, i),
                api_key=BUDGETED_KEY,
            )
            for i, account_id in enumerate(_hundred(targets, worker, n))
        ]
        results = postings.post_batch(batch)
        refused = [r for r in results if isinstance(r, postings.LedgerError)]
        if refused:
            raise RuntimeError(f"{len(refused)} of a batch of {len(batch)} refused, first: {refused[0]!r}")
        return len(results)

    return step


def _raw_batches(targets: Sequence[Any], run: str, worker: int) -> Step:
    conn = _connect()

    def step(n: int) -> int:
        account_ids = _hundred(targets, worker, n)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "SELECT id, balance FROM ledger_account WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                [sorted(set(account_ids))],
            )
            balances = dict(cur.fetchall())
            for account_id in account_ids:
                balances[account_id] -= PRICE
                cur.execute(RAW_INSERT, [account_id, balances[account_id]])
        return len(account_ids)

    return step


TALLY_DEBITS = Side("Tally", _tally_debits)
RAW_DEBITS = Side("raw SQL", _raw_debits)
PGLEDGER = Side("pgledger", _pgledger_debits)
TALLY_BATCHES = Side("Tally", _tally_batches)
BUDGETED_DEBITS = Side("Tally, 3 budgets", _tally_debits)
BUDGETED_BATCHES = Side("Tally, 3 budgets", _tally_batches)
RAW_BATCHES = Side("raw SQL", _raw_batches)


# --- Running a side with 8 workers ----------------------------------------------------


def _worker(
    side: Side, targets: Sequence[Any], run: str, worker: int, ready: Any, go: Any, began: Any, out: Any
) -> None:
    from django.db import connections

    try:
        try:
            step = side.start(targets, run, worker)
        except BaseException:
            ready.put(traceback.format_exc())
            return
        ready.put(None)
        go.wait()
        try:
            deadline = began.value + SECONDS
            done = calls = 0
            while time.monotonic() < deadline:
                done += step(calls)
                calls += 1
            out.put((done, time.monotonic(), None))
        except BaseException:
            out.put((0, 0.0, traceback.format_exc()))
    finally:  # say goodbye to the server, rather than vanish from under it
        connections.close_all()
        for conn in _OPENED:
            conn.close()


def _run(side: Side, targets: Sequence[Any]) -> tuple[float, int]:
    """One round of one side: WORKERS processes post for SECONDS from a common start (their
    connecting is not timed). Answers postings per second and the postings made."""
    from django.db import connections

    connections.close_all()  # a forked worker must not share the parent's connection
    ctx = multiprocessing.get_context("fork")
    ready, out, go, began = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    run = uuid.uuid4().hex[:8]
    procs = [
        ctx.Process(target=_worker, args=(side, targets, run, n, ready, go, began, out))
        for n in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    try:
        failures = [error for error in (ready.get(timeout=120) for _ in procs) if error]
        if failures:
            raise RuntimeError(f"{side.name} worker could not start:\n{failures[0]}")
        began.value = time.monotonic()
        go.set()
        results = [out.get(timeout=SECONDS + 120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    failures = [error for _, _, error in results if error]
    if failures:
        raise RuntimeError(f"{side.name} worker failed:\n{failures[0]}")
    total = sum(done for done, _, _ in results)
    return total / (max(end for _, end, _ in results) - began.value), total


@dataclass
class Race:
    """Sides that do the same work, each on its own targets, in alternating rounds."""

    entrants: list[tuple[Side, Sequence[Any]]]
    rates: dict[str, list[float]]

    @classmethod
    def run(cls, entrants: list[tuple[Side, Sequence[Any]]], made: dict[str, int]) -> Race:
        rates: dict[str, list[float]] = {side.name: [] for side, _ in entrants}
        for round_ in range(ROUNDS):
            shift = round_ % len(entrants)
            for side, targets in entrants[shift:] + entrants[:shift]:
                rate, total = _run(side, targets)
                rates[side.name].append(rate)
                made[side.name] = made.get(side.name, 0) + total
        return cls(entrants, rates)

    def median(self, name: str) -> float:
        return statistics.median(self.rates[name])

    def row(self, measure: str, baseline: str, target: float, ours: str = "Tally") -> tuple[str, ...]:
        """``ours`` (Tally) beside one baseline: the medians, the median of the rounds'
        ratios (each round's in brackets), the target and whether it is met."""
        ratios = [
            ours_ / theirs for ours_, theirs in zip(self.rates[ours], self.rates[baseline], strict=True)
        ]
        ratio = statistics.median(ratios)
        return (
            measure,
            f"{self.median(ours):,.0f}",
            f"{self.median(baseline):,.0f} {baseline}",
            f"{ratio:.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})",
            f">= {target:.2f}x",
            "met" if ratio >= target else "MISSED",
        )


# --- Accounts -------------------------------------------------------------------------


def _tally_accounts(prefix: str, count: int, *, budgeted: bool = False) -> list[int]:
    """``count`` ledger accounts, each funded by one purchase top-up; ``budgeted``: each
    with a budget on the bench's project, user and key."""
    from ledger import budgets, postings
    from ledger.models import LotSource

    ids = []
    for n in range(count):
        account = postings.open_account(f"{prefix}-{n}")
        if budgeted:
            for scope, name in [
                ("project", BUDGETED_PROJECT),
                ("user", BUDGETED_USER),
                ("api_key", BUDGETED_KEY),
            ]:
                budgets.set_budget(account, scope, name, budgets.MAX_LIMIT // 4)
        postings.post_top_up(
            account, FUNDS, key="funding", source=LotSource.PURCHASE, operation="credit_pack_bench"
        )
        ids.append(account.pk)
    return ids


def _install_pgledger() -> None:
    with _connect(autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {PGLEDGER_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {PGLEDGER_SCHEMA}")
    with _pgledger_connect() as conn:
        conn.execute(PGLEDGER_SQL.read_text())  # type: ignore[call-overload]


def _pgledger_accounts(prefix: str, count: int) -> list[tuple[str, str]]:
    """``count`` (organization, consumed) pairs of pgledger accounts. An organization's
    account may not go negative (so a transfer checks its funds, as a debit does) and is
    funded from a funding account that may."""
    pairs = []
    with _pgledger_connect() as conn, conn.transaction():

        def account(name: str, allow_negative: bool) -> str:
            row = conn.execute(
                "SELECT id FROM pgledger_create_account(%s, 'credits', %s, true)", [name, allow_negative]
            ).fetchone()
            assert row is not None
            return str(row[0])

        funding = account(f"{prefix}-funding", True)
        for n in range(count):
            organization = account(f"{prefix}-{n}", False)
            pairs.append((organization, account(f"{prefix}-{n}.consumed", True)))
            conn.execute(
                "SELECT id FROM pgledger_create_transfer(%s, %s, %s)", [funding, organization, FUNDS]
            )
    return pairs


# --- The bench ------------------------------------------------------------------------


def _verify(
    tally_ids: list[int], raw_ids: list[int], pgledger_pairs: list[tuple[str, str]], made: dict[str, int]
) -> None:
    from ledger.checks import account_breaks
    from ledger.models import Account, Entry, EntryKind

    accounts = list(Account.objects.filter(pk__in=tally_ids))
    breaks = [line for account in accounts for line in account_breaks(account)]
    print(
        f"  check_ledger on the {len(accounts):,} accounts Tally debited: "
        + ("clean" if not breaks else f"{len(breaks)} BREAKS, first: {breaks[0]}")
    )
    written = {
        "Tally": Entry.objects.filter(account_id__in=tally_ids, kind=EntryKind.DEBIT).count(),
        "raw SQL": Entry.objects.filter(account_id__in=raw_ids, operation="raw").count(),
    }
    with _pgledger_connect() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(amount), 0) FROM pgledger_transfers WHERE to_account_id = ANY(%s)",
            [[consumed for _, consumed in pgledger_pairs]],
        ).fetchone()
        assert row is not None
        written["pgledger"], consumed_total = row
        (balances,) = conn.execute("SELECT sum(balance) FROM pgledger_accounts").fetchone() or (None,)

    def agrees(name: str) -> str:
        counted = made.get(name, 0)
        return f"{name} {written[name]:,} {'=' if written[name] == counted else '!='} {counted:,}"

    print(f"  rows written vs postings counted: {'; '.join(agrees(name) for name in written)}")
    print(
        f"  pgledger: {consumed_total:,} credits in its consumed accounts ({PRICE} a transfer), "
        f"its balances sum to {balances} (double entry)"
    )


def main() -> None:
    from django.db import connection

    from bench.common import print_table
    from billing.demo import seed_catalog

    seed_catalog()  # the price of OPERATION, which Tally's debit looks up in the database
    _install_pgledger()
    tag = uuid.uuid4().hex[:6]
    hot, spread = "hot organization", f"{SPREAD:,} organizations"
    tally = {
        hot: _tally_accounts(f"bench-{tag}-tally-hot", 1),
        spread: _tally_accounts(f"bench-{tag}-tally", SPREAD),
    }
    raw = {
        hot: _tally_accounts(f"bench-{tag}-raw-hot", 1),
        spread: _tally_accounts(f"bench-{tag}-raw", SPREAD),
    }
    budgeted = {
        hot: _tally_accounts(f"bench-{tag}-budgeted-hot", 1, budgeted=True),
        spread: _tally_accounts(f"bench-{tag}-budgeted", SPREAD, budgeted=True),
    }
    pgl = {hot: _pgledger_accounts(f"bench-{tag}-hot", 1), spread: _pgledger_accounts(f"bench-{tag}", SPREAD)}
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    made: dict[str, int] = {}
    # Other work on this small machine moves every figure here (less so the ratios).
    print(f"\nLedger bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} as it starts")

    rows = []
    for scale in (hot, spread):
        race = Race.run(
            [(TALLY_DEBITS, tally[scale]), (RAW_DEBITS, raw[scale]), (PGLEDGER, pgl[scale])], made
        )
        rows.append(race.row(f"debits/s, {scale}", "raw SQL", 1.0 if scale == hot else 0.8))
        rows.append(race.row(f"debits/s, {scale}", "pgledger", 1.3))
    header = ("measure", "Tally", "baseline", "ratio (rounds)", "target", "")
    print_table(
        f"Ledger, single debits: {WORKERS} worker processes, {SECONDS:g} s a round, {ROUNDS} rounds "
        "(medians)",
        rows,
        header,
    )
    print("  ratio: Tally's rate / the baseline's in the same round; the median, each round's in brackets.")
    print("  raw SQL: lock the account row, insert one entry, commit. pgledger: pgledger_create_transfer")
    print("  from the organization's account to its consumed account.")

    rows = []
    for scale in (hot, spread):
        race = Race.run([(TALLY_BATCHES, tally[scale]), (RAW_BATCHES, raw[scale])], made)
        rows.append(race.row(f"postings/s, {scale}", "raw SQL", 1.5 if scale == hot else 2.5))
    print_table(
        f"Ledger, batches of {BATCH} debits per call: {WORKERS} worker processes, {SECONDS:g} s a round, "
        f"{ROUNDS} rounds (medians)",
        rows,
        header,
    )
    print(f"  raw SQL: lock the batch's accounts in id order, {BATCH} of the raw inserts, commit.")
    print(f"  spread: each batch is {BATCH} accounts drawn at random from {SPREAD:,}.")

    rows = []
    for scale in (hot, spread):
        for measure, plain, with_budgets in [
            ("debits/s", TALLY_DEBITS, BUDGETED_DEBITS),
            (f"postings/s in batches of {BATCH}", TALLY_BATCHES, BUDGETED_BATCHES),
        ]:
            race = Race.run([(with_budgets, budgeted[scale]), (plain, tally[scale])], made)
            rows.append(race.row(f"{measure}, {scale}", "Tally", 0.9, ours=with_budgets.name))
    print_table(
        f"Ledger with budgets: every posting checked against and counted in 3 budgets (its project's, "
        f"its user's, its key's), beside the same postings on accounts without budgets; {ROUNDS} rounds",
        rows,
        ("measure", "3 budgets", "baseline", "ratio (rounds)", "target", ""),
    )
    print()
    made["Tally"] += made.pop("Tally, 3 budgets")
    _verify(
        tally[hot] + tally[spread] + budgeted[hot] + budgeted[spread],
        raw[hot] + raw[spread],
        pgl[hot] + pgl[spread],
        made,
    )
    print(f"  load average {os.getloadavg()[0]:.1f} as the bench ends")
