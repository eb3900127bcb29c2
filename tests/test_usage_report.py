"""The usage report: credits used by project, user, resource class or operation over any
range, tied to the day table, as a page and as CSV; managers only."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.db import transaction
from django.test import Client

from billing.models import Organization
from ledger import postings, reports
from ledger.checks import account_breaks
from ledger.models import Account, GroupMonth, LotSource
from ledger.statements import freeze_statements
from tests.factories import make_org
from tests.ledger_helpers import key
from tests.usage_helpers import at, last_month, refund, run_job, this_month, top_up

pytestmark = pytest.mark.django_db


def post_history(org: Organization) -> Organization:
    """Two months of jobs on two projects, a refund, an expiry and an adjustment."""
    last, now = last_month(org), this_month(org)
    top_up(org, 50_000, at(org, last, 1, 1))
    run_job(org, "a-1", 1_000, at(org, last, 3), project="vision", user="ada", resource_class="a100")
    run_job(org, "a-2", 500, at(org, last, 4), project="speech", user="ada", resource_class="h100")
    run_job(org, "a-3", 250, at(org, last, 4, 11), project="vision", user="tim", resource_class="h100")
    refund(org, "a-1", 200, at(org, last, 5))
    top_up(org, 300, at(org, last, 6), LotSource.PROMOTIONAL, expires_at=at(org, last, 20))
    postings.expire_lots(org.account, now=at(org, last, 21))
    postings.adjust(org.account, -40, key=key(), memo="fix", now=at(org, last, 22))
    run_job(org, "b-1", 700, at(org, now, 1, 8), project="speech", user="tim", resource_class="a100")
    return org


@pytest.fixture
def history(org: Organization) -> Organization:
    return post_history(org)


def test_the_report_groups_credits_used_and_ties_to_the_day_table(history: Organization) -> None:
    org, last = history, last_month(history)
    start, end = last, this_month(org)
    by_project = reports.usage_report(org.account, start, end, "project")
    assert [(g.name, g.credits_used) for g in by_project.groups] == [("speech", 1_200), ("vision", 1_050)]
    assert sum(by_project.not_from_jobs) == 300 + 40  # the expired promotion and the adjustment
    assert by_project.total == by_project.day_table_total == 1_200 + 1_050 + 340
    assert by_project.by_month is False and len(by_project.buckets) == (end - start).days + 1

    by_user = reports.usage_report(org.account, start, end, "user")
    assert {g.name: g.credits_used for g in by_user.groups} == {"ada": 1_300, "tim": 950}
    by_class = reports.usage_report(org.account, start, end, "resource_class", {"project": "vision"})
    assert {g.name: g.credits_used for g in by_class.groups} == {"a100": 800, "h100": 250}
    assert by_class.total == 1_050  # a filtered report leaves out what no job accounts for

    only_day = reports.usage_report(org.account, last.replace(day=4), last.replace(day=4), "project")
    assert {g.name: g.series for g in only_day.groups} == {"vision": [250], "speech": [500]}


def test_a_long_range_is_shown_month_by_month(history: Organization) -> None:
    org = history
    start = last_month(org).replace(month=1) if last_month(org).month > 1 else last_month(org)
    report = reports.usage_report(org.account, start - dt.timedelta(days=200), this_month(org), "project")
    assert report.by_month and all(bucket.day == 1 for bucket in report.buckets)
    assert report.total == report.day_table_total == 1_200 + 1_050 + 340
    speech = next(g for g in report.groups if g.name == "speech")
    assert speech.series[-2:] == [500, 700]


def test_the_page_and_its_csv(history: Organization, manager_client: Client) -> None:
    org, last = history, last_month(history)
    query = f"from={last}&to={this_month(org)}&group=project"
    page = manager_client.get(f"/orgs/{org.slug}/usage/report/?{query}").content.decode()
    assert 'data-testid="report-total">2,590<' in page
    assert "The total is the day table's credits used over these days (2,590)" in page
    assert "group=user&amp;project=vision" in page or "project=vision&amp;group=user" in page
    answer = manager_client.get(f"/orgs/{org.slug}/usage/report.csv?{query}")
    assert answer["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))  # type: ignore[attr-defined]
    assert rows[0] == ["from", "to", "project", "credits_used"]
    assert sum(int(row[3]) for row in rows[1:]) == 2_590
    assert [last.replace(day=4).isoformat(), last.replace(day=4).isoformat(), "speech", "500"] in rows


def test_report_csv_cells_cannot_run_as_formulas(org: Organization, manager_client: Client) -> None:
    top_up(org, 1_000, at(org, this_month(org), 1, 1))
    run_job(org, "x-1", 10, at(org, this_month(org), 1, 2), project="=HYPERLINK(1)")
    answer = manager_client.get(f"/orgs/{org.slug}/usage/report.csv?group=project")
    text = b"".join(answer.streaming_content).decode()  # type: ignore[attr-defined]
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-13-01",
        "to=yesterday",
        "group=team",
        "from=2026-05-01&to=2026-04-01",
        "from=2020-01-01&to=2026-01-01",
    ],
)
def test_bad_queries_are_a_clear_400(org: Organization, manager_client: Client, query: str) -> None:
    answer = manager_client.get(f"/orgs/{org.slug}/usage/report/?{query}")
    assert answer.status_code == 400
    assert "That is not a month or a day" in answer.content.decode()
    assert manager_client.get(f"/orgs/{org.slug}/usage/report.csv?{query}").status_code == 400


def test_the_report_is_for_managers(
    org: Organization, manager_client: Client, member_client: Client, outsider_client: Client
) -> None:
    for path in ("usage/report/", "usage/report.csv"):
        assert manager_client.get(f"/orgs/{org.slug}/{path}").status_code == 200
        assert member_client.get(f"/orgs/{org.slug}/{path}").status_code == 403
        assert outsider_client.get(f"/orgs/{org.slug}/{path}").status_code == 404


def test_closed_months_are_read_from_their_month_sums_and_agree_with_the_days() -> None:
    org = post_history(make_org())  # nothing posted after the history: its months can close
    last = last_month(org)
    before = reports.usage_report(org.account, last, this_month(org), "user")
    by_days = reports.usage_report(org.account, last - dt.timedelta(days=70), this_month(org), "project")
    with transaction.atomic():
        freeze_statements([Account.objects.select_for_update().get(pk=org.account_id)], last)
    assert GroupMonth.objects.filter(account=org.account, month=last, dimension="project").count() == 2
    by_months = reports.usage_report(org.account, last - dt.timedelta(days=70), this_month(org), "project")
    assert by_months.by_month and by_months.groups == by_days.groups
    assert by_months.total == by_months.day_table_total == by_days.total
    assert reports.usage_report(org.account, last, this_month(org), "user").groups == before.groups
    assert account_breaks(org.account) == []
