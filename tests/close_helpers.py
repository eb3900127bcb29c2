"""Shared bits for the month-close and alert tests: a history of postings at fixed
moments, a hash of an organization's statements, and a real Celery worker process
pointed at the pytest database and Redis."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.celery import app
from billing.models import Organization
from ledger import postings
from ledger.models import Account, LotSource, Price, Statement
from ledger.periods import add_months, current_period, month_start

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(ROOT / ".venv" / "bin" / "celery") if (ROOT / ".venv").exists() else "celery"


def past_months(org: Organization, count: int = 2) -> list[dt.date]:
    """The ``count`` months before the current one in ``org``'s time zone, oldest first."""
    current = current_period(timezone.now(), org.tzinfo)
    return [add_months(current, -n) for n in range(count, 0, -1)]


def backdate(org: Organization, moment: dt.datetime) -> None:
    """Make the organization's account look opened at ``moment`` (organizations in these
    tests have a history that starts months ago)."""
    Account.objects.filter(pk=org.account_id).update(created_at=moment)
    org.account.refresh_from_db()


def post_month(
    org: Organization,
    period: dt.date,
    *,
    renew: bool = True,
    debits: int = 6,
    amount: int = 700,
    tag: str = "",
) -> None:
    """A month of activity: the renewal on the 1st, a promotion, debits through the month
    and a refund, every posting at a fixed local moment."""
    tz, account = org.tzinfo, org.account
    start = month_start(period, tz)
    if renew:
        org.subscription.renew(period, now=start)
    Price.objects.get_or_create(operation="training_a10g_per_minute", defaults={"credits_per_unit": 10})
    key = f"{period:%Y-%m}{tag}"
    postings.post_top_up(
        account,
        300,
        key=f"promo:{key}",
        source=LotSource.PROMOTIONAL,
        operation="promotional_grant",
        expires_at=start + dt.timedelta(days=20),
        now=start + dt.timedelta(days=2, hours=9),
    )
    for n in range(debits):
        moment = start + dt.timedelta(days=3 + 4 * n, hours=10)
        job = postings.JobInfo(f"job-{key}-{n}", f"train-{n}", "shelf-detector", "ada", "a10g")
        try:
            postings.debit(
                account,
                amount,
                key=f"debit:{key}:{n}",
                operation="training_a10g_per_minute",
                job=job,
                quantity=amount // 10,
                now=moment,
            )
        except postings.InsufficientCredits:
            continue
        if n == 1:
            postings.refund(
                account,
                job.external_id,
                amount // 4,
                key=f"refund:{key}:{n}",
                operation="training_refund_a10g",
                now=moment + dt.timedelta(hours=1),
            )
    account.refresh_from_db()


def statements_digest(org: Organization) -> str:
    """A hash of every statement of the organization with its daily rows and invoice:
    equal digests mean the customer sees the same statements."""
    digest = hashlib.sha256()
    for statement in Statement.objects.filter(account_id=org.account_id).order_by("period"):
        digest.update(
            repr(
                (
                    statement.period,
                    statement.starts_at.isoformat(),
                    statement.ends_at.isoformat(),
                    statement.brought_forward,
                    statement.parts(),
                    statement.closing_balance,
                )
            ).encode()
        )
        for day in statement.days.order_by("date"):
            digest.update(repr((day.date, day.parts(), day.balance)).encode())
    for invoice in org.invoices.order_by("period"):
        digest.update(
            repr(
                (
                    invoice.period,
                    invoice.total_cents,
                    invoice.currency,
                    [(line.description, line.amount_cents) for line in invoice.lines.order_by("id")],
                )
            ).encode()
        )
    return digest.hexdigest()


def wait_for(condition: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {condition}")


def database_url() -> str:
    """The test database's URL, for the processes a test starts (the host may be a socket
    directory: the embedded server's)."""
    db = settings.DATABASES["default"]
    host = quote(db["HOST"] or "127.0.0.1", safe="")
    return f"postgres://{db['USER']}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A real ``celery worker`` process (prefork) on the test database and Redis."""

    def __init__(self, concurrency: int, email_dir: str) -> None:
        self.name = f"close-test-{uuid.uuid4().hex[:8]}@localhost"
        self.email_dir = email_dir
        self.log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": email_dir,
            "DB_CONN_MAX_AGE": "60",
        }
        self.process = subprocess.Popen(
            [
                CELERY,
                "-A",
                "billing",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                self.name,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._ready, timeout=45, interval=0.5)
        except AssertionError:
            self.stop()
            raise AssertionError("the worker did not start:\n" + self.output()) from None

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("the worker exited:\n" + self.output())
        return bool(app.control.ping(destination=[self.name], timeout=0.5))

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # any pool process left behind


@contextlib.contextmanager
def celery_worker(concurrency: int = 1, email_dir: str | None = None) -> Iterator[Worker]:
    assert settings.REDIS_URL, "the worker tests need REDIS_URL (e.g. redis://127.0.0.1:6379/4)"
    connection.close()  # the worker must not inherit a half-used connection state
    app.control.purge()
    with tempfile.TemporaryDirectory(prefix="tally-mail-") as fallback:
        worker = Worker(concurrency, email_dir or fallback)
        try:
            yield worker
        finally:
            worker.stop()
            if sys.exc_info()[0] is not None:
                print(worker.output()[-5000:])
