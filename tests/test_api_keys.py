"""The API keys page and the create_api_key command."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from billing.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


def keys_url(org: Organization) -> str:
    return reverse("api_keys", args=[org.slug])


def test_manager_creates_a_key_that_is_shown_once_and_stored_hashed(
    manager_client: Client, org: Organization
) -> None:
    created = manager_client.post(
        keys_url(org), {"name": "job-runner", "scopes": ["account:read", "usage:write"]}
    )
    assert created.status_code == 302 and created["Location"] == keys_url(org)  # post/redirect/get
    response = manager_client.get(keys_url(org))
    raw = response.context["raw_key"]
    assert raw.startswith("tly_") and raw in response.text
    key = ApiKey.objects.get(organization=org)
    assert key.hashed_key == ApiKey.hash(raw) and raw not in (key.hashed_key, key.prefix)
    assert key.scopes == ["account:read", "usage:write"]
    listing = manager_client.get(keys_url(org))
    assert raw not in listing.text
    assert f"{key.prefix}…" in listing.text and "job-runner" in listing.text
    assert "Never" in listing.text  # not used yet
    api = Client().get("/api/v1/credits/balance", headers={"Authorization": f"Bearer {raw}"})
    assert api.json()["credits_remaining"] == 5_000
    last_used = manager_client.get(keys_url(org)).text
    assert "just now" in last_used and "0 minutes" not in last_used  # used a moment ago


def test_reloading_after_creating_a_key_creates_no_second_key(
    manager_client: Client, org: Organization
) -> None:
    manager_client.post(keys_url(org), {"name": "job-runner", "scopes": ["usage:write"]}, follow=True)
    reloaded = manager_client.get(keys_url(org))
    assert reloaded.status_code == 200 and not reloaded.context["raw_key"]
    assert ApiKey.objects.filter(organization=org).count() == 1


def test_a_key_needs_a_name_and_a_scope(manager_client: Client, org: Organization) -> None:
    response = manager_client.post(keys_url(org), {"name": "", "scopes": []})
    assert response.status_code == 422
    assert not ApiKey.objects.exists()


def test_manager_revokes_a_key_and_it_stops_working(manager_client: Client, org: Organization) -> None:
    key, raw = ApiKey.issue(org, name="old", scopes=["account:read"])
    response = manager_client.post(reverse("revoke_api_key", args=[org.slug, key.pk]), follow=True)
    assert "Revoked old" in response.text
    assert Client().get("/api/v1/pricing", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    assert manager_client.get(reverse("revoke_api_key", args=[org.slug, key.pk])).status_code == 405


def test_member_cannot_open_or_revoke_api_keys(member_client: Client, org: Organization) -> None:
    key, _ = ApiKey.issue(org, name="k", scopes=["account:read"])
    assert member_client.get(keys_url(org)).status_code == 403
    assert member_client.post(keys_url(org), {"name": "x", "scopes": ["usage:write"]}).status_code == 403
    assert member_client.post(reverse("revoke_api_key", args=[org.slug, key.pk])).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1


def test_other_organization_cannot_see_or_revoke_keys(
    outsider_client: Client, org: Organization, other_org: Organization
) -> None:
    key, _ = ApiKey.issue(org, name="k", scopes=["account:read"])
    assert outsider_client.get(keys_url(org)).status_code == 404
    assert outsider_client.post(reverse("revoke_api_key", args=[org.slug, key.pk])).status_code == 404
    # Nor through their own organization's URL.
    assert outsider_client.post(reverse("revoke_api_key", args=[other_org.slug, key.pk])).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_anonymous_is_sent_to_sign_in(org: Organization) -> None:
    response = Client().get(keys_url(org))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_profile_menu_links_api_keys_for_managers_only(
    manager_client: Client, member_client: Client, org: Organization
) -> None:
    page = reverse("organization", args=[org.slug])
    assert f'href="{keys_url(org)}"' in manager_client.get(page).text
    assert f'href="{keys_url(org)}"' not in member_client.get(page).text


def test_create_api_key_prints_a_working_key_once(org: Organization) -> None:
    out = io.StringIO()
    call_command(
        "create_api_key",
        "--org",
        org.slug,
        "--scopes",
        "account:read,usage:write",
        "--name",
        "ci",
        stdout=out,
        stderr=io.StringIO(),
    )
    raw = out.getvalue().strip()
    key = ApiKey.objects.get(organization=org)
    assert (key.name, key.scopes, key.hashed_key) == ("ci", ["account:read", "usage:write"], ApiKey.hash(raw))
    response = Client().post(
        "/api/v1/debits",
        data={"operation": "image_inference", "quantity": 3},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 201


def test_create_api_key_refuses_unknown_scopes_and_organizations(org: Organization) -> None:
    with pytest.raises(CommandError, match="Scopes must be among"):
        call_command("create_api_key", "--org", org.slug, "--scopes", "admin")
    with pytest.raises(CommandError, match="No organization"):
        call_command("create_api_key", "--org", "nope", "--scopes", "account:read")
    assert not ApiKey.objects.exists()
