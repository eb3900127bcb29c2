"""Sign-in, the organization home page and its access rules."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.models import Organization
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_sign_in_lands_on_the_organization_home(org: Organization, manager: User) -> None:
    client = Client()
    response = client.post(
        reverse("login"), {"username": manager.username, "password": PASSWORD}, follow=True
    )
    assert response.status_code == 200
    assert org.name in response.text
    assert 'data-testid="credits-remaining">5,000<' in response.text


def test_home_shows_remaining_available_and_held(manager_client: Client, org: Organization) -> None:
    response = manager_client.get(reverse("organization", args=[org.slug]))
    assert response.status_code == 200
    for label in ("Remaining", "Available", "Held"):
        assert label in response.text


def test_member_sees_the_organization_home(member_client: Client, org: Organization) -> None:
    assert member_client.get(reverse("organization", args=[org.slug])).status_code == 200


def test_other_organization_is_not_found(outsider_client: Client, org: Organization) -> None:
    assert outsider_client.get(reverse("organization", args=[org.slug])).status_code == 404


def test_anonymous_is_sent_to_sign_in(org: Organization) -> None:
    response = Client().get(reverse("organization", args=[org.slug]))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_repeated_failed_sign_ins_lock_the_account(manager: User) -> None:
    client = Client()
    for _ in range(5):
        client.post(reverse("login"), {"username": manager.username, "password": "wrong"})
    response = client.post(reverse("login"), {"username": manager.username, "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.text


def test_a_member_is_told_the_page_is_for_managers(
    member_client: Client, member: User, org: Organization
) -> None:
    response = member_client.get(f"/orgs/{org.slug}/usage/")
    assert response.status_code == 403
    assert "Managers only" in response.text
    assert member.username in response.text  # still inside the frame, with the profile menu


def test_an_outsider_gets_a_plain_not_found(outsider_client: Client, org: Organization) -> None:
    response = outsider_client.get(f"/orgs/{org.slug}/billing/")
    assert response.status_code == 404
    assert "Not found" in response.text and org.name not in response.text
