"""In a real browser: a manager invites a colleague, who opens the emailed link, creates an
account and joins; the seat count and the audit log show both steps."""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth.models import User
from django.core import mail
from playwright.sync_api import Browser, Page
from pytest_django.live_server_helper import LiveServer

from billing.models import Organization
from tests.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_manager_invites_and_a_colleague_joins(
    page: Page,
    browser: Browser,
    live_server: LiveServer,
    org: Organization,
    manager: User,
    member: User,
    screenshot_dir: str,
) -> None:
    sign_in(page, manager.username, PASSWORD)
    page.goto(f"/orgs/{org.slug}/")
    page.click("details.profile-menu summary")
    page.locator(".menu-links").get_by_role("link", name="Members").click()
    page.wait_for_url(f"**/orgs/{org.slug}/members/")
    assert page.get_by_test_id("member-seats").inner_text() == "Member seats 2 of 10"

    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Send invitation").click()
    assert page.get_by_text("Invitation sent to grace@example.com").is_visible()
    assert page.get_by_test_id("member-seats").inner_text() == "Member seats 3 of 10"
    page.screenshot(path=os.path.join(screenshot_dir, "members.png"), full_page=True)

    (email,) = mail.outbox
    found = re.search(r"https?://\S+/invitations/\S+/", str(email.body))
    assert found is not None and found.group().startswith(live_server.url)
    colleague = browser.new_context(base_url=live_server.url).new_page()
    colleague.goto(found.group())
    assert colleague.get_by_role("heading", name=f"Join {org.name}").is_visible()
    colleague.get_by_label("Username").fill("grace")
    colleague.get_by_label("Password", exact=True).fill("a-long-passphrase-9")
    colleague.get_by_label("Password again").fill("a-long-passphrase-9")
    colleague.get_by_role("button", name="Create account and join").click()
    colleague.wait_for_url(f"**/orgs/{org.slug}/")
    assert colleague.get_by_text(f"Welcome to {org.name}: you joined as a member.").is_visible()
    colleague.goto(found.group())
    assert colleague.get_by_text("This invitation has already been used.").is_visible()
    colleague.context.close()

    page.reload()
    assert page.get_by_test_id("member-grace").is_visible()
    assert page.get_by_text("No pending invitations.").is_visible()
    assert page.get_by_test_id("member-seats").inner_text() == "Member seats 3 of 10"

    page.click("details.profile-menu summary")
    page.locator(".menu-links").get_by_role("link", name="Audit log").click()
    page.wait_for_url(f"**/orgs/{org.slug}/audit/")
    rows = page.get_by_test_id("audit-records").locator("tbody tr")
    assert rows.count() == 2
    assert "Member joined: grace" in rows.nth(0).inner_text()
    assert "Member invited: grace@example.com" in rows.nth(1).inner_text()
    assert manager.username in rows.nth(1).inner_text()
    page.screenshot(path=os.path.join(screenshot_dir, "audit.png"), full_page=True)
