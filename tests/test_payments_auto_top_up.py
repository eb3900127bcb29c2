"""Auto top-up: a posting that leaves available credits below the threshold buys the pack
with the stored card, one at a time, within the monthly limit, off after three declines;
every outcome emailed. And the invoice PDF."""

from __future__ import annotations

import datetime as dt
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader
from pytest_django import DjangoCaptureOnCommitCallbacks

from billing import auto_top_up, notices
from billing.models import AutoTopUp, CreditPack, Organization, Purchase, PurchaseOrigin, PurchaseStatus
from billing.payments import local
from ledger import postings
from ledger.models import Lot, LotSource
from team.models import AuditRecord
from tests.payments_helpers import eager_tasks, issue, store_card

__all__ = ["eager_tasks"]  # a fixture

pytestmark = pytest.mark.django_db


def turn_on(org: Organization, manager: User, *, threshold: int = 1_000, limit: int = 3) -> AutoTopUp:
    return auto_top_up.configure(
        org,
        enabled=True,
        threshold=threshold,
        pack=CreditPack.objects.get(slug="professional"),
        monthly_limit=limit,
        by=manager,
    )


def debit(org: Organization, amount: int, key: str) -> postings.Receipt:
    return postings.debit(org.account, amount, key=key, operation="training_a10g_per_minute")


def auto_purchases(org: Organization) -> list[str]:
    return list(
        Purchase.objects.filter(organization=org, origin=PurchaseOrigin.AUTO_TOP_UP).values_list(
            "status", flat=True
        )
    )


def test_the_form_saves_it_and_watches_the_ledger(manager_client: Client, org: Organization) -> None:
    store_card(org)
    pack = CreditPack.objects.get(slug="professional")
    data = {"enabled": "on", "threshold": "1000", "pack": str(pack.pk), "monthly_limit": "2"}
    page = manager_client.post(reverse("auto_top_up", args=[org.slug]), data, follow=True).text
    assert (
        "Auto top-up saved. On: buy Professional pack (5,000 credits, $60.00) "
        "when available credits fall below 1,000" in page
    )
    org.account.refresh_from_db()
    assert org.account.notify  # postings now write the notices the trigger reads
    assert AuditRecord.objects.filter(organization=org, action="auto_top_up.changed").count() == 1
    manager_client.post(reverse("auto_top_up", args=[org.slug]), {**data, "threshold": "2500"})
    form = manager_client.get(reverse("billing", args=[org.slug])).text
    assert 'name="threshold" value="2500"' in form  # the saved settings, not the suggestions
    manager_client.post(reverse("auto_top_up", args=[org.slug]), {**data, "enabled": ""})
    org.account.refresh_from_db()
    assert not org.account.notify


def test_turning_it_on_without_a_card_is_refused_and_saves_nothing(
    manager_client: Client, org: Organization
) -> None:
    pack = CreditPack.objects.get(slug="standard")
    data = {"enabled": "on", "threshold": "1000", "pack": str(pack.pk), "monthly_limit": "2"}
    response = manager_client.post(reverse("auto_top_up", args=[org.slug]), data)
    assert response.status_code == 400
    assert "Add a payment method first: auto top-up charges it." in response.text
    assert not AutoTopUp.objects.exists()


def test_a_debit_below_the_threshold_buys_the_pack(
    org: Organization,
    manager: User,
    eager_tasks: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    store_card(org)
    turn_on(org, manager)
    debit(org, 3_000, "above")  # 2,000 left: nothing
    debit(org, 1_500, "crosses")  # 500 left: below 1,000
    with django_capture_on_commit_callbacks(execute=True):
        notices.process(org.account_id)
    assert auto_purchases(org) == [PurchaseStatus.PAID]
    assert postings.credits_now(org.account).available == 5_500
    lot = Lot.objects.filter(account=org.account).latest("id")
    assert (lot.source, lot.amount, lot.expires_at) == (LotSource.PURCHASE, 5_000, None)
    [message] = mail.outbox
    assert message.subject == f"Auto top-up: 5,000 credits added to {org.name} ($60.00)"
    assert "5,500 credits are available now" in message.body


def test_three_declines_in_a_row_turn_it_off(org: Organization, manager: User) -> None:
    store_card(org, local.DECLINING_CARD)
    turn_on(org, manager)
    debit(org, 4_500, "low")
    outcomes = [auto_top_up.run(org.pk) for _ in range(4)]
    assert outcomes == ["declined", "declined", "declined", "off"]
    assert auto_purchases(org) == [PurchaseStatus.FAILED] * 3
    settings = AutoTopUp.objects.get(organization=org)
    assert not settings.enabled and settings.disabled_reason == "The card was declined 3 times in a row."
    assert postings.credits_now(org.account).available == 500  # nothing credited
    subjects = [message.subject for message in mail.outbox]
    assert subjects == [f"Auto top-up for {org.name} failed"] * 2 + [
        f"Auto top-up for {org.name} is off: the card was declined"
    ]
    org.account.refresh_from_db()
    assert not org.account.notify


def test_never_over_the_monthly_limit(
    org: Organization, manager: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    store_card(org)
    turn_on(org, manager, threshold=20_000, limit=1)  # still below after one pack
    with django_capture_on_commit_callbacks(execute=True):
        assert auto_top_up.run(org.pk) == "succeeded"
        assert auto_top_up.run(org.pk) == "monthly limit reached"
        assert auto_top_up.run(org.pk) == "monthly limit reached"  # emailed once
    assert auto_purchases(org) == [PurchaseStatus.PAID]
    assert [message.subject for message in mail.outbox][1:] == [
        f"Auto top-up for {org.name} reached its monthly limit"
    ]


def test_not_bought_when_credits_are_back_above_the_threshold(org: Organization, manager: User) -> None:
    store_card(org)
    turn_on(org, manager)
    assert auto_top_up.run(org.pk) == "not needed"
    assert auto_purchases(org) == []


def test_a_top_up_whose_worker_died_mid_charge_is_resumed_once(org: Organization, manager: User) -> None:
    store_card(org)
    turn_on(org, manager)
    debit(org, org.account.balance - 10, "drain")
    lots = Lot.objects.filter(account=org.account, source=LotSource.PURCHASE).count()
    pack = CreditPack.objects.get(slug="professional")
    opened = timezone.now() - auto_top_up.STUCK_AFTER - dt.timedelta(minutes=1)
    stuck = Purchase.objects.create(
        organization=org,
        pack=pack,
        credits=pack.credits or 0,
        price_cents=pack.price_cents or 0,
        currency=pack.currency,
        provider="local",
        origin=PurchaseOrigin.AUTO_TOP_UP,
        created_at=opened,
    )
    fresh = Purchase.objects.filter(pk=stuck.pk)
    fresh.update(created_at=timezone.now())
    assert auto_top_up.run(org.pk) == "in flight"  # a charge under way is left alone
    fresh.update(created_at=opened)
    assert auto_top_up.run(org.pk) == "succeeded"
    assert auto_purchases(org) == ["paid"]
    assert auto_top_up.run(org.pk) == "not needed"
    assert Lot.objects.filter(account=org.account, source=LotSource.PURCHASE).count() == lots + 1  # one pack


@pytest.mark.django_db(transaction=True)
def test_concurrent_debits_crossing_the_threshold_together_buy_exactly_one_pack(
    org: Organization, manager: User
) -> None:
    store_card(org)
    turn_on(org, manager, threshold=4_000)
    start = threading.Barrier(8)

    def job_runner(number: int) -> str:
        """A debit, then the top-up task its notice enqueues, both at once with the others."""
        try:
            start.wait()
            debit(org, 300, f"race-{number}")
            return auto_top_up.run(org.pk)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(job_runner, range(8)))
    assert outcomes.count("succeeded") == 1, outcomes
    assert auto_purchases(org) == [PurchaseStatus.PAID]
    assert postings.credits_now(org.account).available == 5_000 - 8 * 300 + 5_000


# --- The invoice PDF ----------------------------------------------------------------------


def test_invoice_pdf_is_a_real_pdf_with_the_number_lines_and_totals(
    manager_client: Client, org: Organization
) -> None:
    store_card(org)
    invoice = issue(org)
    response = manager_client.get(reverse("invoice_pdf", args=[org.slug, invoice.number]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{invoice.number}.pdf"'
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    for expected in (
        f"Invoice {invoice.number}",
        "Standard plan, October 2025",
        "Standard pack: 1,000 credits (paid at checkout)",
        "Subtotal $64.00",
        "Amount paid $15.00",
        "Amount due $49.00",
    ):
        assert expected in text, (expected, text)


def test_invoice_pdf_is_for_managers_of_its_organization(
    member_client: Client, outsider_client: Client, other_org: Organization, org: Organization
) -> None:
    invoice = issue(org, with_pack=False)
    assert member_client.get(reverse("invoice_pdf", args=[org.slug, invoice.number])).status_code == 403
    assert outsider_client.get(reverse("invoice_pdf", args=[org.slug, invoice.number])).status_code == 404
    assert (
        outsider_client.get(reverse("invoice_pdf", args=[other_org.slug, invoice.number])).status_code == 404
    )
