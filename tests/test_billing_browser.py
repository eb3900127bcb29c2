"""In a real browser: a manager buys a Standard pack through the test checkout and sees the
balance and the billing history change; a cancelled checkout changes nothing."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page

from billing.models import Organization
from tests.billing_helpers import make_invoice
from tests.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _open_billing(page: Page, org: Organization) -> None:
    page.goto(f"/orgs/{org.slug}/")
    page.click("details.profile-menu summary")
    page.locator(".menu-links").get_by_role("link", name="Billing").click()
    page.wait_for_url(f"**/orgs/{org.slug}/billing/")


def _buy_standard(page: Page) -> None:
    page.get_by_test_id("pack-standard").get_by_role("button", name="Buy 1,000 credits").click()
    page.wait_for_url("**/billing/checkout/local_cs_*/")


def test_manager_buys_a_standard_pack(
    page: Page, org: Organization, manager: User, screenshot_dir: str
) -> None:
    make_invoice(org)
    sign_in(page, manager.username, PASSWORD)
    _open_billing(page, org)
    assert page.get_by_test_id("billing-remaining").inner_text() == "5,000"
    assert page.get_by_text("No payments yet.").is_visible()

    _buy_standard(page)
    assert page.get_by_test_id("checkout-total").inner_text() == "$15.00"
    page.screenshot(path=os.path.join(screenshot_dir, "checkout.png"), full_page=True)
    page.get_by_role("button", name="Pay $15.00").click()

    page.wait_for_url(f"**/orgs/{org.slug}/billing/")
    assert page.get_by_text("Payment received: 1,000 credits were added.").is_visible()
    assert page.get_by_test_id("billing-remaining").inner_text() == "6,000"
    assert page.get_by_test_id("billing-available").inner_text() == "6,000"
    payment = page.get_by_test_id("payments").locator("tbody tr")
    assert payment.count() == 1
    assert "Standard pack" in payment.inner_text() and "$15.00" in payment.inner_text()
    assert "Paid" in payment.inner_text()
    page.screenshot(path=os.path.join(screenshot_dir, "billing.png"), full_page=True)

    # The same purchase is on the Usage page at once.
    page.goto(f"/orgs/{org.slug}/usage/")
    assert "6,000" in page.locator("dt:text('Top-ups this month') + dd").inner_text()

    # And the month's invoice opens as a printable document.
    page.goto(f"/orgs/{org.slug}/billing/")
    page.get_by_role("link", name="INV-2025-10-0001", exact=True).click()
    assert page.get_by_test_id("invoice-total").inner_text() == "$79.00"
    page.emulate_media(media="print")
    assert not page.locator("header.topbar").is_visible()
    page.screenshot(path=os.path.join(screenshot_dir, "invoice-print.png"), full_page=True)


def test_cancelled_checkout_changes_nothing(page: Page, org: Organization, manager: User) -> None:
    sign_in(page, manager.username, PASSWORD)
    _open_billing(page, org)
    _buy_standard(page)
    page.get_by_role("button", name="Cancel and return to Tally").click()

    page.wait_for_url(f"**/orgs/{org.slug}/billing/")
    assert page.get_by_text("Checkout cancelled. Nothing was charged.").is_visible()
    assert page.get_by_test_id("billing-remaining").inner_text() == "5,000"
    payment = page.get_by_test_id("payments").locator("tbody tr")
    assert payment.count() == 1 and "Cancelled" in payment.inner_text()
