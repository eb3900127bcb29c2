"""The billing page, the printable invoice, and who may open every billing page and action."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import CreditPack, Organization, Purchase, PurchaseStatus
from ledger import postings
from ledger.models import LotSource
from tests.billing_helpers import make_invoice, make_purchase
from tests.factories import make_org

pytestmark = pytest.mark.django_db


def test_billing_page_shows_credits_plan_and_next_reset(manager_client: Client, org: Organization) -> None:
    postings.reserve(org.account, 300, key="hold-1", operation="training_a100_per_minute")
    response = manager_client.get(reverse("billing", args=[org.slug]))
    assert response.status_code == 200
    text = response.text
    assert 'data-testid="billing-remaining">5,000<' in text
    assert 'data-testid="billing-available">4,700<' in text
    assert 'data-testid="billing-held">300<' in text
    assert 'data-testid="plan-name">Standard<' in text
    assert 'data-testid="plan-allowance">10,000 credits<' in text
    assert "expire at the end of the month" in text
    now = timezone.now()
    first_of_next = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    assert first_of_next.strftime("1 %b %Y") in text.split('data-testid="next-reset"')[1][:200]


def test_billing_page_lists_lots_with_their_expiry(manager_client: Client, org: Organization) -> None:
    expires = timezone.now() + dt.timedelta(days=10)
    postings.post_top_up(
        org.account,
        2_000,
        key="promo",
        source=LotSource.PROMOTIONAL,
        operation="promotional_grant",
        expires_at=expires,
    )
    text = manager_client.get(reverse("billing", args=[org.slug])).text
    lots = text.split('data-testid="lots"')[1].split("</table>")[0]
    # Soonest expiry first: the promotion, then the purchased credits that never expire.
    assert lots.index("Promotional") < lots.index("Purchase")
    assert expires.strftime("%-d %b %Y") in lots
    assert "Never" in lots


def test_packs_show_prices_from_the_data_and_enterprise_is_contact_us(
    manager_client: Client, org: Organization
) -> None:
    CreditPack.objects.filter(slug="standard").update(price_cents=1_750, currency="EUR")
    text = manager_client.get(reverse("billing", args=[org.slug])).text
    standard = text.split('data-testid="pack-standard"')[1].split("</article>")[0]
    assert "1,000 credits" in standard and "€17.50" in standard
    professional = text.split('data-testid="pack-professional"')[1].split("</article>")[0]
    assert "5,000 credits" in professional and "$60.00" in professional
    enterprise = text.split('data-testid="pack-enterprise"')[1].split("</article>")[0]
    assert "Contact us" in enterprise and "mailto:" in enterprise and "<form" not in enterprise


def test_billing_history_lists_invoices_and_payments(manager_client: Client, org: Organization) -> None:
    make_invoice(org)
    make_purchase(org, status=PurchaseStatus.PAID)
    make_purchase(org, status=PurchaseStatus.CANCELLED, session_id="local_cs_cancelled")
    text = manager_client.get(reverse("billing", args=[org.slug])).text
    invoices = text.split('data-testid="invoices"')[1].split("</table>")[0]
    assert "INV-2025-10-0001" in invoices and "October 2025" in invoices and "$79.00" in invoices
    assert reverse("invoice", args=[org.slug, "INV-2025-10-0001"]) in invoices
    payments = text.split('data-testid="payments"')[1].split("</table>")[0]
    assert "Standard pack" in payments and "$15.00" in payments
    assert "Paid" in payments and "Cancelled" in payments


def test_invoice_page_is_printable(manager_client: Client, org: Organization) -> None:
    make_invoice(org)
    response = manager_client.get(reverse("invoice", args=[org.slug, "INV-2025-10-0001"]))
    assert response.status_code == 200
    text = response.text
    assert "Invoice INV-2025-10-0001" in text and org.name in text
    assert "Standard plan, October 2025" in text and "$49.00" in text
    assert 'data-testid="invoice-total">$79.00<' in text
    assert "Print or save as PDF" in text and "no-print" in text


def test_invoice_of_another_organization_is_not_found(
    manager_client: Client, org: Organization, other_org: Organization
) -> None:
    make_invoice(other_org, number="INV-OTHER-1")
    assert manager_client.get(reverse("invoice", args=[org.slug, "INV-OTHER-1"])).status_code == 404


def test_manager_menu_links_to_billing_and_member_menu_does_not(
    manager_client: Client, member_client: Client, org: Organization
) -> None:
    billing_url = reverse("billing", args=[org.slug])
    assert billing_url in manager_client.get(reverse("organization", args=[org.slug])).text
    assert billing_url not in member_client.get(reverse("organization", args=[org.slug])).text


# --- Every page and action: members 403, other organizations 404, GET-only actions 405 ---


def _pages(org: Organization, purchase: Purchase) -> list[tuple[str, str]]:
    slug, session = org.slug, purchase.provider_session_id
    return [
        ("get", reverse("billing", args=[slug])),
        ("get", reverse("invoice", args=[slug, "INV-2025-10-0001"])),
        ("get", reverse("checkout", args=[slug, session])),
        ("get", reverse("purchase_complete", args=[slug, purchase.pk])),
        ("get", reverse("purchase_cancelled", args=[slug, purchase.pk])),
        ("post", reverse("buy_pack", args=[slug, "standard"])),
        ("post", reverse("checkout_pay", args=[slug, session])),
        ("post", reverse("checkout_cancel", args=[slug, session])),
    ]


@pytest.mark.parametrize("index", range(8))
def test_member_is_forbidden_every_billing_page_and_action(
    member_client: Client, org: Organization, index: int
) -> None:
    purchase = make_purchase(org)
    method, url = _pages(org, purchase)[index]
    make_invoice(org)
    assert getattr(member_client, method)(url).status_code == 403
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING
    assert Purchase.objects.count() == 1
    org.account.refresh_from_db()
    assert org.account.balance == 5_000


@pytest.mark.parametrize("index", range(8))
def test_other_organization_gets_not_found_for_every_billing_page_and_action(
    outsider_client: Client, org: Organization, index: int
) -> None:
    purchase = make_purchase(org)
    make_invoice(org)
    method, url = _pages(org, purchase)[index]
    assert getattr(outsider_client, method)(url).status_code == 404
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING
    assert Purchase.objects.count() == 1


@pytest.mark.parametrize("index", range(8))
def test_signed_out_visitor_is_sent_to_sign_in(org: Organization, index: int) -> None:
    purchase = make_purchase(org)
    method, url = _pages(org, purchase)[index]
    response = getattr(Client(), method)(url)
    assert response.status_code == 302 and reverse("login") in response["Location"]


@pytest.mark.parametrize("name", ["buy_pack", "checkout_pay", "checkout_cancel"])
def test_actions_refuse_get(manager_client: Client, org: Organization, name: str) -> None:
    purchase = make_purchase(org)
    arg = "standard" if name == "buy_pack" else purchase.provider_session_id
    assert manager_client.get(reverse(name, args=[org.slug, arg])).status_code == 405
    assert Purchase.objects.count() == 1


def test_checkout_of_another_organization_is_not_found(manager_client: Client, org: Organization) -> None:
    elsewhere = make_org("standard")
    purchase = make_purchase(elsewhere)
    url = reverse("checkout", args=[org.slug, purchase.provider_session_id])
    assert manager_client.get(url).status_code == 404
    pay = reverse("checkout_pay", args=[org.slug, purchase.provider_session_id])
    assert manager_client.post(pay).status_code == 404
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING
