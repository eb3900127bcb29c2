"""Accepting an invitation: as a new person or an existing one, once, within seven days."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import Membership, Organization, Role
from team.models import Action, AuditRecord, Invitation
from tests.factories import PASSWORD, make_user
from tests.team_helpers import invite, link

pytestmark = pytest.mark.django_db

SIGN_UP = {"username": "ada", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"}


def test_a_new_person_sets_a_username_and_password_and_joins(org: Organization, manager: User) -> None:
    invitation, token = invite(org, manager, "ada@example.com", Role.MANAGER)
    client = Client()
    page = client.get(link(token))
    assert page.status_code == 200 and "Create account and join" in page.text and org.name in page.text
    response = client.post(link(token), SIGN_UP)
    assert response.status_code == 302 and response["Location"] == reverse("organization", args=[org.slug])
    ada = get_user_model().objects.get(username="ada")
    assert ada.email == "ada@example.com" and ada.check_password(SIGN_UP["password1"])
    assert Membership.objects.get(organization=org, user=ada).role == Role.MANAGER
    assert client.get(reverse("usage", args=[org.slug])).status_code == 200  # signed in, a manager
    invitation.refresh_from_db()
    assert invitation.accepted_by == ada and invitation.accepted_at is not None


def test_a_used_link_says_so_and_adds_no_one(org: Organization, manager: User) -> None:
    _, token = invite(org, manager, "ada@example.com")
    Client().post(link(token), SIGN_UP)
    again = Client().post(link(token), {**SIGN_UP, "username": "mallory"})
    assert again.status_code == 410 and "already been used" in again.text
    assert not get_user_model().objects.filter(username="mallory").exists()
    assert org.memberships.count() == 2


def test_an_existing_account_must_sign_in_to_accept(org: Organization, manager: User) -> None:
    ada = make_user(None, username="ada-existing")
    _, token = invite(org, manager, ada.email)
    client = Client()
    page = client.get(link(token))
    assert "Sign in to accept" in page.text and "Create account" not in page.text
    assert f'href="{reverse("login")}?next={link(token)}"' in page.text
    refused = client.post(link(token), {**SIGN_UP, "username": "someone-else"})
    assert (
        refused.status_code == 403 and not get_user_model().objects.filter(username="someone-else").exists()
    )
    assert not Membership.objects.filter(user=ada).exists()
    assert "_auth_user_id" not in client.session  # holding the link signed no one in

    signed_in = client.post(
        reverse("login"), {"username": ada.username, "password": PASSWORD, "next": link(token)}
    )
    assert signed_in["Location"] == link(token)
    assert "Join " in client.get(link(token)).text
    joined = client.post(link(token))
    assert joined["Location"] == reverse("organization", args=[org.slug])
    assert Membership.objects.get(organization=org, user=ada).role == Role.MEMBER


def test_a_signed_in_person_with_another_address_may_accept_and_is_told(
    org: Organization, manager: User
) -> None:
    someone = make_user(None)
    _, token = invite(org, manager, "ada@example.com")
    client = Client()
    client.force_login(someone)
    page = client.get(link(token))
    assert f"not ada@example.com. Accepting adds {someone.username}" in page.text
    client.post(link(token))
    assert Membership.objects.filter(organization=org, user=someone).exists()
    assert AuditRecord.objects.get(action=Action.MEMBER_JOINED).detail.endswith("invited as ada@example.com.")


def test_an_expired_link_says_so(org: Organization, manager: User) -> None:
    invitation, token = invite(org, manager, "ada@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = Client().post(link(token), SIGN_UP)
    assert response.status_code == 410 and "expired" in response.text
    assert not get_user_model().objects.filter(username="ada").exists()


def test_a_link_works_for_seven_days(org: Organization, manager: User) -> None:
    invitation, _ = invite(org, manager, "ada@example.com")
    assert invitation.expires_at - invitation.sent_at == dt.timedelta(days=7)


def test_an_unknown_link_is_not_found() -> None:
    response = Client().get(link("not-a-real-token"))
    assert response.status_code == 404 and "not valid" in response.text


def test_an_existing_member_accepting_keeps_their_role(
    org: Organization, manager: User, member: User, member_client: Client
) -> None:
    _, token = invite(org, manager, "other@example.com", Role.MANAGER)
    member_client.post(link(token))
    assert Membership.objects.get(organization=org, user=member).role == Role.MEMBER
    assert org.memberships.count() == 2


def test_a_weak_or_mismatched_password_is_refused(org: Organization, manager: User) -> None:
    _, token = invite(org, manager, "ada@example.com")
    response = Client().post(link(token), {**SIGN_UP, "password2": "something-else-1"})
    assert response.status_code == 422
    assert not get_user_model().objects.filter(username="ada").exists()
    assert Client().get(link(token)).status_code == 200  # still open
