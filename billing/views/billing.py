"""The billing page, buying a credit pack, the test checkout and the printable invoice.

Managers only: members get 403 and outsiders 404, for every page and action here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing import payment_methods, purchases
from billing.access import get_managed_organization, get_manager_membership
from billing.models import (
    AutoTopUp,
    CreditPack,
    Invoice,
    Organization,
    PaymentMethod,
    Purchase,
    PurchaseOrigin,
    PurchaseStatus,
)
from billing.payments import PaymentError, ProviderName
from billing.payments import local as local_provider
from billing.templatetags.money import money
from ledger import postings
from ledger.periods import next_month_start
from team import audit
from team.models import Action

HISTORY_ROWS = 50


def page_context(request: HttpRequest, slug: str) -> dict[str, Any]:
    """The managed organization and what the page frame (the profile menu) needs."""
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    return {
        "org": org,
        "membership": membership,
        "account": org.account,
        "credits": postings.credits_now(org.account),
        "sales_email": settings.SALES_EMAIL,
    }


def next_reset(org: Organization, now: dt.datetime | None = None) -> dt.datetime:
    """Subscription credits are granted at local midnight on the 1st of each month."""
    return next_month_start(now or timezone.now(), org.tzinfo)


@login_required
def billing(request: HttpRequest, slug: str) -> HttpResponse:
    return billing_page(request, page_context(request, slug))


def billing_page(
    request: HttpRequest,
    context: dict[str, Any],
    *,
    auto_top_up_form: forms.ModelForm | None = None,  # type: ignore[type-arg]
    details_form: forms.ModelForm | None = None,  # type: ignore[type-arg]
    status: int = 200,
) -> HttpResponse:
    """The billing page; a form posted with errors is shown bound, with them."""
    from billing.views.payments import AutoTopUpForm, BillingDetailsForm

    org: Organization = context["org"]
    now = timezone.now()
    lots = postings.live_lots(org.account, now)
    auto = AutoTopUp.objects.select_related("pack").filter(organization=org).first()
    context.update(
        subscription=org.plan_subscription,  # loaded with the membership
        next_reset=next_reset(org, now),
        lots=lots,
        packs=CreditPack.objects.filter(active=True),
        invoices=org.invoices.all()[:HISTORY_ROWS],
        payments=org.purchases.select_related("pack", "buyer").exclude(
            status=PurchaseStatus.PENDING, provider_session_id="", origin=PurchaseOrigin.CHECKOUT
        )[:HISTORY_ROWS],
        payment_method=PaymentMethod.objects.filter(organization=org).first(),
        auto_top_up=auto,
        auto_top_up_form=auto_top_up_form
        # The saved settings, or suggestions for a first one (``initial`` would override them).
        or AutoTopUpForm(instance=auto, initial=None if auto else {"threshold": 1_000, "monthly_limit": 3}),
        details_form=details_form or BillingDetailsForm(instance=payment_methods.profile(org)),
    )
    return render(request, "billing/billing.html", context, status=status)


@login_required
@require_POST
def buy_pack(request: HttpRequest, slug: str, pack: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    credit_pack = get_object_or_404(CreditPack, slug=pack)
    try:
        purchase, checkout_url = purchases.start(
            org, credit_pack, buyer=request.user, site_url=request.build_absolute_uri("/")
        )
    except (purchases.PackNotForSale, PaymentError) as exc:
        messages.error(request, str(exc))
        return redirect("billing", slug=org.slug)
    audit.record(
        request,
        org,
        Action.PURCHASE_STARTED,
        target=credit_pack.name,
        detail=f"{purchase.credits:,} credits for {money(purchase.price_cents, purchase.currency)}.",
    )
    return redirect(checkout_url)


@login_required
def purchase_complete(request: HttpRequest, slug: str, purchase_id: int) -> HttpResponse:
    """Where a checkout returns after payment. The provider's own report (the webhook)
    credits the account; this page only says where things stand."""
    org = get_managed_organization(request.user, slug)
    purchase = get_object_or_404(Purchase, organization=org, pk=purchase_id)
    if purchase.status == PurchaseStatus.PAID:
        messages.success(request, f"Payment received: {purchase.credits:,} credits were added.")
    elif purchase.status == PurchaseStatus.PENDING:
        messages.info(request, "Your payment is being confirmed; the credits appear as soon as it is.")
    else:
        messages.error(request, f"This payment {purchase.get_status_display().lower()}; nothing was charged.")
    return redirect("billing", slug=org.slug)


@login_required
def purchase_cancelled(request: HttpRequest, slug: str, purchase_id: int) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    get_object_or_404(Purchase, organization=org, pk=purchase_id)
    messages.info(request, "Checkout cancelled. Nothing was charged.")
    return redirect("billing", slug=org.slug)


def _local_purchase(org: Organization, session_id: str) -> Purchase:
    purchase = (
        Purchase.objects.select_related("pack")
        .filter(organization=org, provider=ProviderName.LOCAL, provider_session_id=session_id)
        .first()
    )
    if purchase is None:
        raise Http404("No such checkout.")
    return purchase


@login_required
def checkout(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    """The local test provider's hosted-checkout page."""
    context = page_context(request, slug)
    context["purchase"] = _local_purchase(context["org"], session_id)
    return render(request, "billing/checkout.html", context)


@login_required
@require_POST
def checkout_pay(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    purchase = _local_purchase(org, session_id)
    try:
        local_provider.pay(purchase)
    except purchases.PurchaseClosed:
        messages.error(request, "This checkout was closed; nothing was charged.")
        return redirect("billing", slug=org.slug)
    return redirect("purchase_complete", slug=org.slug, purchase_id=purchase.pk)


@login_required
@require_POST
def checkout_cancel(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    purchase = _local_purchase(org, session_id)
    local_provider.cancel(purchase)
    return redirect("purchase_cancelled", slug=org.slug, purchase_id=purchase.pk)


@login_required
def invoice(request: HttpRequest, slug: str, number: str) -> HttpResponse:
    context = page_context(request, slug)
    context["invoice"] = get_object_or_404(
        Invoice.objects.prefetch_related("lines", "attempts"), organization=context["org"], number=number
    )
    return render(request, "billing/invoice.html", context)
