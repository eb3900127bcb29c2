"""Stored cards and invoices that get paid, offline through the local provider: adding,
replacing and removing a card, charging the month's invoice when it closes, the retry
schedule of a declined one, idempotent charging, billing details; and who may do it."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connections
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import invoices, payment_methods
from billing.closing import close_organization_month
from billing.models import (
    AutoTopUp,
    CreditPack,
    InvoiceStatus,
    Organization,
    PaymentAttempt,
    PaymentMethod,
    Role,
)
from billing.payments import local
from team.models import AuditRecord
from tests.factories import make_org, make_user
from tests.payments_helpers import CLOSED_AT, PERIOD, add_card, buy_pack_in, eager_tasks, issue, store_card

__all__ = ["eager_tasks"]  # a fixture

pytestmark = pytest.mark.django_db


def balance(org: Organization) -> int:
    org.account.refresh_from_db()
    return org.account.balance


# --- The stored card --------------------------------------------------------------------


def test_manager_adds_a_test_card_and_sees_it(manager_client: Client, org: Organization) -> None:
    page = add_card(manager_client, org)
    assert "Card saved: invoices and auto top-ups are charged to it." in page
    assert 'data-testid="card-on-file">Visa ending 4242' in page
    method = PaymentMethod.objects.get(organization=org)
    assert (method.provider, method.method_id, method.last4) == ("local", "pm_card_visa", "4242")
    assert AuditRecord.objects.filter(organization=org, action="payment_method.changed").count() == 1


def test_a_card_that_is_no_test_card_is_refused_and_stores_nothing(
    manager_client: Client, org: Organization
) -> None:
    manager_client.post(reverse("add_payment_method", args=[org.slug]))
    setup = org.method_setups.get()
    response = manager_client.post(
        reverse("local_card_save", args=[org.slug, setup.session_id]), {"number": "5555 5555 5555 4444"}
    )
    assert response.status_code == 400
    assert "Use a test card: 4242 4242 4242 4242 (always succeeds)" in response.text
    assert not PaymentMethod.objects.filter(organization=org).exists()


def test_replacing_the_card_keeps_one_and_removing_it_turns_auto_top_up_off(
    manager_client: Client, org: Organization
) -> None:
    add_card(manager_client, org)
    page = add_card(manager_client, org, local.DECLINING_CARD)
    assert 'data-testid="card-on-file">Visa ending 0002' in page
    assert PaymentMethod.objects.filter(organization=org).count() == 1
    AutoTopUp.objects.create(
        organization=org,
        enabled=True,
        threshold=500,
        pack=CreditPack.objects.get(slug="standard"),
        monthly_limit=2,
    )
    page = manager_client.post(reverse("remove_payment_method", args=[org.slug]), follow=True).text
    assert "Visa ending 0002 was removed." in page
    assert 'data-testid="no-card"' in page
    auto = AutoTopUp.objects.get(organization=org)
    assert not auto.enabled and auto.disabled_reason == "The payment method was removed."
    assert AuditRecord.objects.filter(organization=org, action="payment_method.removed").count() == 1


def test_a_setup_is_stored_once(org: Organization) -> None:
    setup = org.method_setups.create(provider="local", session_id="local_seti_once")
    first = local.add_card(setup, local.SUCCEEDING_CARD)
    again = local.add_card(setup, local.DECLINING_CARD)  # a second tab: the first card stays
    assert again.pk == first.pk and again.last4 == "4242"


# --- Invoices that get paid -------------------------------------------------------------


def test_month_close_charges_the_invoice_and_shows_packs_as_paid_lines(
    eager_tasks: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    org = make_org("standard")  # no credits: its ledger starts with October's pack
    manager_client = Client()
    manager_client.force_login(make_user(org, Role.MANAGER))
    store_card(org)
    buy_pack_in(org, dt.datetime(2025, 10, 14, 9, 30, tzinfo=dt.UTC))
    with django_capture_on_commit_callbacks(execute=True):
        closed = close_organization_month(org, PERIOD, now=CLOSED_AT)
    invoice = closed.invoice
    assert invoice is not None
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert (invoice.total_cents, invoice.amount_paid_cents, invoice.amount_due_cents) == (6_400, 6_400, 0)
    [attempt] = invoice.attempts.all()
    assert attempt.amount_cents == 4_900 and attempt.outcome == "paid"  # the fee; the pack was paid
    assert attempt.provider_payment_id.startswith("local_pi_")
    assert [message.subject for message in mail.outbox] == [
        f"Invoice {invoice.number} paid: $49.00 charged to your card"
    ]
    page = manager_client.get(reverse("invoice", args=[org.slug, invoice.number])).text
    assert 'Standard pack: 1,000 credits <span class="hint small">(paid at checkout)</span>' in page
    assert 'data-testid="invoice-total">$64.00<' in page
    assert 'data-testid="invoice-paid">$64.00<' in page and 'data-testid="invoice-due">$0.00<' in page
    billing = manager_client.get(reverse("billing", args=[org.slug])).text
    assert 'status-paid">Paid<' in billing


def test_declined_invoice_is_retried_after_1_3_and_7_days_then_uncollectible(
    org: Organization, manager: User
) -> None:
    store_card(org, local.DECLINING_CARD)
    invoice = issue(org)
    credits = balance(org)
    seen: list[str] = []
    for offset, expected_next in [(0, 1), (1, 3), (3, 7), (7, None)]:
        moment = CLOSED_AT + dt.timedelta(days=offset)
        assert invoices.due(moment - dt.timedelta(seconds=1)) == []  # not before its time
        assert invoices.due(moment) == [invoice.pk]
        invoice = invoices.collect(invoice.pk, moment)
        assert (
            invoices.collect(invoice.pk, moment).attempts.count() == len(seen) + 1
        )  # a duplicate charges nothing
        seen.append(invoice.status)
        if expected_next is None:
            assert invoice.next_attempt_at is None
        else:
            assert invoice.next_attempt_at == CLOSED_AT + dt.timedelta(days=expected_next)
    assert seen == [InvoiceStatus.PAYMENT_FAILED] * 3 + [InvoiceStatus.UNCOLLECTIBLE]
    assert (
        list(PaymentAttempt.objects.filter(invoice=invoice).values_list("outcome", "message"))
        == [("declined", "Your card was declined.")] * 4
    )
    assert invoice.amount_due_cents == 4_900 and invoice.amount_paid_cents == 1_500
    assert balance(org) == credits  # a failed payment never takes back a credit
    subjects = [message.subject for message in mail.outbox]
    assert subjects == [f"Payment of invoice {invoice.number} failed ($49.00)"] * 3 + [
        f"Invoice {invoice.number} could not be collected"
    ]
    assert "We will try again on 2 Nov 2025, 00:05" in mail.outbox[0].body
    assert invoices.due(CLOSED_AT + dt.timedelta(days=30)) == []


def test_a_new_card_pays_the_next_retry(org: Organization) -> None:
    store_card(org, local.DECLINING_CARD)
    invoice = invoices.collect(issue(org).pk, CLOSED_AT)
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED
    store_card_again = org.method_setups.create(provider="local", session_id="local_seti_new")
    local.add_card(store_card_again, local.SUCCEEDING_CARD)
    invoice = invoices.collect(invoice.pk, CLOSED_AT + dt.timedelta(days=1))
    assert invoice.status == InvoiceStatus.PAID and invoice.amount_due_cents == 0


@pytest.mark.django_db(transaction=True)
def test_collecting_at_once_from_five_workers_charges_once(org: Organization, manager: User) -> None:
    store_card(org)
    invoice = issue(org)

    def collect(_: int) -> str:
        try:
            return invoices.collect(invoice.pk, CLOSED_AT).status
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=5) as pool:
        assert set(pool.map(collect, range(5))) == {InvoiceStatus.PAID}
    assert PaymentAttempt.objects.filter(invoice=invoice).count() == 1
    assert len(mail.outbox) == 1


def test_invoice_issued_without_a_card_waits_and_is_charged_once_one_is_stored(
    org: Organization, manager_client: Client
) -> None:
    invoice = issue(org)
    assert invoice.status == InvoiceStatus.OPEN and invoice.next_attempt_at is None
    assert invoices.due(CLOSED_AT + dt.timedelta(days=30)) == []
    add_card(manager_client, org)
    invoice.refresh_from_db()
    assert invoice.next_attempt_at is not None
    assert invoices.collect(invoice.pk).status == InvoiceStatus.PAID


def test_an_invoice_with_nothing_left_to_pay_is_issued_paid(org: Organization) -> None:
    free = make_org("free")
    (invoice,) = invoices.issue_invoices([free], PERIOD, CLOSED_AT)
    assert (
        invoice.status == InvoiceStatus.PAID and invoice.total_cents == 0 and invoice.next_attempt_at is None
    )


# --- Billing details --------------------------------------------------------------------


def test_billing_details_are_saved_and_shown_on_invoices_issued_after(
    manager_client: Client, org: Organization
) -> None:
    details = {
        "legal_name": "Acme Robotics GmbH",
        "address": "Hauptstr. 1\n10115 Berlin",
        "tax_id": "DE123456789",
    }
    page = manager_client.post(reverse("billing_details", args=[org.slug]), details, follow=True).text
    assert "Billing details saved" in page and "Acme Robotics GmbH" in page
    assert AuditRecord.objects.filter(organization=org, action="billing_details.changed").count() == 1
    invoice = issue(org, with_pack=False)
    page = manager_client.get(reverse("invoice", args=[org.slug, invoice.number])).text
    assert (
        'data-testid="bill-to">Acme Robotics GmbH<br>Hauptstr. 1<br>10115 Berlin<br>Tax ID: DE123456789<'
        in page
    )


def test_invalid_billing_details_are_refused_and_change_nothing(
    manager_client: Client, org: Organization
) -> None:
    payment_methods.profile(org)
    response = manager_client.post(
        reverse("billing_details", args=[org.slug]), {"legal_name": "Acme", "tax_id": "X" * 65}
    )
    assert response.status_code == 400
    assert "Ensure this value has at most 64 characters" in response.text
    assert payment_methods.profile(org).legal_name == ""


# --- Access -----------------------------------------------------------------------------

ACTIONS = ["add_payment_method", "remove_payment_method", "auto_top_up", "billing_details"]


@pytest.mark.parametrize("action", ACTIONS)
def test_member_gets_403_and_outsider_404_and_nothing_changes(
    member_client: Client, outsider_client: Client, org: Organization, action: str
) -> None:
    data = {"legal_name": "Mine", "enabled": "on", "threshold": "10", "pack": "1", "monthly_limit": "1"}
    assert member_client.post(reverse(action, args=[org.slug]), data).status_code == 403
    assert outsider_client.post(reverse(action, args=[org.slug]), data).status_code == 404
    assert not org.method_setups.exists() and not AutoTopUp.objects.exists()
    assert payment_methods.profile(org).legal_name == ""


@pytest.mark.parametrize("action", ACTIONS)
def test_settings_refuse_get(manager_client: Client, org: Organization, action: str) -> None:
    assert manager_client.get(reverse(action, args=[org.slug])).status_code == 405


def test_local_card_page_is_the_organizations_own(manager_client: Client, org: Organization) -> None:
    manager_client.post(reverse("add_payment_method", args=[org.slug]))
    setup = org.method_setups.get()
    other = make_org("standard")
    make_user(other, Role.MEMBER)
    outsider = make_user(other, Role.MANAGER)
    client = Client()
    client.force_login(outsider)
    assert client.get(reverse("local_card", args=[org.slug, setup.session_id])).status_code == 404
    assert client.get(reverse("local_card", args=[other.slug, setup.session_id])).status_code == 404
    saved = client.post(
        reverse("local_card_save", args=[other.slug, setup.session_id]), {"number": local.SUCCEEDING_CARD}
    )
    assert saved.status_code == 404
    assert not PaymentMethod.objects.exists()
