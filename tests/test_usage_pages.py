"""The usage page, its day expansions and the ledger CSV: what managers see, who may see it,
and what it costs in queries."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django import DjangoAssertNumQueries

from billing.models import GB, Organization, Role
from ledger.models import Statement, StatementDay
from ledger.periods import add_months, month_bounds
from tests.factories import make_org, make_user
from tests.usage_helpers import at, busy_month, last_month, refund, run_job, this_month, top_up

pytestmark = pytest.mark.django_db

HEADER = "row_type,date,top_ups,credits_used,balance,experiment,project,user,resource_class"


def usage_url(org: Organization, **params: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return reverse("usage", args=[org.slug]) + (f"?{query}" if query else "")


def export_url(org: Organization, period: dt.date) -> str:
    return reverse("usage_export", args=[org.slug]) + f"?period={period:%Y-%m}"


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def read_csv(response: HttpResponseBase) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = response.getvalue().decode()
    return list(csv.reader(io.StringIO(body)))


# --- Who may see it ----------------------------------------------------------------------


def test_manager_opens_usage(manager_client: Client, org: Organization) -> None:
    response = manager_client.get(usage_url(org))
    assert response.status_code == 200
    assert "Billing period - Current month" in response.text


def test_member_cannot_open_usage(member_client: Client, org: Organization) -> None:
    assert member_client.get(usage_url(org)).status_code == 403


def test_member_cannot_export_ledger(member_client: Client, org: Organization) -> None:
    assert member_client.get(export_url(org, this_month(org))).status_code == 403


def test_member_cannot_expand_a_day(member_client: Client, org: Organization) -> None:
    day = this_month(org).isoformat()
    assert member_client.get(reverse("usage_day", args=[org.slug, day])).status_code == 403


def test_other_organizations_manager_gets_not_found(outsider_client: Client, org: Organization) -> None:
    assert outsider_client.get(usage_url(org)).status_code == 404
    assert outsider_client.get(export_url(org, this_month(org))).status_code == 404


def test_anonymous_is_sent_to_sign_in(org: Organization) -> None:
    response = Client().get(usage_url(org))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_usage_refuses_post(manager_client: Client, org: Organization) -> None:
    assert manager_client.post(usage_url(org)).status_code == 405


def test_unknown_period_is_not_found(manager_client: Client, org: Organization) -> None:
    future = add_months(this_month(org), 1)
    before_any_activity = add_months(this_month(org), -6)
    assert manager_client.get(usage_url(org, period=f"{future:%Y-%m}")).status_code == 404
    assert manager_client.get(usage_url(org, period=f"{before_any_activity:%Y-%m}")).status_code == 404
    assert manager_client.get(export_url(org, future)).status_code == 404


def test_a_month_outside_the_history_says_so_on_a_page_of_tally(
    manager_client: Client, org: Organization
) -> None:
    before_any_activity = add_months(this_month(org), -6)
    response = manager_client.get(usage_url(org, period=f"{before_any_activity:%Y-%m}"))
    assert response.status_code == 404
    assert f"has no usage in {before_any_activity:%B %Y}" in response.text
    assert "not a member" not in response.text
    assert 'data-testid="usage-problem"' in response.text and "<html" in response.text


@pytest.mark.parametrize("period", ["2026-13", "march", "2026-3", "2026-03-01"])
def test_malformed_period_is_a_clear_bad_request(
    manager_client: Client, org: Organization, period: str
) -> None:
    response = manager_client.get(usage_url(org, period=period))
    assert response.status_code == 400
    assert "YYYY-MM" in response.text
    assert response["Content-Type"].startswith("text/html") and "<html" in response.text  # a styled page
    export = reverse("usage_export", args=[org.slug]) + f"?period={period}"
    assert manager_client.get(export).status_code == 400


# --- Plan usage ----------------------------------------------------------------------------


def test_four_plan_bars_with_their_labels(manager_client: Client, org: Organization) -> None:
    org.storage_bytes = int(41.5 * GB)
    org.deployments = 3
    org.save()
    make_user(org, Role.MEMBER)
    text = manager_client.get(usage_url(org)).text
    assert "5,000 of 10,000 monthly credits remaining" in text
    assert "41.5GB of 50GB storage used" in text
    assert "3 of 5 deployments used" in text
    assert "2 of 10 seats used" in text
    assert text.count('role="progressbar"') >= 4
    assert 'aria-valuenow="5000"' in text and 'aria-valuemax="10000"' in text


def test_bars_turn_to_warning_colour_near_the_limit(manager_client: Client, org: Organization) -> None:
    org.deployments = 4
    org.storage_bytes = 50 * GB
    org.save()
    text = manager_client.get(usage_url(org)).text
    deployments = text.split('data-testid="gauge-deployments"')[1].split("</li>")[0]
    storage = text.split('data-testid="gauge-storage"')[1].split("</li>")[0]
    credits = text.split('data-testid="gauge-credits"')[1].split("</li>")[0]
    assert "is-warning" in deployments
    assert "is-exhausted" in storage
    assert "is-warning" not in credits and "is-exhausted" not in credits


def test_enterprise_shows_unlimited_credits_and_storage_without_cap() -> None:
    org = make_org("enterprise")
    org.storage_bytes = 860 * GB
    org.save()
    text = client_for(make_user(org, Role.MANAGER)).get(usage_url(org)).text
    credits = text.split('data-testid="gauge-credits"')[1].split("</li>")[0]
    assert "Unlimited training credits remaining" in credits
    assert 'role="progressbar"' not in credits
    assert "860GB storage used" in text
    assert "GB of" not in text


def test_menu_shows_manager_the_mini_bars_and_usage_link(manager_client: Client, org: Organization) -> None:
    text = manager_client.get(reverse("organization", args=[org.slug])).text
    assert f'href="{usage_url(org)}"' in text
    for kind in ("credits", "storage", "deployments"):
        assert f'data-testid="menu-gauge-{kind}"' in text
    assert 'data-testid="menu-gauge-seats"' not in text


def test_member_never_sees_the_usage_link(member_client: Client, org: Organization) -> None:
    text = member_client.get(reverse("organization", args=[org.slug])).text
    assert usage_url(org) not in text
    assert "menu-gauge" not in text


# --- The day table -------------------------------------------------------------------------


def test_day_table_lists_days_newest_first(manager_client: Client) -> None:
    org = make_org("standard")
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    top_up(org, 1_000, at(org, period, 2))
    run_job(org, "train-1", 300, at(org, period, 3))
    run_job(org, "train-2", 200, at(org, period, 5))
    text = client_for(manager).get(usage_url(org, period=f"{period:%Y-%m}")).text
    table = text.split('data-testid="day-table"')[1]
    dates = [f"{period:%Y-%m}-{day:02d}" for day in (5, 3, 2)]
    positions = [table.index(f'id="day-{date}"') for date in dates]
    assert positions == sorted(positions)
    assert "+1,000" in table and ">700<" in table and ">500<" in table


def test_empty_state_when_nothing_happened() -> None:
    org = make_org("standard")
    text = client_for(make_user(org, Role.MANAGER)).get(usage_url(org)).text
    assert "No usage data found." in text


def test_expanding_a_day_loads_its_jobs(manager_client: Client, org: Organization) -> None:
    when = at(org, this_month(org), 1, 0, 30)
    run_job(
        org,
        "ext-1",
        120,
        when,
        name="shelf-train-0001",
        project="shelf-detector",
        user="grace@example.com",
        resource_class="h100",
    )
    run_job(org, "ext-1", 30, when.replace(minute=40), name="shelf-train-0001")
    run_job(org, "ext-2", 50, when.replace(minute=50), name="catalog-images-0002", resource_class="a10g")
    day = when.date().isoformat()
    response = manager_client.get(reverse("usage_day", args=[org.slug, day]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    for heading in ("Name", "Project", "User", "Resource", "Credits Used"):
        assert f">{heading}<" in response.text
    assert "shelf-train-0001" in response.text and ">150<" in response.text
    assert "grace@example.com" in response.text and "h100" in response.text
    assert response.text.index("shelf-train-0001") < response.text.index("catalog-images-0002")


def test_day_link_without_javascript_opens_the_day_in_the_page(
    manager_client: Client, org: Organization
) -> None:
    when = at(org, this_month(org), 1, 0, 30)
    run_job(org, "ext-1", 120, when, name="nightly-finetune")
    day = when.date().isoformat()
    response = manager_client.get(reverse("usage_day", args=[org.slug, day]))
    assert response.status_code == 302
    page = manager_client.get(response["Location"].split("#")[0])
    assert f'data-testid="jobs-{day}"' in page.text
    assert "nightly-finetune" in page.text


def test_a_day_outside_any_period_is_not_found(manager_client: Client, org: Organization) -> None:
    far = add_months(this_month(org), -12).isoformat()
    assert manager_client.get(reverse("usage_day", args=[org.slug, far])).status_code == 404
    assert manager_client.get(reverse("usage_day", args=[org.slug, "yesterday"])).status_code == 400


def test_period_switch_with_htmx_swaps_only_the_period(manager_client: Client) -> None:
    org = make_org("standard")
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    top_up(org, 1_000, at(org, period, 2))
    client = client_for(manager)
    partial = client.get(usage_url(org, period=f"{period:%Y-%m}"), headers={"HX-Request": "true"})
    assert "<html" not in partial.text and "Plan usage" not in partial.text
    first, last = month_bounds(period, org.tzinfo)
    assert f"Billing period - 1 {first:%b %Y}" in partial.text
    whole = client.get(usage_url(org, period=f"{period:%Y-%m}"))
    assert "<html" in whole.text and "Plan usage" in whole.text
    assert f'<option value="{period:%Y-%m}" selected>' in whole.text


# --- Past months -------------------------------------------------------------------------


def test_closed_month_shows_its_statement(manager_client: Client) -> None:
    org = make_org("standard")
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    starts_at, ends_at = month_bounds(period, org.tzinfo)
    statement = Statement.objects.create(
        account=org.account,
        period=period,
        starts_at=starts_at,
        ends_at=ends_at,
        brought_forward=1_200,
        top_ups_purchase=5_000,
        debits=3_100,
        expired=400,
        closing_balance=2_700,
    )
    StatementDay.objects.create(
        statement=statement,
        date=period.replace(day=7),
        top_ups_purchase=5_000,
        debits=3_100,
        expired=400,
        balance=2_700,
    )
    top_up(org, 10, at(org, period, 7))  # so the month is in the list
    text = client_for(manager).get(usage_url(org, period=f"{period:%Y-%m}")).text
    for label, figure in [
        ("Balance brought forward", "1,200"),
        ("Top-ups", "+5,000"),
        ("Purchased packs", "5,000"),
        ("Credits used", "&minus;3,500"),
        ("Debits", "3,100"),
        ("Expired", "400"),
        ("Closing balance", "2,700"),
    ]:
        assert f'{label}</th><td class="num">{figure}<' in text
    assert "refunds" not in text
    assert f"Statement for {period:%B %Y}" in text
    assert ">3,500<" in text  # the frozen day: 3,100 used plus 400 expired


def test_past_month_without_statement_is_computed_from_the_ledger(manager_client: Client) -> None:
    org = make_org("standard")
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    previous = add_months(period, -1)
    top_up(org, 300, at(org, previous, 20))
    top_up(org, 1_000, at(org, period, 2))
    run_job(org, "job-a", 400, at(org, period, 3))
    refund(org, "job-a", 100, at(org, period, 3, 10))
    text = client_for(manager).get(usage_url(org, period=f"{period:%Y-%m}")).text
    assert "computed from the ledger" in text
    for label, figure in [
        ("Balance brought forward", "300"),
        ("Top-ups", "+1,000"),
        ("Credits used", "&minus;300"),
        ("Debits", "400"),
        ("less refunds", "&minus;100"),
        ("Closing balance", "1,000"),
    ]:
        assert f'{label}</th><td class="num">{figure}<' in text
    assert "Expired" not in text


def test_chart_draws_a_bar_per_day(manager_client: Client) -> None:
    org = make_org("standard")
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    busy_month(org, period, days=3, jobs_per_day=2)
    text = client_for(manager).get(usage_url(org, period=f"{period:%Y-%m}")).text
    days_in_month = (add_months(period, 1) - period).days
    assert text.count('class="chart-bar') == days_in_month
    assert "credits used</title>" in text


# --- CSV export ----------------------------------------------------------------------------


def ledger_month(org: Organization) -> dt.date:
    period = last_month(org)
    top_up(org, 2_000, at(org, period, 1))
    run_job(org, "a", 300, at(org, period, 1, 10), name="shelf-train", project="shelf", user="ada")
    run_job(org, "b", 200, at(org, period, 1, 11), name="catalog", project="catalog", user="tim")
    run_job(org, "a", 50, at(org, period, 2, 10), name="shelf-train")
    refund(org, "b", 80, at(org, period, 2, 12))
    top_up(org, 500, at(org, period, 4))
    run_job(org, "c", 120, at(org, period, 4, 13), name="seg", resource_class="h100")
    return period


def test_csv_has_the_exact_header_and_a_file_name_with_slug_and_period(
    manager_client: Client, org: Organization
) -> None:
    response = manager_client.get(export_url(org, this_month(org)))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="tally-{org.slug}-{this_month(org):%Y-%m}.csv"' in response["Content-Disposition"]
    assert read_csv(response)[0] == HEADER.split(",")


def test_csv_day_rows_add_up_and_balances_chain(manager_client: Client) -> None:
    org = make_org("standard")
    period = ledger_month(org)
    rows = read_csv(client_for(make_user(org, Role.MANAGER)).get(export_url(org, period)))[1:]
    days = [row for row in rows if row[0] == "day"]
    assert [row[1] for row in days] == [f"{period:%Y-%m}-{d:02d}" for d in (1, 2, 4)]
    assert rows[0][0] == "day"
    balance = 0
    for index, row in enumerate(rows):
        if row[0] != "day":
            continue
        jobs = []
        for following in rows[index + 1 :]:
            if following[0] == "day":
                break
            jobs.append(following)
        assert all(job[1] == row[1] for job in jobs)
        assert int(row[3]) == sum(int(job[3]) for job in jobs)
        assert int(row[4]) == balance + int(row[2]) - int(row[3])
        balance = int(row[4])
    assert balance == org.account.balance
    day_two = next(row for row in rows if row[0] == "job" and row[1].endswith("-02") and row[5] == "catalog")
    assert day_two[3] == "-80"  # a refund on a later day gives credits back: a negative number


def test_csv_cells_are_neutralized_against_formula_injection(
    manager_client: Client, org: Organization
) -> None:
    when = at(org, this_month(org), 1, 0, 30)
    nasty = ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]
    for number, text in enumerate(nasty):
        run_job(
            org,
            f"nasty-{number}",
            10 + number,
            when.replace(minute=number),
            name=text,
            project=text,
            user=text,
            resource_class=text,
        )
    rows = read_csv(manager_client.get(export_url(org, this_month(org))))
    jobs = {row[5]: row for row in rows if row[0] == "job"}
    for text in nasty:
        row = jobs["'" + text]
        assert row[6] == row[7] == row[8] == "'" + text
        assert row[3].lstrip("-").isdigit()


def test_csv_negative_numbers_stay_numbers() -> None:
    org = make_org("enterprise")
    run_job(org, "big", 700, at(org, this_month(org), 1, 0, 10))
    rows = read_csv(client_for(make_user(org, Role.MANAGER)).get(export_url(org, this_month(org))))
    day = next(row for row in rows if row[0] == "day")
    assert day[4] == "-700"


# --- What it costs -----------------------------------------------------------------------


def count_queries(fn: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as queries:
        fn()
    return len(queries)


def test_page_expansion_and_export_take_fixed_queries_however_much_data(
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    small, large = make_org("standard"), make_org("professional")
    period = last_month(small)
    busy_month(small, period, days=1, jobs_per_day=1)
    busy_month(large, period, days=12, jobs_per_day=6)
    for org in (small, large):
        client = client_for(make_user(org, Role.MANAGER))
        month = f"{period:%Y-%m}"
        day = reverse("usage_day", args=[org.slug, f"{period:%Y-%m}-01"])
        client.get(usage_url(org, period=month))  # warm the session
        # session, user, membership, the top bar's credits, menu, seats, months, statement
        # with its days (a past month), and the forecast's three (first day, lots, the
        # last 14 days)
        with django_assert_num_queries(12):
            client.get(usage_url(org, period=month))
        with django_assert_num_queries(13):  # ...and the open day's jobs
            client.get(usage_url(org, period=month, day=f"{month}-01"))
        with django_assert_num_queries(6):  # session, user, membership, menu, months, jobs
            client.get(day, headers={"HX-Request": "true"})
        # session, user, membership, months, statement with its days, and the job rows
        # from one server-side cursor
        with django_assert_num_queries(7):
            read_csv(client.get(export_url(org, period)))
        with django_assert_num_queries(12):  # the current month, still empty: no statement to
            client.get(usage_url(org))  # look up, but the balance brought forward is
