"""Shared bits for the ledger tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connections

from ledger import postings
from ledger.checks import account_breaks
from ledger.models import Account, LotSource

T = TypeVar("T")


def new_account(credits: int = 0, *, unlimited: bool = False, time_zone: str = "UTC") -> Account:
    account = postings.open_account(f"acct-{uuid.uuid4().hex[:10]}", time_zone=time_zone, unlimited=unlimited)
    if credits:
        top_up(account, credits)
    return account


def top_up(account: Account, credits: int, source: LotSource = LotSource.PURCHASE, **kw: Any) -> None:
    postings.post_top_up(
        account, credits, key=f"top-up-{uuid.uuid4()}", source=source, operation="credit_pack_test", **kw
    )


def key() -> str:
    return str(uuid.uuid4())


def in_threads[T](calls: list[Callable[[], T]], workers: int = 50) -> list[T | BaseException]:
    """Run every call at once on its own thread and database connection; return each
    result or the exception it raised."""

    def run(call: Callable[[], T]) -> T | BaseException:
        try:
            return call()
        except BaseException as error:  # noqa: BLE001 - the caller inspects it
            return error
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, calls))


def assert_clean(account: Account) -> None:
    account.refresh_from_db()
    breaks = account_breaks(account)
    assert breaks == [], "\n".join(breaks)
