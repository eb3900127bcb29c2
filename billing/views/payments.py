"""The billing page's payment settings: the stored card (add, replace, remove; the local
test card page), auto top-up, billing details, and each invoice as a PDF.

Managers only: members get 403 and outsiders 404. Every form posts, then redirects back to
the billing page; a form with errors shows the billing page again with them, and saves
nothing.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from billing import auto_top_up, invoices, payment_methods
from billing.access import get_managed_organization
from billing.models import (
    AutoTopUp,
    BillingProfile,
    CreditPack,
    Invoice,
    Organization,
    PaymentMethodSetup,
    SetupStatus,
)
from billing.payments import PaymentError, ProviderName
from billing.payments import local as local_provider
from billing.views.billing import billing_page, page_context
from team import audit
from team.models import Action


class AutoTopUpForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = AutoTopUp
        fields = ["enabled", "threshold", "pack", "monthly_limit"]
        labels = {
            "enabled": "Top up automatically",
            "threshold": "When available credits fall below",
            "pack": "Buy",
            "monthly_limit": "At most, times a month",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pack: forms.ModelChoiceField = self.fields["pack"]  # type: ignore[type-arg,assignment]
        pack.queryset = CreditPack.objects.filter(
            active=True, credits__isnull=False, price_cents__isnull=False
        )
        pack.empty_label = None
        self.fields["threshold"].widget.attrs.update(min=1, max=auto_top_up.MAX_THRESHOLD)
        self.fields["monthly_limit"].widget.attrs.update(min=1, max=auto_top_up.MAX_MONTHLY_LIMIT)


class BillingDetailsForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = BillingProfile
        fields = ["legal_name", "address", "tax_id"]
        labels = {"legal_name": "Legal name"}
        help_texts = {"legal_name": "Empty: the organization's name."}
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}


@login_required
@require_POST
def add_payment_method(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    try:
        _, url = payment_methods.start(org, by=request.user, site_url=request.build_absolute_uri("/"))
    except PaymentError as exc:
        messages.error(request, str(exc))
        return redirect("billing", slug=org.slug)
    return redirect(url)


@login_required
def payment_method_added(request: HttpRequest, slug: str, setup_id: int) -> HttpResponse:
    """Where the card page returns once the card is entered. The provider's own report
    stores it; this only says where things stand."""
    org = get_managed_organization(request.user, slug)
    setup = get_object_or_404(PaymentMethodSetup, organization=org, pk=setup_id)
    if setup.status == SetupStatus.COMPLETED:
        messages.success(request, "Card saved: invoices and auto top-ups are charged to it.")
    elif setup.status == SetupStatus.PENDING:
        messages.info(request, "Your card is being confirmed; it appears here as soon as it is.")
    else:
        messages.error(request, "This card setup was cancelled; nothing changed.")
    return redirect("billing", slug=org.slug)


@login_required
@require_POST
def remove_payment_method(request: HttpRequest, slug: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    removed = payment_methods.remove(org, by=request)
    if removed is None:
        messages.info(request, "No card is stored.")
    else:
        messages.success(request, f"{removed} was removed. Invoices stay open until a card is added.")
    return redirect("billing", slug=org.slug)


def _local_setup(org: Organization, session_id: str) -> PaymentMethodSetup:
    setup = PaymentMethodSetup.objects.filter(
        organization=org, provider=ProviderName.LOCAL, session_id=session_id
    ).first()
    if setup is None:
        raise Http404("No such card setup.")
    return setup


@login_required
def local_card(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    """The local provider's card page, where a test card is entered."""
    context = page_context(request, slug)
    context.update(setup=_local_setup(context["org"], session_id), number=local_provider.SUCCEEDING_CARD)
    return render(request, "billing/card_setup.html", context)


@login_required
@require_POST
def local_card_save(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    context = page_context(request, slug)
    org: Organization = context["org"]
    setup = _local_setup(org, session_id)
    number = request.POST.get("number", "")
    try:
        local_provider.add_card(setup, number)
    except local_provider.UnknownTestCard as exc:
        context.update(setup=setup, number=number, error=str(exc))
        return render(request, "billing/card_setup.html", context, status=400)
    except payment_methods.SetupClosed:
        messages.error(request, "This card setup was closed; nothing changed.")
        return redirect("billing", slug=org.slug)
    return redirect("payment_method_added", slug=org.slug, setup_id=setup.pk)


@login_required
@require_POST
def local_card_cancel(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    local_provider.cancel_setup(_local_setup(org, session_id))
    messages.info(request, "No card was added.")
    return redirect("billing", slug=org.slug)


@login_required
@require_POST
def auto_top_up_settings(request: HttpRequest, slug: str) -> HttpResponse:
    context = page_context(request, slug)
    org: Organization = context["org"]
    form = AutoTopUpForm(request.POST, instance=AutoTopUp.objects.filter(organization=org).first())
    if form.is_valid():
        data = form.cleaned_data
        try:
            settings = auto_top_up.configure(
                org,
                enabled=data["enabled"],
                threshold=data["threshold"],
                pack=data["pack"],
                monthly_limit=data["monthly_limit"],
                by=request,
            )
        except auto_top_up.InvalidAutoTopUp as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Auto top-up saved. {auto_top_up.describe(settings)}")
            return redirect("billing", slug=org.slug)
    return billing_page(request, context, auto_top_up_form=form, status=400)


@login_required
@require_POST
def billing_details(request: HttpRequest, slug: str) -> HttpResponse:
    context = page_context(request, slug)
    org: Organization = context["org"]
    form = BillingDetailsForm(request.POST, instance=payment_methods.profile(org))
    if not form.is_valid():
        return billing_page(request, context, details_form=form, status=400)
    with transaction.atomic():
        profile = form.save()
        audit.record(
            request,
            org,
            Action.BILLING_DETAILS_CHANGED,
            target=profile.legal_name or org.name,
            detail=profile.bill_to,
        )
    messages.success(request, "Billing details saved; invoices issued from now on show them.")
    return redirect("billing", slug=org.slug)


@login_required
def invoice_pdf(request: HttpRequest, slug: str, number: str) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    invoice = get_object_or_404(
        Invoice.objects.select_related("organization"), organization=org, number=number
    )
    response = HttpResponse(invoices.render_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
    return response
