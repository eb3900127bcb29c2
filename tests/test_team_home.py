"""Where ``/`` goes: the organization used last; staff without one find the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.models import Membership, Organization, Role
from tests.factories import make_org

pytestmark = pytest.mark.django_db


def test_home_goes_to_the_organization_used_last_even_after_signing_in_again(
    manager: User, org: Organization
) -> None:
    second = make_org("standard", slug="zz-second")
    Membership.objects.create(organization=second, user=manager, role=Role.MEMBER)
    client = Client()
    client.force_login(manager)
    first_choice = reverse("organization", args=[sorted([org, second], key=lambda o: o.name)[0].slug])
    assert client.get("/")["Location"] == first_choice
    client.get(reverse("organization", args=[second.slug]))
    assert client.get("/")["Location"] == reverse("organization", args=[second.slug])
    client.logout()
    client.force_login(manager)
    assert client.get("/")["Location"] == reverse("organization", args=[second.slug])


def test_a_page_refused_is_not_remembered(manager: User, org: Organization, other_org: Organization) -> None:
    client = Client()
    client.force_login(manager)
    client.get(reverse("organization", args=[org.slug]))
    assert client.get(reverse("organization", args=[other_org.slug])).status_code == 404
    assert client.get("/")["Location"] == reverse("organization", args=[org.slug])


def test_the_profile_menu_switches_between_organizations(manager: User, org: Organization) -> None:
    second = make_org("standard", slug="zz-second")
    Membership.objects.create(organization=second, user=manager, role=Role.MEMBER)
    client = Client()
    client.force_login(manager)
    menu = client.get(reverse("organization", args=[org.slug])).text
    assert "Switch organization" in menu and f'href="{reverse("organization", args=[second.slug])}"' in menu


def test_staff_without_an_organization_land_on_a_page_linking_the_admin() -> None:
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    client = Client()
    client.force_login(staff)
    page = client.get("/")
    assert page.status_code == 200 and f'href="{reverse("admin:index")}"' in page.text
    assert "No organization yet" not in page.text


def test_others_without_an_organization_are_told_to_ask_for_an_invitation() -> None:
    client = Client()
    client.force_login(get_user_model().objects.create_user("loner", password="pw-loner-123"))
    page = client.get("/")
    assert "No organization yet" in page.text and reverse("admin:index") not in page.text
