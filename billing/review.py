"""The review: what in an organization's ledger deserves a manager's look, computed from
the stored rows (seed 003's anomaly table). Each rule is a function returning findings,
each finding with a link to the transactions behind it.

- a pending hold older than jobs of its operation usually run;
- holds that expired unsettled ("no charge after reserve");
- runs of refunds: a resource class with REFUND_RUN or more refunds in a day;
- jobs settled far above their hold (their estimate);
- a job id pattern or an API key first seen in the last NEW_DAYS days;
- days far above the usual (UNUSUAL x the median of the last 60 days' usage).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import statistics
from collections import Counter
from collections.abc import Callable

from django.core.cache import cache
from django.db.models import F, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from billing import formats
from billing.models import ApiKey, Organization
from ledger.models import DailyRollup, Entry, EntryKind, Hold, HoldStatus

LOOKBACK = dt.timedelta(days=30)  # how far back the review looks
NEW_DAYS = 7
REFUND_RUN = 3
ABOVE_ESTIMATE = 1.5  # a settle this many times its hold is "far above"
UNUSUAL = 3  # a day this many times the median day is "far above the usual"
HOLD_TOO_OLD = 3  # a pending hold this many times its operation's median run is "too old"
DEFAULT_RUN = dt.timedelta(hours=6)  # when an operation has no settled holds to learn from
BADGE_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    detail: str
    url: str  # the transactions behind it
    when: dt.datetime | dt.date


def review(org: Organization, now: dt.datetime | None = None) -> list[Finding]:
    """Every finding, newest first."""
    now = now or timezone.now()
    found = [finding for rule in RULES for finding in rule(org, now)]
    return sorted(found, key=lambda f: _moment(f.when, org), reverse=True)


def badge_count(org: Organization) -> int:
    """How many findings there are, as the menu's badge shows (cached a few minutes)."""
    key = f"review-count:{org.pk}"
    count = cache.get(key)
    if count is None:
        count = len(review(org))
        cache.set(key, count, BADGE_SECONDS)
    return int(count)


def _transactions(org: Organization, **filters: str) -> str:
    return reverse("transactions", args=[org.slug]) + ("?" + urlencode(filters) if filters else "")


def _moment(when: dt.datetime | dt.date, org: Organization) -> dt.datetime:
    if isinstance(when, dt.datetime):
        return when
    return dt.datetime.combine(when, dt.time(23, 59), org.tzinfo)


def old_holds(org: Organization, now: dt.datetime) -> list[Finding]:
    runs: dict[str, list[float]] = {}
    settled = Hold.objects.filter(
        account=org.account, status=HoldStatus.SETTLED, resolved_at__gte=now - LOOKBACK * 3
    ).values_list("operation", "created_at", "resolved_at")
    for operation, created, resolved in settled:
        if resolved is not None:
            runs.setdefault(operation, []).append((resolved - created).total_seconds())
    found = []
    for hold in Hold.objects.filter(account=org.account, status=HoldStatus.PENDING).select_related("job"):
        usual = (
            dt.timedelta(seconds=statistics.median(runs[hold.operation]))
            if len(runs.get(hold.operation, [])) >= 5
            else DEFAULT_RUN
        )
        age = now - hold.created_at
        if age > usual * HOLD_TOO_OLD:
            job = hold.job.external_id if hold.job else ""
            found.append(
                Finding(
                    "old_hold",
                    f"Hold {hold.pk} pending for {formats.duration(age)}",
                    f"{hold.amount:,} credits held for {hold.operation}{f' (job {job})' if job else ''}; "
                    f"jobs of this kind usually finish within {formats.duration(usual)}.",
                    _transactions(org, job=job) if job else _transactions(org),
                    hold.created_at,
                )
            )
    return found


def expired_holds(org: Organization, now: dt.datetime) -> list[Finding]:
    holds = Hold.objects.filter(
        account=org.account, status=HoldStatus.EXPIRED, resolved_at__gte=now - LOOKBACK
    ).select_related("job")
    return [
        Finding(
            "expired_hold",
            f"No charge after reserve: hold {hold.pk} expired unsettled",
            f"{hold.amount:,} credits were held for {hold.operation}"
            f"{f' (job {hold.job.external_id})' if hold.job else ''} and released when the hold expired; "
            "the job runner never settled or released it.",
            _transactions(org, job=hold.job.external_id) if hold.job else _transactions(org),
            hold.resolved_at or hold.expires_at,
        )
        for hold in holds
    ]


def refund_runs(org: Organization, now: dt.datetime) -> list[Finding]:
    refunds = Entry.objects.filter(
        account=org.account, kind=EntryKind.REFUND, created_at__gte=now - LOOKBACK
    ).values_list("local_date", "job__resource_class")
    counts = Counter((day, resource or "") for day, resource in refunds)
    return [
        Finding(
            "refund_run",
            f"{count} refunds for {resource or 'jobs without a resource class'} on {formats.day(day)}",
            "Several jobs of one resource class gave credits back the same day: a failing node or "
            "a bad release may be behind it.",
            _transactions(org, kind=EntryKind.REFUND),
            day,
        )
        for (day, resource), count in counts.items()
        if count >= REFUND_RUN
    ]


def above_estimate(org: Organization, now: dt.datetime) -> list[Finding]:
    holds = Hold.objects.filter(
        account=org.account,
        status=HoldStatus.SETTLED,
        resolved_at__gte=now - LOOKBACK,
        settled_amount__gt=F("amount") * ABOVE_ESTIMATE,
    ).select_related("job")
    return [
        Finding(
            "above_estimate",
            f"Settled at {hold.settled_amount / hold.amount:.1f}x its estimate",
            f"Hold {hold.pk} reserved {hold.amount:,} credits for {hold.operation}"
            f"{f' (job {hold.job.external_id})' if hold.job else ''}; "
            f"it was settled for {hold.settled_amount:,}.",
            _transactions(org, job=hold.job.external_id) if hold.job else _transactions(org),
            hold.resolved_at or hold.created_at,
        )
        for hold in holds
        if hold.settled_amount is not None
    ]


JOB_PATTERN = re.compile(r"[0-9]+")


def job_pattern(external_id: str) -> str:
    """A job id with its numbers masked: run-2026-0042 and run-2026-0043 share run-#-#."""
    return JOB_PATTERN.sub("#", external_id)


def first_seen(org: Organization, now: dt.datetime) -> list[Finding]:
    """Job id patterns and API keys first seen in the last NEW_DAYS days, on an account
    older than that (a new organization's everything is new)."""
    since = now - dt.timedelta(days=NEW_DAYS)
    if org.created_at > since:
        return []
    found = []
    seen_before = {
        job_pattern(external_id)
        for external_id in org.account.jobs.filter(created_at__lt=since).values_list(
            "external_id", flat=True
        )[:5000]
    }
    new_jobs: dict[str, tuple[str, dt.datetime]] = {}
    for external_id, created in org.account.jobs.filter(created_at__gte=since).values_list(
        "external_id", "created_at"
    ):
        pattern = job_pattern(external_id)
        if pattern not in seen_before and pattern not in new_jobs:
            new_jobs[pattern] = (external_id, created)
    for pattern, (external_id, created) in new_jobs.items():
        found.append(
            Finding(
                "new_job_pattern",
                f"Jobs of a new kind: {pattern}",
                f"The first was {external_id}; no job id of this shape was seen before.",
                _transactions(org, job=external_id),
                created,
            )
        )
    for key in ApiKey.objects.filter(organization=org, created_at__gte=since, last_used_at__isnull=False):
        found.append(
            Finding(
                "new_api_key",
                f"A new API key in use: {key.name}",
                f"{key.name} ({key.prefix}…) was created {formats.day(key.created_at.date())} "
                "and has been used since.",
                reverse("api_keys", args=[org.slug]),
                key.last_used_at or key.created_at,
            )
        )
    return found


def unusual_days(org: Organization, now: dt.datetime) -> list[Finding]:
    today = org.account.local_date(now)
    days = list(
        DailyRollup.objects.filter(account=org.account, date__gte=today - dt.timedelta(days=60))
        .values_list("date")
        .annotate(used=Sum(F("debits") - F("refunds")))
        .values_list("date", "used")
    )
    if len(days) < 14:
        return []
    usual = statistics.median(max(used, 0) for _, used in days)
    recent = today - dt.timedelta(days=LOOKBACK.days)
    return [
        Finding(
            "unusual_day",
            f"{formats.day(date)}: {used:,} credits used",
            f"{used / usual:.1f}x a usual day ({round(usual):,} credits, the median of the last 60 days).",
            reverse("usage_day", args=[org.slug, date.isoformat()]),
            date,
        )
        for date, used in days
        if date >= recent and usual > 0 and used > UNUSUAL * usual
    ]


RULES: list[Callable[[Organization, dt.datetime], list[Finding]]] = [
    old_holds,
    expired_holds,
    refund_runs,
    above_estimate,
    first_seen,
    unusual_days,
]
