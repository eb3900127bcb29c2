"""The rules of an organization's people: seats, invitations, roles and removal.

Each rule is one function here, taken under the organization's row lock so two managers
acting at once cannot both take the last seat or both step down as the last managers.
Each records its action in the audit log in the same transaction.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from billing.models import Membership, Organization, Role
from team import audit
from team.models import INVITATION_VALID_FOR, Action, Invitation


class TeamRefusal(Exception):
    """A change the rules refuse; the message says why, for the page."""


class SeatsFull(TeamRefusal):
    pass


class LastManager(TeamRefusal):
    pass


class InvitationClosed(TeamRefusal):
    """The link was used, revoked or has expired."""


@dataclasses.dataclass(frozen=True)
class Seats:
    members: int
    pending: int
    limit: int | None

    @property
    def used(self) -> int:
        """Members and pending invitations both hold a seat."""
        return self.members + self.pending

    @property
    def full(self) -> bool:
        return self.limit is not None and self.used >= self.limit


def seats(org: Organization) -> Seats:
    """Both counts in one query (the usage page counts its queries)."""
    subscription = org.plan_subscription
    members, pending = (
        Organization.objects.filter(pk=org.pk)
        .values_list(
            _count(Membership.objects.filter(organization=OuterRef("pk"))),
            _count(Invitation.objects.filter(organization=OuterRef("pk")).pending()),
        )
        .get()
    )
    return Seats(
        members=members,
        pending=pending,
        limit=subscription.seats_limit if subscription is not None else None,
    )


def _count(rows: QuerySet[Any]) -> Coalesce:
    """How many of ``rows`` (each filtered to the outer organization), as a subquery."""
    return Coalesce(Subquery(rows.order_by().values("organization").annotate(n=Count("pk")).values("n")), 0)


def _lock(org: Organization) -> None:
    Organization.objects.select_for_update().filter(pk=org.pk).values_list("pk").get()


def _signed_in(request: HttpRequest) -> User:
    if isinstance(request.user, AnonymousUser):
        raise PermissionDenied("Sign in first.")
    return request.user


def _new_token(invitation: Invitation) -> str:
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    invitation.hashed_token = Invitation.hash(token)
    invitation.sent_at = now
    invitation.expires_at = now + INVITATION_VALID_FOR
    return token


def invite(request: HttpRequest, org: Organization, email: str, role: Role) -> tuple[Invitation, str]:
    """Invite ``email`` with ``role``; returns the invitation and the link's token (only
    its hash is kept). Refused when every seat is taken, or the address is already a member
    or invited."""
    email = email.strip().lower()
    with transaction.atomic():
        _lock(org)
        if org.memberships.filter(user__email__iexact=email).exists():
            raise TeamRefusal(f"{email} is already a member of {org.name}.")
        if Invitation.objects.filter(organization=org, email=email).pending().exists():
            raise TeamRefusal(f"{email} is already invited; resend the invitation instead.")
        count = seats(org)
        if count.full and org.plan_subscription is not None:
            raise SeatsFull(
                f"The {org.plan_subscription.plan.name} plan allows {count.limit} member seats, and all "
                f"{count.used} are taken ({count.members} members, {count.pending} pending invitations)."
            )
        invitation = Invitation(organization=org, email=email, role=role, invited_by=_signed_in(request))
        token = _new_token(invitation)
        invitation.save()
        audit.record(
            request, org, Action.MEMBER_INVITED, target=email, detail=f"Invited as a {role.label.lower()}."
        )
    return invitation, token


def resend(request: HttpRequest, invitation: Invitation) -> str:
    """A new link, valid for another seven days; the old one stops working."""
    with transaction.atomic():
        _lock(invitation.organization)
        invitation.refresh_from_db()
        if invitation.accepted_at or invitation.revoked_at:
            raise InvitationClosed(f"The invitation to {invitation.email} is no longer open.")
        if invitation.is_expired() and seats(invitation.organization).full:
            raise SeatsFull(f"Every seat is taken; {invitation.email}'s invitation has expired.")
        token = _new_token(invitation)
        invitation.save(update_fields=["hashed_token", "sent_at", "expires_at"])
        audit.record(
            request,
            invitation.organization,
            Action.INVITATION_RESENT,
            target=invitation.email,
            detail="A new link was sent; the previous one no longer works.",
        )
    return token


def revoke(request: HttpRequest, invitation: Invitation) -> None:
    with transaction.atomic():
        updated = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if not updated:
            raise InvitationClosed(f"The invitation to {invitation.email} is no longer open.")
        audit.record(request, invitation.organization, Action.INVITATION_REVOKED, target=invitation.email)


def accept(request: HttpRequest, invitation: Invitation) -> Membership:
    """The signed-in person joins with the invitation's role, once: the invitation held
    their seat. A person already a member keeps their membership and role."""
    org = invitation.organization
    user = _signed_in(request)
    with transaction.atomic():
        locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
        problem = closed_reason(locked)
        if problem:
            raise InvitationClosed(problem)
        membership, created = Membership.objects.get_or_create(
            organization=org, user=user, defaults={"role": locked.role}
        )
        locked.accepted_at, locked.accepted_by = timezone.now(), user
        locked.save(update_fields=["accepted_at", "accepted_by"])
        role = Role(membership.role).label.lower()
        detail = f"Joined as a {role}" if created else f"Already a member ({role}); the invitation was used"
        audit.record(
            request,
            org,
            Action.MEMBER_JOINED,
            target=user.get_username(),
            detail=f"{detail}, invited as {locked.email}.",
        )
    return membership


def send(request: HttpRequest, invitation: Invitation, token: str) -> None:
    """The invitation email: subject, text and HTML, through Django's mail settings."""
    context = {
        "invitation": invitation,
        "org": invitation.organization,
        "inviter": request.user.get_username(),
        "link": request.build_absolute_uri(reverse("invitation", args=[token])),
    }
    message = EmailMultiAlternatives(
        subject=render_to_string("emails/invitation_subject.txt", context).strip(),
        body=render_to_string("emails/invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[invitation.email],
    )
    message.attach_alternative(render_to_string("emails/invitation.html", context), "text/html")
    message.send()


def closed_reason(invitation: Invitation) -> str:
    """Why the link no longer works, or "" while it does."""
    if invitation.accepted_at:
        return "This invitation has already been used."
    if invitation.revoked_at:
        return "This invitation was revoked by a manager."
    if invitation.is_expired():
        return "This invitation has expired. Ask a manager of the organization for a new one."
    return ""


def change_role(request: HttpRequest, membership: Membership, role: Role) -> None:
    org = membership.organization
    with transaction.atomic():
        _lock(org)
        membership.refresh_from_db()
        if membership.role == role:
            return
        if membership.is_manager:
            _refuse_last_manager(membership, f"{membership.user.get_username()} is {org.name}'s last manager")
        previous = Role(membership.role)
        membership.role = role
        membership.save(update_fields=["role"])
        audit.record(
            request,
            org,
            Action.ROLE_CHANGED,
            target=membership.user.get_username(),
            detail=f"{previous.label} to {role.label}.",
        )


def remove(request: HttpRequest, membership: Membership) -> None:
    """Remove a member; removing oneself is leaving."""
    org = membership.organization
    with transaction.atomic():
        _lock(org)
        membership.refresh_from_db()
        name = membership.user.get_username()
        if membership.is_manager:
            _refuse_last_manager(membership, f"{name} is {org.name}'s last manager")
        membership.delete()
        left = membership.user_id == request.user.pk
        audit.record(
            request,
            org,
            Action.MEMBER_REMOVED,
            target=name,
            detail="Left the organization." if left else f"Removed ({Role(membership.role).label}).",
        )


def _refuse_last_manager(membership: Membership, who: str) -> None:
    others = Membership.objects.filter(organization_id=membership.organization_id, role=Role.MANAGER)
    if not others.exclude(pk=membership.pk).exists():
        raise LastManager(f"{who}: make someone else a manager first.")
