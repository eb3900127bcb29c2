"""Payments test data: a card stored through the local provider's own page, a month's
invoice issued with a pack bought during the month, Celery run in the test's process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import reverse

from billing import purchases
from billing.celery import app
from billing.invoices import issue_invoices
from billing.models import CreditPack, Invoice, Organization, PaymentMethod, PaymentMethodSetup
from billing.payments import local

PERIOD = dt.date(2025, 10, 1)
CLOSED_AT = dt.datetime(2025, 11, 1, 0, 5, tzinfo=dt.UTC)


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks enqueued with ``.delay`` run at once, in this process."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def add_card(client: Client, org: Organization, number: str = local.SUCCEEDING_CARD) -> str:
    """A manager adds ``number`` on the local card page; the page the flow ends on."""
    start = client.post(reverse("add_payment_method", args=[org.slug]))
    assert start.status_code == 302
    setup = PaymentMethodSetup.objects.filter(organization=org).latest("pk")
    assert start["Location"] == reverse("local_card", args=[org.slug, setup.session_id])
    saved = client.post(
        reverse("local_card_save", args=[org.slug, setup.session_id]), {"number": number}, follow=True
    )
    assert saved.status_code == 200
    return saved.text


def store_card(org: Organization, number: str = local.SUCCEEDING_CARD) -> PaymentMethod:
    """A card stored without going through the pages."""
    setup = PaymentMethodSetup.objects.create(
        organization=org, provider="local", session_id=f"local_seti_{org.pk}"
    )
    return local.add_card(setup, number)


def buy_pack_in(org: Organization, when: dt.datetime, pack: str = "standard") -> None:
    """A pack bought at checkout at ``when`` (so it belongs to that month's invoice)."""
    credit_pack = CreditPack.objects.get(slug=pack)
    purchase = org.purchases.create(
        pack=credit_pack,
        credits=credit_pack.credits or 0,
        price_cents=credit_pack.price_cents or 0,
        currency=credit_pack.currency,
        provider="local",
        provider_session_id=f"local_cs_{when:%Y%m%d%H%M%S}",
        created_at=when,
    )
    purchases.fulfil(purchase, payment_id=f"local_pi_{when:%Y%m%d%H%M%S}", now=when)


def issue(org: Organization, *, with_pack: bool = True) -> Invoice:
    """October 2025's invoice: the Standard plan's $49.00 and, paid at checkout during
    the month, a Standard pack's $15.00."""
    if with_pack:
        buy_pack_in(org, dt.datetime(2025, 10, 14, 9, 30, tzinfo=dt.UTC))
    (invoice,) = issue_invoices([org], PERIOD, CLOSED_AT)
    return invoice
