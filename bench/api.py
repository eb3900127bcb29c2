"""`python -m bench api`: requests per second for `GET credits/balance`, `POST debits` and
`POST batch` (100 debits a request) against gunicorn on this machine, beside a trivial
Django view (`/healthz`) and the same postings made in one process, in the same run.

The load comes from a separate process (`python -m bench.api load SPEC`): a few processes of
threads, each sending requests one after another over loopback, for a fixed time and at most
a fixed count. Debits are spread over several organizations, as a real platform's are; one
organization's debits serialize on its account row by design."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PORT = int(os.environ.get("BENCH_API_PORT", "8165"))
WORKERS = int(os.environ.get("BENCH_API_WORKERS", str(max(2, (os.cpu_count() or 1) * 2))))
WORKER_CLASS = os.environ.get("BENCH_API_WORKER_CLASS", "gthread")
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "5"))
MAX_REQUESTS = 50_000
LOAD_PROCESSES = 2
THREADS_PER_PROCESS = 8
ORGS = LOAD_PROCESSES * THREADS_PER_PROCESS
TARGET = 0.5
ROUNDS = int(os.environ.get("BENCH_API_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parent.parent


# --- The load generator (runs in its own process) ---------------------------------------


def _batch_body(size: int) -> bytes:
    """A batch of ``size`` debits, each with a key of its own (a key sent twice is a replay,
    which posts nothing)."""
    run = uuid.uuid4().hex
    return json.dumps(
        {
            "postings": [
                {
                    "kind": "debit",
                    "idempotency_key": f"{run}-{n}",
                    "operation": "image_inference",
                    "quantity": 1,
                }
                for n in range(size)
            ]
        }
    ).encode()


def _worker(
    spec: dict[str, Any],
    keys: list[str],
    deadline: float,
    budget: int,
    counts: dict[int, int],
    lock: threading.Lock,
) -> None:
    body = json.dumps(spec["body"]).encode() if spec.get("body") is not None else None
    conn: http.client.HTTPConnection | None = None
    sent = 0
    while time.monotonic() < deadline and sent < budget:
        if spec.get("batch"):
            body = _batch_body(spec["batch"])
        headers = {"Authorization": f"Bearer {keys[sent % len(keys)]}"} if keys else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn = conn or http.client.HTTPConnection(HOST, PORT, timeout=30)
            conn.request(spec["method"], spec["path"], body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            status = 0
            if conn:
                conn.close()
            conn = None
        sent += 1
        with lock:
            counts[status] = counts.get(status, 0) + 1


def _process(spec: dict[str, Any], keys: list[str], queue: Any) -> None:
    counts: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + spec["seconds"]
    budget = spec["max_requests"] // (LOAD_PROCESSES * THREADS_PER_PROCESS)
    threads = [
        threading.Thread(
            target=_worker, args=(spec, keys[i::THREADS_PER_PROCESS] or keys, deadline, budget, counts, lock)
        )
        for i in range(THREADS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(counts)


def load(spec: dict[str, Any]) -> dict[str, Any]:
    keys: list[str] = spec.get("keys", [])
    queue: Any = multiprocessing.Queue()
    per_process = [keys[i::LOAD_PROCESSES] or keys for i in range(LOAD_PROCESSES)]
    start = time.monotonic()
    processes = [
        multiprocessing.Process(target=_process, args=(spec, per_process[i], queue))
        for i in range(LOAD_PROCESSES)
    ]
    for process in processes:
        process.start()
    totals: dict[int, int] = {}
    for _ in processes:
        for status, n in queue.get().items():
            totals[status] = totals.get(status, 0) + n
    for process in processes:
        process.join()
    elapsed = time.monotonic() - start
    ok = sum(n for status, n in totals.items() if 200 <= status < 300)
    return {"ok": ok, "statuses": totals, "seconds": elapsed, "rps": ok / elapsed}


# --- The benchmark (Django is set up by bench.__main__) ---------------------------------


def _make_keys() -> tuple[list[str], list[str]]:
    from billing import demo
    from billing.models import ApiKey, Organization, Plan, Scope, Subscription
    from ledger import postings
    from ledger.models import LotSource

    demo.seed_catalog()
    readers, writers = [], []
    for n in range(ORGS):
        slug = f"bench-api-{n}-{uuid.uuid4().hex[:6]}"
        org = Organization.objects.create(name=slug, slug=slug)
        Subscription.objects.create(organization=org, plan=Plan.objects.get(slug="professional"))
        postings.post_top_up(
            org.account, 10**12, key="bench-funds", source=LotSource.PURCHASE, operation="credit_pack_bench"
        )
        readers.append(ApiKey.issue(org, name="bench", scopes=[Scope.ACCOUNT_READ])[1])
        writers.append(ApiKey.issue(org, name="bench", scopes=[Scope.USAGE_WRITE])[1])
    return readers, writers


def _start_gunicorn() -> subprocess.Popen[bytes]:
    env = {**os.environ, "DB_CONN_MAX_AGE": "60", "DJANGO_SETTINGS_MODULE": "billing.settings"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "billing.wsgi:application",
            "--workers",
            str(WORKERS),
            "--worker-class",
            WORKER_CLASS,
            "--threads",
            "4" if WORKER_CLASS == "gthread" else "1",
            "--bind",
            f"{HOST}:{PORT}",
            "--log-level",
            "warning",
            "--backlog",
            "1024",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection(HOST, PORT, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().read() == b"ok":
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.2)


CPU_ROLES = ("server", "PostgreSQL", "Redis", "load generator")


def _cpu_used(server_pid: int) -> dict[str, float] | None:
    """CPU seconds used so far by each role: gunicorn (the server process and its workers),
    every PostgreSQL and Redis process, and the finished load generators (this process's
    waited-for children). None where there is no /proc to read them from."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(CPU_ROLES, 0.0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # from the state on: ppid, ..., utime, stime
        role = (
            "server"
            if server_pid in (int(entry.name), int(fields[1]))
            else "PostgreSQL"
            if name.startswith("postgres")
            else "Redis"
            if name.startswith("redis-server")
            else None
        )
        if role is not None:
            used[role] += (int(fields[11]) + int(fields[12])) / tick
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["load generator"] = children.ru_utime + children.ru_stime
    return used


def _measure(spec: dict[str, Any], server_pid: int) -> dict[str, Any]:
    """One timed load (after a short warm-up), with the CPU each role spent per successful
    request while it ran."""
    spec = {"seconds": SECONDS, "max_requests": MAX_REQUESTS, **spec}

    def load(one: dict[str, Any]) -> dict[str, Any]:
        return json.loads(
            subprocess.run(  # type: ignore[no-any-return]
                [sys.executable, "-m", "bench.api", "load", json.dumps(one)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=spec["seconds"] + 60,
                check=True,
            ).stdout
        )

    load({**spec, "seconds": 1.0})  # warm-up
    before = _cpu_used(server_pid)
    result = load(spec)
    after = _cpu_used(server_pid)
    if before is not None and after is not None:
        result["cpu_us"] = {
            role: (after[role] - before[role]) / max(result["ok"], 1) * 1e6 for role in CPU_ROLES
        }
    return result


def _cpu_table(results: dict[str, list[dict[str, Any]]]) -> None:
    """Where each request's CPU goes (medians over the rounds), and the ratio an endpoint
    could reach at most on this machine if its server side cost no more than the trivial
    view's: the cores are saturated, so a rate is inversely the CPU a request costs in all."""
    from bench.common import print_table

    if any("cpu_us" not in run for runs in results.values() for run in runs):
        return
    cost = {
        name: {role: statistics.median(run["cpu_us"][role] for run in runs) for role in CPU_ROLES}
        for name, runs in results.items()
    }
    trivial = cost["/healthz"]
    rows = []
    for name, roles in cost.items():
        ceiling = (
            "-"
            if name == "/healthz"
            else (
                f"{sum(trivial.values()) / (trivial['server'] + sum(roles.values()) - roles['server']):.2f}"
            )
        )
        rows.append(
            (name, *(f"{roles[role]:.0f}" for role in CPU_ROLES), f"{sum(roles.values()):.0f}", ceiling)
        )
    print_table(
        f"api: CPU per request in microseconds ({os.cpu_count()} cores), and the ratio to "
        "/healthz reachable if the server side cost what /healthz's does",
        rows,
        header=("measure", *CPU_ROLES, "all", "ceiling"),
    )


BATCH = 100


def _in_process(seconds: float = 3.0) -> dict[str, float]:
    """Postings per second made in this process, one at a time and 100 at a time (the
    same ledger calls the endpoints make), on the bench's organizations."""
    from ledger import postings
    from ledger.models import Account

    accounts = list(Account.objects.filter(slug__startswith="bench-api-").values_list("pk", flat=True))
    rates = {}
    for name, size in (("debits", 1), ("batch", BATCH)):
        done, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            run = uuid.uuid4().hex
            account = accounts[done % len(accounts)]
            postings.post_batch(
                [
                    postings.Posting.debit(account, key=f"{run}-{n}", operation="image_inference", quantity=1)
                    for n in range(size)
                ]
            )
            done += size
        rates[name] = done / (time.monotonic() - start)
    return rates


def main() -> None:
    from bench.common import print_table

    readers, writers = _make_keys()
    in_process = _in_process()
    server = _start_gunicorn()
    specs = {
        "/healthz": {"method": "GET", "path": "/healthz"},
        "GET credits/balance": {"method": "GET", "path": "/api/v1/credits/balance", "keys": readers},
        "POST debits": {
            "method": "POST",
            "path": "/api/v1/debits",
            "keys": writers,
            "body": {"operation": "image_inference", "quantity": 1},
        },
        "POST batch": {"method": "POST", "path": "/api/v1/batch", "keys": writers, "batch": BATCH},
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    try:
        # Every measure runs ROUNDS times, the trivial view between the others each round,
        # so a passing burst of load on this small machine moves one round, not the figure.
        for _ in range(ROUNDS):
            for name in (
                "/healthz",
                "GET credits/balance",
                "/healthz",
                "POST debits",
                "/healthz",
                "POST batch",
            ):
                results[name].append(_measure(specs[name], server.pid))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    trivial = statistics.median(r["rps"] for r in results["/healthz"])
    rows = []
    for name in ("GET credits/balance", "POST debits", "POST batch"):
        runs = results[name]
        bad: dict[str, int] = {}
        for run in runs:
            for status, n in run["statuses"].items():
                if not str(status).startswith("2"):
                    bad[status] = bad.get(status, 0) + n
        rate = statistics.median(r["rps"] for r in runs)
        label = f"{name} req/s" + (f" (non-2xx: {bad})" if bad else "")
        per_round = ", ".join(f"{r['rps'] / trivial:.2f}" for r in runs)
        rows.append(
            (
                label,
                f"{rate:.0f}",
                f"{trivial:.0f} (/healthz)",
                f"{rate / trivial:.2f} ({per_round})",
                f">= {TARGET:.2f}",
            )
        )
    postings_rows = []
    for name, size, key, target in (
        ("POST debits", 1, "debits", 1_000),
        ("POST batch", BATCH, "batch", 4_000),
    ):
        rate = statistics.median(r["rps"] for r in results[name]) * size
        met = "met" if rate >= target else "MISSED"
        postings_rows.append(
            (
                f"{name}: postings/s",
                f"{rate:,.0f}",
                f"{in_process[key]:,.0f} (in one process)",
                f"{rate / in_process[key]:.2f}",
                f">= {target:,} {met}",
            )
        )
    print_table(
        f"api: gunicorn {WORKERS} {WORKER_CLASS} workers, {LOAD_PROCESSES}x{THREADS_PER_PROCESS} client "
        f"threads, {SECONDS:.0f} s each, {ROUNDS} rounds (medians), {ORGS} organizations",
        rows,
    )
    print_table(
        "api: postings per second over HTTP, beside the same ledger calls made in one process", postings_rows
    )
    _cpu_table(results)


if __name__ == "__main__" and sys.argv[1:2] == ["load"]:
    print(json.dumps(load(json.loads(sys.argv[2]))))
