"""The members page (managers): the people and their roles, pending invitations, seats;
invite, resend, revoke, change a role, remove. Members get 403, outsiders 404."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from billing.access import get_managed_organization, get_manager_membership
from billing.models import Membership, Role
from team import members
from team.models import Invitation


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


def _page(request: HttpRequest, membership: Membership, form: InviteForm, status: int = 200) -> HttpResponse:
    org = membership.organization
    return render(
        request,
        "team/members.html",
        {
            "org": org,
            "membership": membership,
            "form": form,
            "people": org.memberships.select_related("user").order_by("role", "user__username"),
            "invitations": Invitation.objects.filter(organization=org).pending().select_related("invited_by"),
            "seats": members.seats(org),
            "roles": Role.choices,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def members_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's people; a POST invites someone by email."""
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    if request.method != "POST":
        return _page(request, membership, InviteForm())
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, form, status=422)
    try:
        invitation, token = members.invite(
            request, org, form.cleaned_data["email"], Role(form.cleaned_data["role"])
        )
    except members.TeamRefusal as refusal:
        form.add_error(None, str(refusal))
        return _page(request, membership, form, status=409)
    members.send(request, invitation, token)
    messages.success(request, f"Invitation sent to {invitation.email}; the link works for 7 days.")
    return redirect("members", slug=org.slug)


def _invitation(request: HttpRequest, slug: str, invitation_id: int) -> Invitation:
    org = get_managed_organization(request.user, slug)
    return get_object_or_404(
        Invitation.objects.select_related("organization"), organization=org, pk=invitation_id
    )


@login_required
@require_POST
def resend_invitation(request: HttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, slug, invitation_id)
    try:
        token = members.resend(request, invitation)
    except members.TeamRefusal as refusal:
        messages.error(request, str(refusal))
    else:
        members.send(request, invitation, token)
        messages.success(request, f"Sent {invitation.email} a new link; the previous one no longer works.")
    return redirect("members", slug=slug)


@login_required
@require_POST
def revoke_invitation(request: HttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, slug, invitation_id)
    try:
        members.revoke(request, invitation)
    except members.TeamRefusal as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"Revoked the invitation to {invitation.email}; its link no longer works.")
    return redirect("members", slug=slug)


def _membership(request: HttpRequest, slug: str, membership_id: int) -> Membership:
    org = get_managed_organization(request.user, slug)
    return get_object_or_404(
        Membership.objects.select_related("organization", "user"), organization=org, pk=membership_id
    )


@login_required
@require_POST
def change_role(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    person = _membership(request, slug, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose manager or member.")
        return redirect("members", slug=slug)
    try:
        members.change_role(request, person, Role(form.cleaned_data["role"]))
    except members.TeamRefusal as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(
            request, f"{person.user.get_username()} is now a {person.get_role_display().lower()}."
        )
    if person.user_id == request.user.pk and person.role != Role.MANAGER:
        return redirect("organization", slug=slug)  # no longer allowed on this page
    return redirect("members", slug=slug)


@login_required
@require_POST
def remove_member(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    person = _membership(request, slug, membership_id)
    name = person.user.get_username()
    try:
        members.remove(request, person)
    except members.TeamRefusal as refusal:
        messages.error(request, str(refusal))
        return redirect("members", slug=slug)
    if person.user_id == request.user.pk:
        messages.success(request, f"You left {person.organization.name}.")
        return redirect("home")
    messages.success(request, f"Removed {name} from {person.organization.name}.")
    return redirect("members", slug=slug)
