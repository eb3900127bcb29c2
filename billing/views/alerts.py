"""Low-credit alerts: managers add thresholds (a percentage of the monthly allowance or a
number of credits) and remove them. The emails themselves are sent by ``billing.alerts``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from billing.access import get_managed_organization, get_manager_membership
from billing.alerts import threshold_level
from billing.models import AlertKind, AlertThreshold, Membership, Organization
from ledger import postings
from team import audit
from team.models import Action


class AlertThresholdForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = AlertThreshold
        fields = ["kind", "value"]
        labels = {"kind": "Alert when available credits fall below", "value": "Value"}

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["value"].widget.attrs["min"] = 1

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, value = data.get("kind"), data.get("value")
        if value is not None and value < 1:
            self.add_error("value", "Use a positive number.")
        if kind == AlertKind.PERCENT and value is not None and value > 100:
            self.add_error("value", "A percentage is at most 100.")
        if kind == AlertKind.PERCENT and self.organization.account.unlimited:
            self.add_error("kind", "An unlimited plan has no allowance; use a number of credits.")
        if (
            kind
            and value
            and AlertThreshold.objects.filter(
                organization=self.organization, kind=str(kind), value=int(value)
            ).exists()
        ):
            raise forms.ValidationError("That alert is already set.")
        return data

    def save(self, commit: bool = True) -> AlertThreshold:
        threshold: AlertThreshold = self.instance
        threshold.organization = self.organization
        if commit:
            threshold.save()
        return threshold


def _page(
    request: HttpRequest, membership: Membership, form: AlertThresholdForm, status: int = 200
) -> HttpResponse:
    org = membership.organization
    subscription = org.plan_subscription
    allowance = subscription.monthly_credits if subscription is not None else None
    thresholds = [
        (threshold, threshold_level(threshold, allowance))
        for threshold in org.alert_thresholds.order_by("kind", "value")
    ]
    return render(
        request,
        "billing/alerts.html",
        {
            "org": org,
            "membership": membership,
            "form": form,
            "thresholds": thresholds,
            "allowance": allowance,
            "account": org.account,
            "credits": postings.credits_now(org.account),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def alerts(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's thresholds; a POST adds one."""
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    if request.method != "POST":
        return _page(request, membership, AlertThresholdForm(organization=org))
    form = AlertThresholdForm(request.POST, organization=org)
    if not form.is_valid():
        return _page(request, membership, form, status=422)
    with transaction.atomic():
        threshold = form.save()
        audit.record(request, org, Action.ALERT_ADDED, target=f"below {threshold}")
    messages.success(request, f"Alert added: below {threshold}.")
    return redirect("alerts", slug=org.slug)


@login_required
@require_POST
def delete_alert(request: HttpRequest, slug: str, alert_id: int) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    threshold = get_object_or_404(AlertThreshold, organization=org, pk=alert_id)
    with transaction.atomic():
        threshold.delete()
        audit.record(request, org, Action.ALERT_REMOVED, target=f"below {threshold}")
    messages.success(request, f"Alert removed: below {threshold}.")
    return redirect("alerts", slug=org.slug)
