"""The dashboard on a phone and from the keyboard: at 390 px no page scrolls sideways and
the cards hold their bars and figures, the usage chart's labels stay legible, badges and
quiet figures meet WCAG AA contrast, a day row opens with Space (and without JavaScript),
and Escape closes the profile menu. Screenshots at 390 and 1280 px go to screenshots/."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, ViewportSize
from pytest_django.live_server_helper import LiveServer

from billing import purchases
from billing.models import AlertKind, AlertThreshold, ApiKey, Organization, PurchaseStatus, Role, Scope
from ledger.periods import add_months
from tests.billing_helpers import make_invoice, make_purchase
from tests.conftest import sign_in
from tests.factories import PASSWORD, make_org, make_user
from tests.usage_helpers import at, last_month, refund, run_job, this_month, top_up

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=900)
AA_NORMAL_TEXT = 4.5


@dataclass(frozen=True)
class Dashboard:
    org: Organization
    manager: User
    past: dt.date  # a past month with jobs every few days
    open_day: str  # a day of it with a refund, so its cells carry a note

    def pages(self) -> dict[str, str]:
        """Every page a manager has, by the name its screenshots take."""
        base = f"/orgs/{self.org.slug}"
        return {
            "organization": f"{base}/",
            "usage": f"{base}/usage/",
            "usage-past": f"{base}/usage/?period={self.past:%Y-%m}",
            "usage-day": f"{base}/usage/?period={self.past:%Y-%m}&day={self.open_day}#day-{self.open_day}",
            "billing": f"{base}/billing/",
            "api-keys": f"{base}/api-keys/",
            "alerts": f"{base}/alerts/",
            "invoice": f"{base}/billing/invoices/INV-2025-10-0001/",
            "checkout": f"{base}/billing/checkout/local_cs_pending0000000000000000/",
        }


def dashboard() -> Dashboard:
    """A Berlin organization with three months of jobs, a large balance (wide figures), an
    invoice, payments, keys and alerts, managed by someone with a long name."""
    org = make_org("standard", slug="northwind-analytics-research", time_zone="Europe/Berlin")
    manager = make_user(org, Role.MANAGER, username="margaret.hamilton-northwind")
    past = last_month(org)
    for period in (add_months(past, -1), past):
        top_up(org, 1_250_000, at(org, period, 1, 0, 5))
        for day in range(2, 29, 3):
            run_job(
                org,
                f"train-{period:%m}-{day}",
                4_000 + 37 * day,
                at(org, period, day, 10),
                name=f"shelf-detector-train-{day:04d}",
                user="grace.hopper@northwind.example",
                resource_class="a100",
            )
            run_job(
                org,
                f"images-{period:%m}-{day}",
                900 + day,
                at(org, period, day, 15),
                name=f"catalog-images-nightly-{day:04d}",
                project="catalog-images",
                user="tim@northwind.example",
                resource_class="imagen-fast",
            )
    refund(org, f"train-{past:%m}-5", 1_200, at(org, past, 5, 18))
    run_job(org, "today-1", 1_750, at(org, this_month(org), 1, 0, 30), name="nightly-finetune")
    make_invoice(org)
    paid = make_purchase(org, session_id="local_cs_paid00000000000000000000")
    purchases.fulfil(paid, payment_id="local_pi_paid", now=timezone.now())
    make_purchase(org, status=PurchaseStatus.PENDING, session_id="local_cs_pending0000000000000000")
    ApiKey.issue(org, name="job runner (production cluster)", scopes=list(Scope.values), created_by=manager)
    ApiKey.issue(org, name="nightly reports", scopes=[Scope.ACCOUNT_READ], created_by=manager)
    AlertThreshold.objects.create(organization=org, kind=AlertKind.PERCENT, value=25)
    AlertThreshold.objects.create(
        organization=org, kind=AlertKind.ABSOLUTE, value=2_500_000, below=True, last_alerted_at=timezone.now()
    )
    return Dashboard(org, manager, past, f"{past:%Y-%m}-05")


@pytest.fixture
def phone(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport=PHONE, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


CARDS = ".card, .panel, .pack-card, .invoice-doc, .auth-card, .checkout"


def sideways(page: Page) -> str | None:
    """What is wrong with the page's width, if anything: the document scrolls sideways, or a
    card is wider than itself (its content runs past its edge)."""
    widths: dict[str, Any] = page.evaluate(
        """(cards) => ({
            scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
            spilling: [...document.querySelectorAll(cards)]
                .filter(el => el.scrollWidth > el.clientWidth + 1)
                .map(el => el.className + ' ' + el.scrollWidth + '>' + el.clientWidth),
        })""",
        CARDS,
    )
    if widths["scroll"] > widths["client"]:
        return f"{widths['scroll']} px wide in {widths['client']}"
    if widths["spilling"]:
        return f"content past its card: {widths['spilling']}"
    return None


def outside(page: Page, selector: str, container: str) -> list[str]:
    """The elements matching ``selector`` that reach past the ``container`` they sit in."""
    found: list[str] = page.evaluate(
        """([selector, container]) => [...document.querySelectorAll(selector)].filter(el => {
            const box = el.getBoundingClientRect(), card = el.closest(container).getBoundingClientRect();
            return box.left < card.left - 0.5 || box.right > card.right + 0.5;
        }).map(el => el.textContent.trim() || el.className)""",
        [selector, container],
    )
    return found


def shoot(page: Page, directory: str, name: str) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar is drawn mid-page
    page.screenshot(path=os.path.join(directory, f"{name}-{width}.png"), full_page=True)


def test_no_page_scrolls_sideways_on_a_phone(phone: Page, screenshot_dir: str) -> None:
    data = dashboard()
    problems: dict[str, str] = {}

    phone.goto("/accounts/login/")
    problems["login"] = sideways(phone) or ""
    shoot(phone, screenshot_dir, "login")
    sign_in(phone, data.manager.username, PASSWORD)
    for name, url in data.pages().items():
        phone.goto(url)
        problems[name] = sideways(phone) or ""
        shoot(phone, screenshot_dir, name)

    # A day opened with a tap, its jobs loaded in place, and the menu opened over the page.
    phone.goto(data.pages()["usage-past"])
    day = f"{data.past:%Y-%m}-08"
    phone.get_by_test_id(f"day-toggle-{day}").tap()
    phone.get_by_test_id(f"jobs-{day}").wait_for()
    problems["usage, a day tapped open"] = sideways(phone) or ""
    phone.locator("details.profile-menu summary").tap()
    phone.locator(".menu-panel").wait_for()
    problems["usage, menu open"] = sideways(phone) or ""
    shoot(phone, screenshot_dir, "usage-menu")

    assert {name: problem for name, problem in problems.items() if problem} == {}


def test_gauges_and_figures_stay_inside_their_cards_on_a_phone(phone: Page) -> None:
    data = dashboard()
    sign_in(phone, data.manager.username, PASSWORD)
    phone.goto(data.pages()["usage-day"])
    assert outside(phone, ".plan-usage .gauge-bar", ".panel") == []
    assert outside(phone, "table.days th, table.days td", ".panel") == []
    assert outside(phone, "table.jobs td", ".panel") == []
    balance = phone.locator("table.days tbody tr.day-row").first.locator("td").last
    assert re.fullmatch(r"[\d,]+", balance.inner_text()) and balance.is_visible()
    phone.goto(data.pages()["billing"])
    assert outside(phone, ".card-figure", ".card") == []


def axis_labels(page: Page) -> list[dict[str, float]]:
    """Each chart axis label's rendered font size and how much it is stretched sideways
    (1 when drawn in its own proportions), from the transform the screen applies to it."""
    labels: list[dict[str, float]] = page.evaluate(
        """() => [...document.querySelectorAll('.usage-chart .chart-label')].map(el => {
            let sx = 1, sy = 1;
            if (el instanceof SVGGraphicsElement) {
                const m = el.getScreenCTM();
                sx = Math.hypot(m.a, m.b); sy = Math.hypot(m.c, m.d);
            }
            const box = el.getBoundingClientRect();
            return {stretch: sx / sy, size: parseFloat(getComputedStyle(el).fontSize) * sy,
                    left: box.left, right: box.right, top: box.top};
        })"""
    )
    return labels


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_chart_axis_labels_are_legible(
    browser: Browser, live_server: LiveServer, viewport: ViewportSize, screenshot_dir: str
) -> None:
    data = dashboard()
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage-past"])
    labels = axis_labels(page)
    assert len(labels) >= 8  # three gridlines and the day ticks
    for label in labels:
        assert 0.95 <= label["stretch"] <= 1.05, label
        assert label["size"] >= 10, label
    ticks = sorted(
        (label for label in labels if label["top"] == max(x["top"] for x in labels)),
        key=lambda label: label["left"],
    )
    assert all(left["right"] <= right["left"] for left, right in zip(ticks, ticks[1:], strict=False))
    page.locator(".usage-chart").screenshot(
        path=os.path.join(screenshot_dir, f"usage-chart-{viewport['width']}.png")
    )
    context.close()


# --- Contrast ------------------------------------------------------------------------------


def contrast(page: Page, selector: str) -> list[tuple[str, float]]:
    """Each element's text and its WCAG contrast ratio, from the rendered text colour and the
    first opaque background behind it."""
    pairs: list[dict[str, Any]] = page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].map(el => {
            const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
            let back = el, background = [255, 255, 255, 1];
            while (back) {
                const colour = rgb(getComputedStyle(back).backgroundColor);
                if (colour.length === 3 || colour[3] === 1) { background = colour; break; }
                back = back.parentElement;
            }
            return {text: el.textContent.trim(), color: rgb(getComputedStyle(el).color),
                    background: background};
        })""",
        selector,
    )
    return [(pair["text"], ratio(pair["color"], pair["background"])) for pair in pairs]


def ratio(first: list[float], second: list[float]) -> float:
    def luminance(colour: list[float]) -> float:
        channels = [value / 255 for value in colour[:3]]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_quiet_zeros_and_status_badges_meet_aa_contrast(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    measured: list[tuple[str, float]] = []
    page.goto(data.pages()["usage-past"])
    page.locator("table.days tr.day-row").first.hover()  # the hovered row's tint counts too
    zeros = contrast(page, "table.days .zero")
    assert zeros, "the month has days without top-ups"
    measured += zeros
    page.goto(data.pages()["billing"])
    badges = contrast(page, ".status")
    assert {text for text, _ in badges} >= {"Open", "Paid", "Pending"}
    measured += badges
    page.goto(data.pages()["invoice"])
    measured += contrast(page, ".status")
    page.goto(data.pages()["checkout"])
    measured += contrast(page, ".test-badge")
    assert [(text, round(value, 2)) for text, value in measured if value < AA_NORMAL_TEXT] == []


# --- Keyboard ------------------------------------------------------------------------------


def test_space_opens_and_closes_a_day(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage-past"])
    day = f"{data.past:%Y-%m}-08"
    toggle = page.get_by_test_id(f"day-toggle-{day}")
    toggle.focus()
    page.keyboard.press("Space")
    jobs = page.get_by_test_id(f"jobs-{day}")
    jobs.wait_for()
    assert "shelf-detector-train-0008" in jobs.inner_text()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.url.endswith(f"?period={data.past:%Y-%m}")  # loaded in place, no navigation
    page.keyboard.press("Space")
    assert jobs.is_hidden() and toggle.get_attribute("aria-expanded") == "false"
    page.keyboard.press("Enter")
    assert jobs.is_visible() and toggle.get_attribute("aria-expanded") == "true"


def test_day_toggle_works_without_javascript(browser: Browser, live_server: LiveServer) -> None:
    data = dashboard()
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage-past"])
    day = f"{data.past:%Y-%m}-08"
    page.get_by_test_id(f"day-toggle-{day}").click()
    page.wait_for_url(f"**/usage/?period={data.past:%Y-%m}&day={day}#day-{day}")
    assert "shelf-detector-train-0008" in page.get_by_test_id(f"jobs-{day}").inner_text()
    assert page.get_by_test_id(f"day-toggle-{day}").get_attribute("aria-expanded") == "true"
    page.get_by_test_id(f"day-toggle-{day}").click()
    page.wait_for_url(f"**/usage/?period={data.past:%Y-%m}#day-{day}")
    assert page.get_by_test_id(f"jobs-{day}").count() == 0
    context.close()


def test_escape_closes_the_profile_menu_and_returns_focus(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    summary = page.locator("details.profile-menu summary")
    summary.focus()
    page.keyboard.press("Enter")
    assert page.locator(".menu-panel").is_visible()
    page.locator(".menu-links").get_by_role("link", name="Usage").focus()  # focus inside the menu
    page.keyboard.press("Escape")
    assert page.locator(".menu-panel").is_hidden()
    assert page.evaluate("document.activeElement.matches('details.profile-menu summary')")


def test_screenshots_at_desktop_width(page: Page, screenshot_dir: str) -> None:
    data = dashboard()
    page.goto("/accounts/login/")
    shoot(page, screenshot_dir, "login")
    sign_in(page, data.manager.username, PASSWORD)
    for name, url in data.pages().items():
        page.goto(url)
        assert sideways(page) is None, name
        shoot(page, screenshot_dir, name)
