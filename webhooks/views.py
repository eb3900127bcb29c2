"""The webhooks pages (managers only): endpoints with their signing secret shown once,
each endpoint's deliveries, and the buttons to rotate, test, resend and delete."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from billing.access import get_manager_membership
from billing.models import Membership
from billing.watch import update_notify
from team import audit
from team.models import Action
from webhooks import events
from webhooks.delivery import RefusedURL, validate_url
from webhooks.handlers import endpoint_changed, low_level
from webhooks.models import Delivery, Endpoint, EventType

NEW_SECRET = "new_webhook_secret"
LOG_LENGTH = 50


class EndpointForm(forms.ModelForm):  # type: ignore[type-arg]
    events = forms.MultipleChoiceField(
        choices=EventType.subscribable(), widget=forms.CheckboxSelectMultiple, label="Events"
    )

    class Meta:
        model = Endpoint
        fields = ["url", "description", "events", "enabled"]
        help_texts = {"url": "Where Tally POSTs each event, e.g. https://runner.example.com/tally-events"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["url"].widget.attrs["placeholder"] = "https://"
        if self.instance.pk is None:
            del self.fields["enabled"]  # a new endpoint starts enabled

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"]
        try:
            validate_url(url)
        except RefusedURL as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


def _get_endpoint(
    user: AbstractBaseUser | AnonymousUser, slug: str, endpoint_id: int
) -> tuple[Membership, Endpoint]:
    """The manager's membership and the endpoint of their organization; 404 for an
    endpoint of another organization, 403 for members."""
    membership = get_manager_membership(user, slug)
    endpoint = get_object_or_404(Endpoint, organization=membership.organization, pk=endpoint_id)
    return membership, endpoint


def _save(request: HttpRequest, form: EndpointForm, *, was_enabled: bool) -> Endpoint:
    """Save the endpoint and its audit record together."""
    made = form.instance.pk is None
    if form.instance.enabled and not was_enabled:
        form.instance.disabled_reason = ""
    with transaction.atomic():
        endpoint: Endpoint = form.save()
        endpoint_changed(endpoint, was_enabled=was_enabled)
        state = "enabled" if endpoint.enabled else "disabled"
        audit.record(
            request,
            endpoint.organization,
            Action.WEBHOOK_CREATED if made else Action.WEBHOOK_CHANGED,
            target=endpoint.url,
            detail=f"Events: {', '.join(endpoint.events)}; {state}.",
        )
    return endpoint


@login_required
@require_http_methods(["GET", "POST"])
def endpoints_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's endpoints; a POST adds one and shows its secret once."""
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    form = EndpointForm(request.POST or None, instance=Endpoint(organization=org, created_by=membership.user))
    if request.method == "POST" and form.is_valid():
        endpoint = _save(request, form, was_enabled=False)
        request.session[NEW_SECRET] = [endpoint.pk, endpoint.secret]
        return redirect("webhook_endpoint", slug=org.slug, endpoint_id=endpoint.pk)
    context = {
        "org": org,
        "membership": membership,
        "form": form,
        "endpoints": org.webhook_endpoints.all(),
        "low_level": low_level(org),
    }
    return render(request, "webhooks/endpoints.html", context, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_page(request: HttpRequest, slug: str, endpoint_id: int) -> HttpResponse:
    """An endpoint's settings and its deliveries, newest first; a POST changes it."""
    membership, endpoint = _get_endpoint(request.user, slug, endpoint_id)
    was_enabled = endpoint.enabled
    form = EndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        _save(request, form, was_enabled=was_enabled)
        messages.success(request, "Endpoint saved.")
        return redirect("webhook_endpoint", slug=slug, endpoint_id=endpoint.pk)
    new_secret = request.session.pop(NEW_SECRET, None)
    context = {
        "org": membership.organization,
        "membership": membership,
        "endpoint": endpoint,
        "form": form,
        "secret": new_secret[1] if new_secret and new_secret[0] == endpoint.pk else "",
        "deliveries": endpoint.deliveries.select_related("event")[:LOG_LENGTH],
    }
    return render(request, "webhooks/endpoint.html", context, status=422 if form.errors else 200)


@login_required
@require_POST
def rotate_secret(request: HttpRequest, slug: str, endpoint_id: int) -> HttpResponse:
    _, endpoint = _get_endpoint(request.user, slug, endpoint_id)
    with transaction.atomic():
        request.session[NEW_SECRET] = [endpoint.pk, endpoint.rotate_secret()]
        audit.record(
            request,
            endpoint.organization,
            Action.WEBHOOK_CHANGED,
            target=endpoint.url,
            detail="Signing secret rotated; the old one signs beside it for 24 hours.",
        )
    messages.success(request, "New secret made. The old one still signs deliveries for 24 hours.")
    return redirect("webhook_endpoint", slug=slug, endpoint_id=endpoint.pk)


@login_required
@require_POST
def send_test(request: HttpRequest, slug: str, endpoint_id: int) -> HttpResponse:
    _, endpoint = _get_endpoint(request.user, slug, endpoint_id)
    with transaction.atomic():
        events.send_test(endpoint)
    messages.success(request, "Test event sent; it appears in the deliveries below.")
    return redirect("webhook_endpoint", slug=slug, endpoint_id=endpoint.pk)


@login_required
@require_POST
def resend(request: HttpRequest, slug: str, endpoint_id: int, delivery_id: int) -> HttpResponse:
    _, endpoint = _get_endpoint(request.user, slug, endpoint_id)
    delivery = get_object_or_404(Delivery, endpoint=endpoint, pk=delivery_id)
    if not endpoint.enabled:
        messages.error(request, "Enable the endpoint to resend to it.")
    else:
        with transaction.atomic():
            events.resend(delivery)
        messages.success(request, f"{delivery.event.type} sent again.")
    return redirect("webhook_endpoint", slug=slug, endpoint_id=endpoint.pk)


@login_required
@require_POST
def delete_endpoint(request: HttpRequest, slug: str, endpoint_id: int) -> HttpResponse:
    _, endpoint = _get_endpoint(request.user, slug, endpoint_id)
    with transaction.atomic():
        audit.record(request, endpoint.organization, Action.WEBHOOK_REMOVED, target=endpoint.url)
        endpoint.delete()
        update_notify(endpoint.organization_id)
    messages.success(request, f"Endpoint {endpoint.url} deleted.")
    return redirect("webhooks", slug=slug)
