"""The members page: invite, resend, revoke, change a role, remove; seats; the last-manager
rule; and who may do any of it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse

from billing.models import Membership, Organization, Role
from team.models import Action, AuditRecord, Invitation
from tests.factories import make_user
from tests.team_helpers import invite, link

pytestmark = pytest.mark.django_db


def members_url(org: Organization) -> str:
    return reverse("members", args=[org.slug])


def limit_seats(org: Organization, seats: int) -> None:
    org.subscription.seats_limit_override = seats
    org.subscription.save()


def test_manager_sees_people_roles_and_seats(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    response = manager_client.get(members_url(org))
    assert response.status_code == 200
    assert "Member seats 2 of 10" in response.text  # the Standard plan's ten
    assert manager.username in response.text and member.username in response.text
    assert response.context["seats"].used == 2


def test_invite_emails_a_single_use_link_and_takes_a_seat(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    response = manager_client.post(members_url(org), {"email": "Ada@Example.com", "role": "manager"})
    assert response.status_code == 302
    invitation = Invitation.objects.get(organization=org)
    assert (invitation.email, invitation.role, invitation.invited_by) == (
        "ada@example.com",
        "manager",
        manager,
    )
    (message,) = mail.outbox
    assert message.to == ["ada@example.com"] and org.name in message.subject
    token = re.search(r"/invitations/([^/]+)/", str(message.body)).group(1)  # type: ignore[union-attr]
    assert Invitation.hash(token) == invitation.hashed_token and token not in invitation.hashed_token
    page = manager_client.get(members_url(org))
    assert "Member seats 3 of 10" in page.text and "ada@example.com" in page.text


def test_invite_is_refused_when_seats_are_full_with_the_limit_and_a_link_to_change_plan(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    limit_seats(org, 3)
    invite(org, manager, "first@example.com")  # members 2 + 1 pending = 3 of 3
    response = manager_client.post(members_url(org), {"email": "second@example.com", "role": "member"})
    assert response.status_code == 409
    assert "allows 3 member seats" in response.text
    assert f'href="{reverse("billing", args=[org.slug])}">Change plan' in response.text
    assert not Invitation.objects.filter(email="second@example.com").exists() and mail.outbox == []


def test_a_revoked_invitation_frees_its_seat(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    limit_seats(org, 3)
    invitation, _ = invite(org, manager, "first@example.com")
    manager_client.post(reverse("revoke_invitation", args=[org.slug, invitation.pk]))
    response = manager_client.post(members_url(org), {"email": "second@example.com", "role": "member"})
    assert response.status_code == 302 and "Member seats 3 of 3" in manager_client.get(members_url(org)).text


def test_a_member_or_someone_invited_cannot_be_invited_twice(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    invite(org, manager, "ada@example.com")
    again = manager_client.post(members_url(org), {"email": "ada@example.com", "role": "member"})
    assert again.status_code == 409 and "already invited" in again.text
    existing = manager_client.post(members_url(org), {"email": member.email, "role": "member"})
    assert existing.status_code == 409 and "already a member" in existing.text
    assert Invitation.objects.count() == 1


def test_resend_sends_a_new_link_and_the_old_one_stops_working(
    manager_client: Client, org: Organization, manager: User
) -> None:
    invitation, old_token = invite(org, manager, "ada@example.com")
    manager_client.post(reverse("resend_invitation", args=[org.slug, invitation.pk]))
    (message,) = mail.outbox
    new_token = re.search(r"/invitations/([^/]+)/", str(message.body)).group(1)  # type: ignore[union-attr]
    assert new_token != old_token
    assert Client().get(link(old_token)).status_code == 404
    assert Client().get(link(new_token)).status_code == 200


def test_revoked_link_says_so(manager_client: Client, org: Organization, manager: User) -> None:
    invitation, token = invite(org, manager, "ada@example.com")
    response = manager_client.post(reverse("revoke_invitation", args=[org.slug, invitation.pk]), follow=True)
    assert "Revoked the invitation to ada@example.com" in response.text
    closed = Client().get(link(token))
    assert closed.status_code == 410 and "revoked" in closed.text


def test_a_role_change_takes_effect_on_the_next_request(
    manager_client: Client, org: Organization, manager: User
) -> None:
    other = make_user(org, Role.MANAGER)
    other_client = Client()
    other_client.force_login(other)
    assert other_client.get(reverse("usage", args=[org.slug])).status_code == 200
    membership = Membership.objects.get(organization=org, user=other)
    manager_client.post(reverse("change_role", args=[org.slug, membership.pk]), {"role": "member"})
    assert other_client.get(reverse("usage", args=[org.slug])).status_code == 403
    membership.refresh_from_db()
    assert membership.role == Role.MEMBER


def test_the_last_manager_can_neither_be_demoted_nor_leave(
    manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    own = Membership.objects.get(organization=org, user=manager)
    demoted = manager_client.post(
        reverse("change_role", args=[org.slug, own.pk]), {"role": "member"}, follow=True
    )
    assert "last manager" in demoted.text
    left = manager_client.post(reverse("remove_member", args=[org.slug, own.pk]), follow=True)
    assert "last manager" in left.text
    own.refresh_from_db()
    assert own.role == Role.MANAGER
    assert not AuditRecord.objects.exists()


def test_a_manager_may_leave_once_another_manager_exists(
    manager_client: Client, org: Organization, manager: User
) -> None:
    make_user(org, Role.MANAGER)
    own = Membership.objects.get(organization=org, user=manager)
    response = manager_client.post(reverse("remove_member", args=[org.slug, own.pk]), follow=True)
    assert f"You left {org.name}" in response.text
    assert manager_client.get(reverse("organization", args=[org.slug])).status_code == 404
    assert AuditRecord.objects.get().detail == "Left the organization."


def test_a_removed_member_loses_access_at_once(
    manager_client: Client, org: Organization, member: User, member_client: Client
) -> None:
    assert member_client.get(reverse("organization", args=[org.slug])).status_code == 200
    membership = Membership.objects.get(organization=org, user=member)
    manager_client.post(reverse("remove_member", args=[org.slug, membership.pk]))
    assert member_client.get(reverse("organization", args=[org.slug])).status_code == 404


def _team_posts(
    org: Organization, membership: Membership, invitation: Invitation
) -> list[tuple[str, dict[str, str]]]:
    return [
        (members_url(org), {"email": "x@example.com", "role": "member"}),
        (reverse("change_role", args=[org.slug, membership.pk]), {"role": "manager"}),
        (reverse("remove_member", args=[org.slug, membership.pk]), {}),
        (reverse("resend_invitation", args=[org.slug, invitation.pk]), {}),
        (reverse("revoke_invitation", args=[org.slug, invitation.pk]), {}),
    ]


def test_member_gets_403_and_changes_nothing(
    member_client: Client, org: Organization, manager: User, member: User
) -> None:
    invitation, _ = invite(org, manager, "ada@example.com")
    membership = Membership.objects.get(organization=org, user=member)
    assert member_client.get(members_url(org)).status_code == 403
    for url, data in _team_posts(org, membership, invitation):
        assert member_client.post(url, data).status_code == 403, url
    membership.refresh_from_db()
    invitation.refresh_from_db()
    assert membership.role == Role.MEMBER and invitation.revoked_at is None
    assert Invitation.objects.count() == 1 and mail.outbox == []


def test_other_organization_gets_404_and_changes_nothing(
    outsider_client: Client, org: Organization, other_org: Organization, manager: User, member: User
) -> None:
    invitation, _ = invite(org, manager, "ada@example.com")
    membership = Membership.objects.get(organization=org, user=member)
    assert outsider_client.get(members_url(org)).status_code == 404
    for url, data in _team_posts(org, membership, invitation):
        assert outsider_client.post(url, data).status_code == 404, url
    # Nor through their own organization's URLs.
    for url, data in _team_posts(other_org, membership, invitation)[1:]:
        assert outsider_client.post(url, data).status_code == 404, url
    assert Membership.objects.filter(pk=membership.pk, role=Role.MEMBER).exists()
    assert Invitation.objects.get().revoked_at is None


def test_team_actions_refuse_get(manager_client: Client, org: Organization, member: User) -> None:
    membership = Membership.objects.get(organization=org, user=member)
    assert manager_client.get(reverse("remove_member", args=[org.slug, membership.pk])).status_code == 405
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_anonymous_is_sent_to_sign_in(org: Organization) -> None:
    response = Client().get(members_url(org))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_profile_menu_links_members_and_audit_for_managers_only(
    manager_client: Client, member_client: Client, org: Organization
) -> None:
    page = reverse("organization", args=[org.slug])
    links = [f'href="{members_url(org)}"', f'href="{reverse("audit", args=[org.slug])}"']
    manager_page, member_page = manager_client.get(page).text, member_client.get(page).text
    assert all(href in manager_page for href in links)
    assert not any(href in member_page for href in links)


def test_pending_invitations_count_on_the_usage_seat_gauge(
    manager_client: Client, org: Organization, manager: User
) -> None:
    invite(org, manager, "ada@example.com")
    assert "2 of 10 seats used" in manager_client.get(reverse("usage", args=[org.slug])).text
    assert Action.MEMBER_INVITED in AuditRecord.objects.values_list("action", flat=True)
