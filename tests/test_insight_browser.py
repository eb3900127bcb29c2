"""In a real browser: the usage report's group switch and drill-down, and a review finding
followed to its transactions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page

from billing.models import Organization
from ledger import postings
from tests.conftest import sign_in
from tests.factories import PASSWORD
from tests.ledger_helpers import key

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_report_switches_groups_and_drills_into_a_project(
    page: Page, org: Organization, manager: User
) -> None:
    now = timezone.now()
    for n, (project, user, credits) in enumerate(
        [("vision", "ada", 300), ("vision", "tim", 200), ("speech", "ada", 100)]
    ):
        job = postings.JobInfo(f"run-{n}", project=project, user=user)
        postings.debit(org.account, credits, key=key(), operation="op", job=job, now=now)
    sign_in(page, manager.username, PASSWORD)
    page.goto(f"/orgs/{org.slug}/usage/report/")
    table = page.get_by_test_id("report-table")
    assert "vision" in table.inner_text() and "500" in table.inner_text()

    page.get_by_test_id("report-group").select_option("user")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**group=user**")
    rows = page.get_by_test_id("report-table").locator("tbody tr").all_inner_texts()
    assert rows[0].startswith("ada") and "400" in rows[0]

    page.get_by_test_id("report-group").select_option("project")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name="vision", exact=True).click()
    page.wait_for_url("**project=vision**")
    assert "Only jobs of project vision" in page.get_by_test_id("report-filters").inner_text()
    rows = page.get_by_test_id("report-table").locator("tbody tr").all_inner_texts()
    assert rows[0].startswith("ada") and "300" in rows[0] and rows[1].startswith("tim")


def test_a_review_finding_links_to_its_transactions(page: Page, org: Organization, manager: User) -> None:
    hold = postings.reserve(org.account, 100, key=key(), operation="op", job=postings.JobInfo("overrun-1"))
    postings.settle(org.account, hold.hold_id or 0, 400, key=key())
    sign_in(page, manager.username, PASSWORD)
    page.goto(f"/orgs/{org.slug}/")
    page.click("details.profile-menu summary")
    page.get_by_test_id("review-badge").click()
    page.wait_for_url("**/usage/review/")
    page.get_by_role("link", name="Settled at 4.0x its estimate").click()
    page.wait_for_url("**/usage/transactions/?job=overrun-1")
    rows = page.get_by_test_id("transactions").locator("tbody tr").all_inner_texts()
    assert len(rows) == 1 and "-400" in rows[0]
