"""The API keys page: managers create keys (shown once), see when each was last used, and
revoke them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from billing.access import get_managed_organization, get_manager_membership
from billing.models import ApiKey, Membership, Scope
from team import audit
from team.models import Action

NEW_KEY = "new_api_key"


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where the key is used, e.g. job-runner.")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=[Scope.ACCOUNT_READ]
    )


def _page(
    request: HttpRequest, membership: Membership, form: ApiKeyForm, raw_key: str = "", status: int = 200
) -> HttpResponse:
    org = membership.organization
    return render(
        request,
        "billing/api_keys.html",
        {
            "org": org,
            "membership": membership,
            "form": form,
            "raw_key": raw_key,
            "keys": org.api_keys.select_related("created_by"),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest, slug: str) -> HttpResponse:
    """List the organization's keys; a POST creates one and redirects to the list, which
    shows the new key this once (a reload creates nothing and shows it no more)."""
    membership = get_manager_membership(request.user, slug)
    if request.method != "POST":
        return _page(request, membership, ApiKeyForm(), raw_key=request.session.pop(NEW_KEY, ""))
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, form, status=422)
    with transaction.atomic():
        key, raw = ApiKey.issue(
            membership.organization,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            created_by=request.user,
        )
        audit.record(
            request, key.organization, Action.API_KEY_CREATED, target=str(key), detail=", ".join(key.scopes)
        )
    request.session[NEW_KEY] = raw  # kept server-side until the list has shown it once
    return redirect("api_keys", slug=membership.organization.slug)


@login_required
@require_POST
def revoke_api_key(request: HttpRequest, slug: str, key_id: int) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    key = get_object_or_404(ApiKey, organization=org, pk=key_id)
    if key.revoked_at is None:
        with transaction.atomic():
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit.record(request, org, Action.API_KEY_REVOKED, target=str(key))
        messages.success(request, f"Revoked {key.name}; requests with it now get 401.")
    return redirect("api_keys", slug=org.slug)
