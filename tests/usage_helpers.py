"""Data for the usage tests: top-ups and jobs posted through the ledger at chosen moments."""

from __future__ import annotations

import datetime as dt
import uuid

from django.utils import timezone

from billing.models import Organization
from ledger import postings
from ledger.models import LotSource
from ledger.periods import add_months, current_period, month_start


def this_month(org: Organization) -> dt.date:
    return current_period(timezone.now(), org.tzinfo)


def last_month(org: Organization) -> dt.date:
    return add_months(this_month(org), -1)


def at(org: Organization, period: dt.date, day: int, hour: int = 9, minute: int = 0) -> dt.datetime:
    """A local moment on ``day`` of the month starting ``period``."""
    return month_start(period, org.tzinfo).replace(day=day, hour=hour, minute=minute)


def top_up(
    org: Organization,
    credits: int,
    when: dt.datetime,
    source: LotSource = LotSource.PURCHASE,
    expires_at: dt.datetime | None = None,
) -> None:
    postings.post_top_up(
        org.account,
        credits,
        key=f"top-up-{uuid.uuid4()}",
        source=source,
        operation="credit_pack_standard",
        expires_at=expires_at,
        now=when,
    )
    org.account.refresh_from_db()


def run_job(
    org: Organization,
    external_id: str,
    credits: int,
    when: dt.datetime,
    *,
    name: str | None = None,
    project: str = "shelf-detector",
    user: str = "ada@example.com",
    resource_class: str = "a100",
    operation: str = "training_a100_per_minute",
) -> None:
    job = postings.JobInfo(
        external_id, name if name is not None else external_id, project, user, resource_class
    )
    postings.debit(org.account, credits, key=f"debit-{uuid.uuid4()}", operation=operation, job=job, now=when)
    org.account.refresh_from_db()


def refund(org: Organization, external_id: str, credits: int, when: dt.datetime) -> None:
    postings.refund(
        org.account,
        external_id,
        credits,
        key=f"refund-{uuid.uuid4()}",
        operation="training_refund_a100",
        now=when,
    )
    org.account.refresh_from_db()


def busy_month(org: Organization, period: dt.date, days: int, jobs_per_day: int) -> None:
    """``days`` days of ``jobs_per_day`` jobs each, funded on the 1st."""
    top_up(org, days * jobs_per_day * 100, at(org, period, 1, 0, 5))
    for day in range(1, days + 1):
        for number in range(jobs_per_day):
            run_job(
                org,
                f"job-{period:%m}-{day:02d}-{number:02d}",
                10 + number,
                at(org, period, day, 8, number),
                project=f"project-{number % 3}",
                user=f"user{number % 4}@example.com",
            )
