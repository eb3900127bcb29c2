"""`make bench`: every benchmark, each printed beside a baseline measured in the same run.

Run one area with `python -m bench ledger` (areas: the modules listed in AREAS). Django is
set up once, on a freshly migrated database; each area makes its own data and its
`main()` prints its table."""

from __future__ import annotations

import importlib
import sys

AREAS = ["ledger", "usage", "api", "close"]


def main() -> None:
    from bench.common import setup_django

    wanted = sys.argv[1:] or AREAS
    setup_django()
    for area in wanted:
        module = importlib.import_module(f"bench.{area}")
        module.main()


if __name__ == "__main__":
    main()
