"""In a real browser: a manager stores a test card, turns on auto top-up, sees the month's
invoice paid by the card and downloads its PDF."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page
from pypdf import PdfReader

from billing import invoices
from billing.models import AutoTopUp, Organization
from billing.payments import local
from tests.conftest import sign_in
from tests.factories import PASSWORD
from tests.payments_helpers import issue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_manager_adds_a_card_turns_on_auto_top_up_and_downloads_a_paid_invoice(
    page: Page, org: Organization, manager: User, screenshot_dir: str
) -> None:
    sign_in(page, manager.username, PASSWORD)
    page.goto(f"/orgs/{org.slug}/billing/")
    assert page.get_by_test_id("no-card").is_visible()
    page.get_by_role("button", name="Add a card").click()
    page.wait_for_url("**/billing/card/**")
    page.locator("input[name=number]").fill(local.SUCCEEDING_CARD)
    page.get_by_role("button", name="Save card").click()
    page.wait_for_url(f"**/orgs/{org.slug}/billing/")
    assert "ending 4242" in page.get_by_test_id("card-on-file").inner_text()

    top_up = page.get_by_test_id("auto-top-up")
    top_up.get_by_label("Top up automatically").check()
    top_up.get_by_label("When available credits fall below").fill("1000")
    top_up.get_by_label("At most, times a month").fill("2")
    top_up.get_by_role("button", name="Save auto top-up").click()
    page.wait_for_url(f"**/orgs/{org.slug}/billing/")
    assert page.get_by_test_id("auto-top-up-state").inner_text().startswith("On: buys")
    assert AutoTopUp.objects.get(organization=org).enabled

    invoice = issue(org)  # October's: the plan fee, and a pack paid at checkout
    invoices.collect(invoice.pk)  # what the task does once the close commits
    page.goto(f"/orgs/{org.slug}/billing/invoices/{invoice.number}/")
    page.screenshot(path=os.path.join(screenshot_dir, "invoice-paid.png"), full_page=True)
    assert "Paid" in page.locator("body").inner_text()
    with page.expect_download() as download:
        page.get_by_test_id("invoice-pdf").click()
    text = "".join(p.extract_text() for p in PdfReader(download.value.path()).pages)
    assert invoice.number in text and "$64.00" in text and "Amount due" in text
