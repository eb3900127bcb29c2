"""Accepting an invitation at ``/invitations/<token>/``.

- A signed-in person sees whom the invitation was sent to and joins with one button; the
  invitation may be accepted by a person signed in under another address (the page says
  so): whoever holds the link was sent it, and the manager sees who joined in the audit log.
- Anyone else either signs in first (the link is kept as ``next``) or, as a new person,
  chooses a username and password: the account is made with the invited address and
  signed in. Holding a link never signs in an existing account.
- A used, revoked or expired link answers 410 and says which; an unknown one 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import BaseUserCreationForm
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from team import members
from team.models import Invitation


class SignUpForm(BaseUserCreationForm):  # type: ignore[type-arg]
    class Meta(BaseUserCreationForm.Meta):  # type: ignore[name-defined,misc]
        model = User
        fields = ("username",)


def _render(
    request: HttpRequest, invitation: Invitation | None, status: int = 200, **extra: object
) -> HttpResponse:
    context = {
        "invitation": invitation,
        "invited_org": invitation.organization if invitation else None,
        **extra,
    }
    return render(request, "team/invitation.html", context, status=status)


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    found = (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(hashed_token=Invitation.hash(token))
        .first()
    )
    if found is None:
        return _render(
            request,
            None,
            status=404,
            closed="This invitation link is not valid. If it was resent, use the newest email.",
        )
    closed = members.closed_reason(found)
    if closed:
        return _render(request, found, status=410, closed=closed)
    if request.user.is_authenticated:
        return _accept_signed_in(request, found)
    return _sign_up(request, found)


def _accept_signed_in(request: HttpRequest, found: Invitation) -> HttpResponse:
    if request.method != "POST":
        return _render(request, found)
    try:
        membership = members.accept(request, found)
    except members.InvitationClosed as closed:
        return _render(request, found, status=410, closed=str(closed))
    messages.success(
        request, f"You joined {found.organization.name} as a {membership.get_role_display().lower()}."
    )
    return redirect("organization", slug=found.organization.slug)


def _sign_up(request: HttpRequest, found: Invitation) -> HttpResponse:
    if get_user_model().objects.filter(email__iexact=found.email).exists():
        # The invited address has an account: its owner signs in to accept.
        return _render(request, found, status=403 if request.method == "POST" else 200, existing_account=True)
    form = SignUpForm(request.POST if request.method == "POST" else None)
    if request.method != "POST" or not form.is_valid():
        return _render(request, found, status=422 if request.method == "POST" else 200, form=form)
    try:
        with transaction.atomic():
            user = form.save(commit=False)
            user.email = found.email
            user.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            membership = members.accept(request, found)
    except members.InvitationClosed as closed:
        request.session.flush()  # the account was rolled back; so is the sign-in
        return _render(request, found, status=410, closed=str(closed))
    messages.success(
        request,
        f"Welcome to {found.organization.name}: you joined as a {membership.get_role_display().lower()}.",
    )
    return redirect("organization", slug=found.organization.slug)
