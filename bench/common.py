"""Shared set-up for `make bench`: Django on a dedicated PostgreSQL database, and a table
printer that puts every figure beside its same-run baseline."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

BENCH_DB = os.environ.get("BENCH_DATABASE_NAME", "tally_bench")


def setup_django(fresh: bool = True) -> None:
    """Point Django at the bench database (created and migrated from scratch) and set it up."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tally")
    url = base.rsplit("/", 1)[0] + "/" + BENCH_DB
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
    if fresh:
        admin = base.rsplit("/", 1)[0] + "/postgres"
        subprocess.run(
            ["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {BENCH_DB}"], check=True, capture_output=True)
    import django

    django.setup()
    if fresh:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def median_seconds(fn: Callable[[], object], repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(
    title: str,
    rows: Sequence[Sequence[str]],
    header: Sequence[str] = ("measure", "Tally", "baseline", "ratio", "target"),
) -> None:
    """Rows of (measure, ours, baseline, ratio, target), or of another ``header``'s columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title}")
    for row in [header, *rows]:
        print("  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
