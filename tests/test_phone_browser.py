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
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, Route, ViewportSize
from pytest_django.live_server_helper import LiveServer

from billing import demo, purchases
from billing.models import AlertKind, AlertThreshold, ApiKey, Organization, PurchaseStatus, Role, Scope
from ledger import usage
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


# --- Every page of every demo plan (issue 22) ----------------------------------------------

DEMO_PLANS = ("free", "standard", "pro", "enterprise")
# axe-core's impacts that fail a page; "moderate" and "minor" are reported by axe but pass.
BLOCKING_IMPACTS = {"serious", "critical"}


def demo_pages(slug: str) -> dict[str, str]:
    """Every page a demo organization's manager has: the overview, Usage (this month, the
    last, a day of it open), billing, an invoice, API keys and alerts."""
    org = Organization.objects.select_related("account").get(slug=slug)
    past = usage.periods(org.account, timezone.now())[1]
    day = usage.period_usage(org.account, past, timezone.now()).days[0].date
    base = f"/orgs/{slug}"
    pages = {
        "organization": f"{base}/",
        "usage": f"{base}/usage/",
        "usage-past": f"{base}/usage/?period={past:%Y-%m}",
        "usage-day": f"{base}/usage/?period={past:%Y-%m}&day={day:%Y-%m-%d}#day-{day:%Y-%m-%d}",
        "billing": f"{base}/billing/",
        "api-keys": f"{base}/api-keys/",
        "alerts": f"{base}/alerts/",
    }
    invoice = org.invoices.first()
    if invoice is not None:
        pages["invoice"] = f"{base}/billing/invoices/{invoice.number}/"
    return pages


def axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page, as "rule: target" lines."""
    results = Axe().run(page)
    return [
        f"{violation['id']}: {node['target']}"
        for violation in results.response["violations"]
        if violation["impact"] in BLOCKING_IMPACTS
        for node in violation["nodes"]
    ]


@pytest.fixture
def seeded_demo(db: None) -> None:
    demo.seed(log=lambda line: None)


def test_every_demo_page_fits_a_phone_and_a_desktop_for_every_plan(
    seeded_demo: None, browser: Browser, live_server: LiveServer, screenshot_dir: str
) -> None:
    """No page of any plan's organization scrolls sideways at 390 or 1280 px, for its
    manager or (on the pages a member has) its member. The screenshots are `make
    screenshots`'s."""
    problems: dict[str, str] = {}
    for viewport in (PHONE, DESKTOP):
        for plan in DEMO_PLANS:
            for role in (Role.MANAGER, Role.MEMBER):
                context = browser.new_context(base_url=live_server.url, viewport=viewport)
                page = context.new_page()
                sign_in(page, f"demo-{plan}-{role}", demo.DEMO_PASSWORD)
                pages = demo_pages(f"demo-{plan}")
                # A member has the overview; the manager-only pages are one 403 page.
                names = list(pages) if role == Role.MANAGER else ["organization", "usage"]
                for name in names:
                    page.goto(pages[name])
                    where = f"{plan} {role} {name} at {viewport['width']}"
                    problems[where] = sideways(page) or ""
                    shoot(page, screenshot_dir, f"demo-{plan}-{role}-{name}")
                context.close()
    assert {where: problem for where, problem in problems.items() if problem} == {}


def test_every_page_has_no_serious_accessibility_violations(
    seeded_demo: None, browser: Browser, live_server: LiveServer
) -> None:
    found: dict[str, list[str]] = {}
    for viewport in (PHONE, DESKTOP):
        context = browser.new_context(base_url=live_server.url, viewport=viewport)
        page = context.new_page()
        page.goto("/accounts/login/")
        found[f"login at {viewport['width']}"] = axe_violations(page)
        sign_in(page, "demo-standard-member", demo.DEMO_PASSWORD)
        found[f"member overview at {viewport['width']}"] = axe_violations(page)
        page.goto("/orgs/demo-standard/usage/")
        found[f"member refused at {viewport['width']}"] = axe_violations(page)
        context.close()
        for plan in DEMO_PLANS:
            context = browser.new_context(base_url=live_server.url, viewport=viewport)
            page = context.new_page()
            sign_in(page, f"demo-{plan}-manager", demo.DEMO_PASSWORD)
            for name, url in demo_pages(f"demo-{plan}").items():
                page.goto(url)
                found[f"{plan} {name} at {viewport['width']}"] = axe_violations(page)
            page.goto(f"/orgs/demo-{plan}/usage/?period=1999-01")
            found[f"{plan} usage 404 at {viewport['width']}"] = axe_violations(page)
            context.close()
    assert {where: lines for where, lines in found.items() if lines} == {}


# --- Keyboard only, loading and failure (issue 22) -----------------------------------------


def tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the focused element matches ``selector``; fail after ``limit``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
            return
    raise AssertionError(f"{selector} never took the focus in {limit} presses of Tab")


def test_usage_by_keyboard_alone(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage-past"])
    tab_to(page, "[data-day-toggle]")
    toggle = page.locator(":focus")
    jobs = page.locator(f"#{toggle.get_attribute('aria-controls')}")
    page.keyboard.press("Enter")
    page.locator("tr.day-jobs[data-loaded=true]").first.wait_for()
    assert toggle.get_attribute("aria-expanded") == "true" and jobs.locator("table.jobs").is_visible()
    page.keyboard.press("Space")
    assert toggle.get_attribute("aria-expanded") == "false" and jobs.is_hidden()
    for _ in range(40):  # the export link is before the table: back up to it
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.dataset.testid === 'export-open'"):
            break
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Export Ledger Data")
    assert dialog.is_visible()
    tab_to(page, "dialog a[download]", limit=5)
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == f"tally-{data.org.slug}-{data.past:%Y-%m}.csv"


def test_a_day_that_fails_to_load_says_so_and_loads_on_retry(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage-past"])
    day = f"{data.past:%Y-%m}-08"
    failures = [1]

    def fail_once(route: Route) -> None:
        if failures:
            failures.pop()
            route.fulfill(status=500, body="Server error")
        else:
            route.continue_()

    page.route(f"**/usage/days/{day}/", fail_once)
    toggle = page.get_by_test_id(f"day-toggle-{day}")
    toggle.click()
    row = page.locator(f"#jobs-{day}")
    alert = row.get_by_role("alert")
    alert.wait_for()
    assert "could not be loaded" in alert.inner_text()
    assert row.get_attribute("aria-busy") is None and row.locator("table.jobs").count() == 0
    row.get_by_role("button", name="Try again").click()
    page.get_by_test_id(f"jobs-{day}").wait_for()
    assert "shelf-detector-train-0008" in page.get_by_test_id(f"jobs-{day}").inner_text()
    assert toggle.get_attribute("aria-expanded") == "true"


def test_switching_months_shows_what_is_loading_not_the_old_month(page: Page) -> None:
    data = dashboard()
    sign_in(page, data.manager.username, PASSWORD)
    page.goto(data.pages()["usage"])
    held: list[Route] = []
    page.route(lambda url: "/usage/?period=" in url, lambda route: held.append(route))
    page.select_option("#period-select", f"{data.past:%Y-%m}")
    page.wait_for_function("document.getElementById('usage-period').getAttribute('aria-busy') === 'true'")
    status = page.get_by_test_id("period-status")
    assert status.inner_text() == f"Loading {data.past:%B %Y}…"
    assert page.get_by_test_id("period-title").is_hidden() and page.locator(".period-body").is_hidden()
    page.wait_for_function("document.getElementById('usage-period').classList.contains('htmx-request')")

    held.pop().fulfill(status=503, body="Unavailable")  # the first try fails
    page.get_by_role("alert").wait_for()
    assert f"{data.past:%B %Y} could not be loaded" in status.inner_text()
    assert page.locator("#period-select").input_value() == f"{this_month(data.org):%Y-%m}"
    assert page.get_by_test_id("period-title").inner_text() == "Billing period - Current month"

    page.unroute_all()
    status.get_by_role("button", name="Try again").click()
    page.get_by_test_id("statement").wait_for()
    assert page.locator("#usage-period").get_attribute("aria-busy") is None
    assert page.locator("#period-select").input_value() == f"{data.past:%Y-%m}"
    assert (
        page.get_by_test_id("period-title").inner_text().startswith(f"Billing period - 1 {data.past:%b %Y}")
    )
