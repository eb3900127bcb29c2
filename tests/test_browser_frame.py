"""The frame in a real browser: sign in, see the credits, sign out."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page

from billing.models import Organization
from tests.conftest import sign_in
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_manager_signs_in_sees_credits_and_signs_out(page: Page, org: Organization, manager: User) -> None:
    sign_in(page, manager.username, PASSWORD)
    assert page.get_by_test_id("credits-remaining").inner_text() == "5,000"
    page.click("details.profile-menu summary")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")
    assert page.get_by_role("heading", name="Sign in to Tally").is_visible()
