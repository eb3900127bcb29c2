"""Safe defaults with DEBUG off: HTTPS only (redirect, HSTS, secure cookies) unless plain HTTP
is asked for, a Content Security Policy with a nonce on every page, `check --deploy` clean
under the README's production settings, and the free test checkout refused in production."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page
from pytest_django import Settings

from billing.models import Organization, Role
from tests.close_helpers import database_url
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_org, make_user
from tests.usage_helpers import run_job

ROOT = Path(__file__).resolve().parent.parent

# What the README's production section sets (its "..." secrets made up here). Its
# DATABASE_URL is the tests' own database: `check` connects to it.
PRODUCTION = {
    "REDIS_URL": "redis://redis.internal:6379/0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "billing.example.com",
    "SITE_URL": "https://billing.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "PAYMENT_PROVIDER": "stripe",
    "STRIPE_API_KEY": "sk_live_" + secrets.token_hex(12),
    "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "smtp.example.com",
    "EMAIL_HOST_USER": "tally",
    "EMAIL_HOST_PASSWORD": secrets.token_urlsafe(16),
}

# The settings a test's process was started with that a fresh process must not inherit.
TALLY_VARIABLES = {
    "DEBUG",
    "ALLOW_PLAIN_HTTP",
    "ALLOW_LOCAL_PAYMENTS",
    "PAYMENT_PROVIDER",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "SITE_URL",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "TEST_DATABASE_NAME",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "EMAIL_BACKEND",
    "EMAIL_HOST",
    "EMAIL_HOST_USER",
    "EMAIL_HOST_PASSWORD",
    "EMAIL_FILE_PATH",
}


def run_tally(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh Python process in the project, with only ``env`` of Tally's settings."""
    base = {name: value for name, value in os.environ.items() if name not in TALLY_VARIABLES}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=base | {"DJANGO_SETTINGS_MODULE": "billing.settings"} | env,
    )


def loaded_settings(**env: str) -> dict[str, Any]:
    names = [
        "DEBUG",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
    ]
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    done = run_tally(["-c", code], **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


HTTPS_ONLY = {
    "DEBUG": False,
    "SECURE_SSL_REDIRECT": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "SECURE_HSTS_SECONDS": 31_536_000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
}


# --- HTTPS -------------------------------------------------------------------------------


def test_with_debug_off_https_is_required_by_default() -> None:
    assert loaded_settings(**PRODUCTION) == HTTPS_ONLY
    # Nothing set at all: still HTTPS only.
    assert loaded_settings() == HTTPS_ONLY


@pytest.mark.parametrize("env", [{"ALLOW_PLAIN_HTTP": "1"}, {"DEBUG": "1"}], ids=["plain HTTP", "DEBUG"])
def test_plain_http_is_served_only_when_asked_for(env: dict[str, str]) -> None:
    loaded = loaded_settings(**env)
    assert not loaded["SECURE_SSL_REDIRECT"]
    assert not loaded["SESSION_COOKIE_SECURE"] and not loaded["CSRF_COOKIE_SECURE"]
    assert loaded["SECURE_HSTS_SECONDS"] == 0


@pytest.mark.django_db
def test_check_deploy_is_clean_under_the_production_settings() -> None:
    done = run_tally(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        **PRODUCTION,
        DATABASE_URL=database_url(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


@pytest.mark.django_db
def test_check_deploy_names_the_development_secret_key() -> None:
    production = {name: value for name, value in PRODUCTION.items() if name != "SECRET_KEY"}
    done = run_tally(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        **production,
        DATABASE_URL=database_url(),
    )
    assert done.returncode != 0
    assert "security.W009" in done.stderr + done.stdout


@pytest.mark.django_db
def test_https_redirect_spares_the_health_check(settings: Settings) -> None:
    settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS = True, 31_536_000
    login = Client().get(reverse("login"))
    assert login.status_code == 301 and login["Location"] == "https://testserver/accounts/login/"
    assert Client().get(reverse("healthz")).text == "ok"  # load balancers probe over plain HTTP
    secure = Client().get(reverse("login"), secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


# --- The local test checkout -------------------------------------------------------------


def test_the_web_server_refuses_to_start_on_the_test_checkout_with_debug_off() -> None:
    start = ["-c", "import billing.wsgi"]
    refused = run_tally(start, PAYMENT_PROVIDER="local")
    assert refused.returncode != 0
    assert "ImproperlyConfigured: PAYMENT_PROVIDER is 'local'" in refused.stderr
    assert "unless ALLOW_LOCAL_PAYMENTS=1" in refused.stderr
    assert "refuses" in run_tally(start).stderr  # local is the default
    assert run_tally(start, PAYMENT_PROVIDER="local", ALLOW_LOCAL_PAYMENTS="1").returncode == 0
    assert run_tally(start, PAYMENT_PROVIDER="local", DEBUG="1").returncode == 0
    assert run_tally(start, **PRODUCTION).returncode == 0


# --- Content Security Policy ---------------------------------------------------------------


def policy(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


def nonce_of(response: Any) -> str:
    directives = policy(response)
    [nonce] = [value for value in directives["script-src"] if value.startswith("'nonce-")]
    assert nonce in directives["style-src"]
    return nonce.removeprefix("'nonce-").removesuffix("'")


@pytest.fixture
def staff_client() -> Client:
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.django_db
def test_every_page_has_a_csp_nonce_on_its_scripts_and_styles(
    manager_client: Client, member_client: Client, staff_client: Client, org: Organization
) -> None:
    checkout = manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]))["Location"]
    pages = [
        (Client(), reverse("login"), 200),
        (manager_client, reverse("organization", args=[org.slug]), 200),
        (manager_client, reverse("usage", args=[org.slug]), 200),
        (manager_client, reverse("billing", args=[org.slug]), 200),
        (manager_client, checkout, 200),
        (manager_client, reverse("alerts", args=[org.slug]), 200),
        (manager_client, reverse("api_keys", args=[org.slug]), 200),
        (member_client, reverse("usage", args=[org.slug]), 403),
        (manager_client, "/orgs/no-such-organization/", 404),
        (staff_client, reverse("admin:index"), 200),
        (staff_client, reverse("admin:ledger_account_change", args=[org.account.pk]), 200),
    ]
    nonces = set()
    for client, url, status in pages:
        response = client.get(url)
        assert response.status_code == status, url
        nonce = nonce_of(response)
        tags = re.findall(r"<(?:script|style)\b[^>]*>|<link rel=\"stylesheet\"[^>]*>", response.text)
        assert tags, url
        for tag in tags:
            assert f'nonce="{nonce}"' in tag, (url, tag)
        directives = policy(response)
        assert "'unsafe-inline'" not in directives["script-src"] + directives["style-src"]
        assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
        nonces.add(nonce)
    assert len(nonces) == len(pages)  # a new one for every response


def test_the_error_page_style_is_allowed_by_its_hash() -> None:
    """Django renders 500.html without a request, so without a nonce: the policy names its
    inline style by hash instead."""
    page = (ROOT / "templates" / "500.html").read_text()
    [style] = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in settings.SECURE_CSP["style-src"]
    assert "<script" not in page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pages_work_in_a_browser_without_a_csp_violation(page: Page) -> None:
    org = make_org("standard", credits=5_000)
    run_job(org, "job-1", 90, timezone.now(), name="nightly-finetune")
    manager = make_user(org, Role.MANAGER)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    sign_in(page, manager.username, PASSWORD)

    page.goto(f"/orgs/{org.slug}/usage/")
    fill = page.locator(".plan-usage .gauge-fill").first
    assert fill.evaluate("element => element.getBoundingClientRect().width") > 0  # its style applies
    page.locator("[data-day-toggle]").first.click()  # htmx loads the day's jobs
    assert page.locator("tr.day-jobs[data-loaded=true]").inner_text().count("nightly-finetune") == 1

    page.goto(f"/orgs/{org.slug}/billing/")
    page.locator("form[action$='/packs/standard/buy/'] button").click()
    page.get_by_role("button", name="Pay $15.00").click()
    page.wait_for_url(f"**/orgs/{org.slug}/billing/")
    assert page.get_by_test_id("billing-remaining").inner_text() == "5,910"  # 5,000 - 90 + 1,000

    page.goto(f"/orgs/{org.slug}/alerts/")
    page.goto("/api/v1/docs")
    page.locator(".swagger-ui .info").wait_for()

    get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    page.goto("/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.goto(f"/admin/ledger/account/{org.account.pk}/change/")
    assert page.locator("#id_adjust_by").is_visible()
    assert violations == []
