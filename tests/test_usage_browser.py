"""The usage page in a real browser: bars, period switch, expanding a day, the export
dialog and its CSV; members kept out. Saves screenshots under screenshots/."""

from __future__ import annotations

import csv
import os

import pytest
from playwright.sync_api import Page

from billing.models import GB, Membership, Organization, Role
from ledger.periods import add_months
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_org, make_user
from tests.usage_helpers import at, busy_month, last_month, refund, run_job, this_month, top_up

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HEADER = "row_type,date,top_ups,credits_used,balance,experiment,project,user,resource_class"


def light_org() -> Organization:
    org = make_org("standard", time_zone="America/New_York")
    org.storage_bytes, org.deployments = int(41.5 * GB), 3
    org.save()
    period = last_month(org)
    top_up(org, 10_000, at(org, period, 1, 0, 5))
    for day, credits in [(2, 420), (3, 180), (6, 960), (9, 300), (14, 610), (20, 240), (27, 515)]:
        run_job(
            org,
            f"train-{day}",
            credits,
            at(org, period, day, 10),
            name=f"shelf-train-{day:04d}",
            user="grace@example.com",
            resource_class="a10g",
        )
        run_job(
            org,
            f"images-{day}",
            credits // 4,
            at(org, period, day, 15),
            name=f"catalog-images-{day:04d}",
            project="catalog-images",
            user="tim@example.com",
            resource_class="imagen-fast",
        )
        if day == 6:
            refund(org, "train-6", 200, at(org, period, 6, 18))
    run_job(org, "today-1", 90, at(org, this_month(org), 1, 0, 30), name="nightly-finetune")
    return org


def test_manager_reviews_usage_and_exports_the_ledger(page: Page, screenshot_dir: str) -> None:
    org = light_org()
    manager = make_user(org, Role.MANAGER)
    period = last_month(org)
    sign_in(page, manager.username, PASSWORD)

    page.click("details.profile-menu summary")
    menu = page.locator(".menu-panel")
    assert menu.get_by_test_id("menu-gauge-credits").is_visible()
    assert menu.locator('[role="progressbar"]').count() == 3
    menu.get_by_role("link", name="Usage").click()
    page.wait_for_url(f"**/orgs/{org.slug}/usage/")

    labels = [
        page.locator(".plan-usage").get_by_test_id(f"gauge-label-{kind}").inner_text()
        for kind in ("credits", "storage", "deployments", "seats")
    ]
    assert labels == [
        f"{org.account.balance:,} of 10,000 monthly credits remaining",
        "41.5GB of 50GB storage used",
        "3 of 5 deployments used",
        "1 of 10 seats used",
    ]
    assert page.get_by_test_id("period-title").inner_text() == "Billing period - Current month"

    page.select_option("#period-select", f"{period:%Y-%m}")
    page.wait_for_url(f"**/usage/?period={period:%Y-%m}")
    last_day = add_months(period, 1).replace(day=1)
    title = page.get_by_test_id("period-title")
    title.filter(has_text=f"1 {period:%b %Y}").wait_for()
    assert title.inner_text().endswith(f"{(last_day - period).days} {period:%b %Y}")
    assert page.get_by_test_id("statement").is_visible()
    page.screenshot(path=os.path.join(screenshot_dir, "usage-light.png"), full_page=True)

    day = f"{period:%Y-%m}-06"
    page.get_by_test_id(f"day-toggle-{day}").click()
    jobs = page.get_by_test_id(f"jobs-{day}")
    jobs.wait_for()
    assert "shelf-train-0006" in jobs.inner_text() and "catalog-images-0006" in jobs.inner_text()
    assert jobs.get_by_role("columnheader").all_inner_texts() == [
        "NAME",
        "PROJECT",
        "USER",
        "RESOURCE",
        "CREDITS USED",
    ]
    page.screenshot(path=os.path.join(screenshot_dir, "usage-expanded.png"), full_page=True)
    page.get_by_test_id(f"day-toggle-{day}").click()
    assert jobs.is_hidden()

    page.get_by_test_id("export-open").click()
    dialog = page.get_by_role("dialog", name="Export Ledger Data")
    assert dialog.is_visible()
    with page.expect_download() as download_info:
        dialog.get_by_role("link", name="Confirm Export").click()
    download = download_info.value
    assert download.suggested_filename == f"tally-{org.slug}-{period:%Y-%m}.csv"
    with open(download.path(), newline="") as handle:
        rows = list(csv.reader(handle))
    assert ",".join(rows[0]) == HEADER
    days = [row for row in rows[1:] if row[0] == "day"]
    assert len(days) == 8  # the top-up day and seven days of jobs
    assert days[-1][4] == str(org.account.balance + 90)  # before today's job
    assert sum(int(row[3]) for row in rows[1:] if row[0] == "job") == sum(int(row[3]) for row in days)


def test_member_has_no_usage_link_and_is_refused(page: Page) -> None:
    org = make_org("standard", credits=1_000)
    member = make_user(org, Role.MEMBER)
    sign_in(page, member.username, PASSWORD)
    page.click("details.profile-menu summary")
    assert page.locator(".menu-panel").get_by_role("link", name="Usage").count() == 0
    assert page.locator(".menu-gauges").count() == 0
    response = page.goto(f"/orgs/{org.slug}/usage/")
    assert response is not None and response.status == 403


def test_screenshots_of_heavy_empty_and_enterprise_usage(page: Page, screenshot_dir: str) -> None:
    heavy = make_org("professional")
    heavy.storage_bytes, heavy.deployments = 230 * GB, 19
    heavy.save()
    period = last_month(heavy)
    busy_month(heavy, period, days=28, jobs_per_day=6)
    empty = make_org("free")
    enterprise = make_org("enterprise", time_zone="Asia/Tokyo")
    enterprise.storage_bytes, enterprise.deployments = 860 * GB, 42
    enterprise.save()
    busy_month(enterprise, last_month(enterprise), days=20, jobs_per_day=4)
    manager = make_user(heavy, Role.MANAGER)
    Membership.objects.create(organization=empty, user=manager, role=Role.MANAGER)
    Membership.objects.create(organization=enterprise, user=manager, role=Role.MANAGER)
    sign_in(page, manager.username, PASSWORD)

    page.goto(f"/orgs/{heavy.slug}/usage/?period={period:%Y-%m}")
    plan = page.locator(".plan-usage")
    assert plan.get_by_test_id("gauge-label-deployments").inner_text() == "19 of 20 deployments used"
    assert "is-warning" in (
        page.get_by_test_id("gauge-deployments").locator("[role=progressbar]").get_attribute("class") or ""
    )
    page.screenshot(path=os.path.join(screenshot_dir, "usage-heavy.png"), full_page=True)

    page.goto(f"/orgs/{empty.slug}/usage/")
    assert page.get_by_test_id("empty-state").inner_text() == "No usage data found."
    page.screenshot(path=os.path.join(screenshot_dir, "usage-empty.png"), full_page=True)

    page.goto(f"/orgs/{enterprise.slug}/usage/?period={last_month(enterprise):%Y-%m}")
    credits = page.get_by_test_id("gauge-credits")
    assert credits.inner_text().endswith("Unlimited training credits remaining")
    assert credits.locator("[role=progressbar]").count() == 0
    assert plan.get_by_test_id("gauge-label-storage").inner_text() == "860GB storage used"
    page.screenshot(path=os.path.join(screenshot_dir, "usage-enterprise.png"), full_page=True)
