"""Personas for every access rule: a manager and a member of ``org``, and the manager of
another organization (the outsider)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import override_settings

from billing.models import Organization, Role
from tests.factories import make_org, make_user

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from pytest_django.live_server_helper import LiveServer

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API in tests

# The tests serve plain HTTP (the test client, the live server, and the gunicorn and Celery
# processes some of them start) and buy packs through the offline test checkout, as `make
# run` does: both need saying so with DEBUG off. pytest-django loads the settings before this
# file, so the environment is for the processes the tests start, and pytest_configure gives
# the loaded settings the values these two variables stand for (billing/settings.py).
os.environ.setdefault("ALLOW_PLAIN_HTTP", "1")
os.environ.setdefault("ALLOW_LOCAL_PAYMENTS", "1")
# Webhook receivers in the tests listen on 127.0.0.1 (tests/test_webhooks.py turns this off
# to see private addresses refused).
os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE", "1")


def pytest_configure(config: pytest.Config) -> None:
    override_settings(
        ALLOW_PLAIN_HTTP=True,
        SECURE_SSL_REDIRECT=False,
        SESSION_COOKIE_SECURE=False,
        CSRF_COOKIE_SECURE=False,
        SECURE_HSTS_SECONDS=0,
        ALLOW_LOCAL_PAYMENTS=True,
        WEBHOOKS_ALLOW_PRIVATE=True,
    ).enable()


@pytest.fixture
def org(db: None) -> Organization:
    return make_org("standard", credits=5_000)


@pytest.fixture
def other_org(db: None) -> Organization:
    return make_org("standard", credits=1_000)


@pytest.fixture
def manager(org: Organization) -> User:
    return make_user(org, Role.MANAGER)


@pytest.fixture
def member(org: Organization) -> User:
    return make_user(org, Role.MEMBER)


@pytest.fixture
def outsider(other_org: Organization) -> User:
    return make_user(other_org, Role.MANAGER)


def _client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def manager_client(manager: User) -> Client:
    return _client_for(manager)


@pytest.fixture
def member_client(member: User) -> Client:
    return _client_for(member)


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    return _client_for(outsider)


# --- Browser tests: Playwright driving Debian's Chromium against the live server -------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Where the browser tests save their screenshots; `make screenshots` points this at var/.
SCREENSHOTS = os.environ.get("SCREENSHOTS_DIR") or os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "screenshots"
)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(
        base_url=live_server.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot_dir() -> str:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    return SCREENSHOTS


def sign_in(page: Page, username: str, password: str) -> None:
    """Sign in through the real form."""
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
