"""The audit log: one record per action that changes money or access, append-only at the
database, kept for the plan's audit window; the page, its filters and its CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import DatabaseError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import AlertThreshold, ApiKey, Membership, Organization, Purchase, Role
from team import audit
from team.models import Action, ActorKind, AuditRecord
from tests.factories import make_user
from tests.team_helpers import invite, link

pytestmark = pytest.mark.django_db


def _key(org: Organization) -> ApiKey:
    return ApiKey.issue(org, name="old", scopes=["account:read"])[0]


def _alert(org: Organization) -> AlertThreshold:
    return AlertThreshold.objects.create(organization=org, kind="absolute", value=100)


def _membership(org: Organization, member: User) -> Membership:
    return Membership.objects.get(organization=org, user=member)


# Each case: the request a manager makes (built once its setup exists) and the one action
# it records. Setups go through the models, so they record nothing themselves, except the
# invitations (made by a manager), which are counted before the action.
CASES: dict[Action, Callable[[Organization, User, User], tuple[str, dict[str, Any]]]] = {
    Action.API_KEY_CREATED: lambda org, manager, member: (
        reverse("api_keys", args=[org.slug]),
        {"name": "runner", "scopes": ["usage:write"]},
    ),
    Action.API_KEY_REVOKED: lambda org, manager, member: (
        reverse("revoke_api_key", args=[org.slug, _key(org).pk]),
        {},
    ),
    Action.ALERT_ADDED: lambda org, manager, member: (
        reverse("alerts", args=[org.slug]),
        {"kind": "absolute", "value": "100"},
    ),
    Action.ALERT_REMOVED: lambda org, manager, member: (
        reverse("delete_alert", args=[org.slug, _alert(org).pk]),
        {},
    ),
    Action.PURCHASE_STARTED: lambda org, manager, member: (
        reverse("buy_pack", args=[org.slug, "standard"]),
        {},
    ),
    Action.MEMBER_INVITED: lambda org, manager, member: (
        reverse("members", args=[org.slug]),
        {"email": "ada@example.com", "role": "member"},
    ),
    Action.INVITATION_RESENT: lambda org, manager, member: (
        reverse("resend_invitation", args=[org.slug, invite(org, manager, "ada@example.com")[0].pk]),
        {},
    ),
    Action.INVITATION_REVOKED: lambda org, manager, member: (
        reverse("revoke_invitation", args=[org.slug, invite(org, manager, "ada@example.com")[0].pk]),
        {},
    ),
    Action.ROLE_CHANGED: lambda org, manager, member: (
        reverse("change_role", args=[org.slug, _membership(org, member).pk]),
        {"role": "manager"},
    ),
    Action.MEMBER_REMOVED: lambda org, manager, member: (
        reverse("remove_member", args=[org.slug, _membership(org, member).pk]),
        {},
    ),
}


@pytest.mark.parametrize("action", list(CASES), ids=str)
def test_each_managers_action_writes_exactly_one_record(
    action: Action, manager_client: Client, org: Organization, manager: User, member: User
) -> None:
    url, data = CASES[action](org, manager, member)
    before = set(AuditRecord.objects.values_list("pk", flat=True))
    response = manager_client.post(url, data, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 302
    (record,) = AuditRecord.objects.exclude(pk__in=before)
    assert (record.action, record.organization, record.actor, record.actor_kind) == (
        action,
        org,
        manager.username,
        ActorKind.USER,
    )
    assert record.ip_address == "203.0.113.9"


def test_accepting_writes_one_record_naming_who_joined(org: Organization, manager: User) -> None:
    _, token = invite(org, manager, "ada@example.com")
    Client().post(
        link(token),
        {"username": "ada", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"},
        REMOTE_ADDR="203.0.113.10",
    )
    record = AuditRecord.objects.get(action=Action.MEMBER_JOINED)
    assert (record.actor, record.target, record.ip_address) == ("ada", "ada", "203.0.113.10")
    assert AuditRecord.objects.count() == 2  # the invitation and the joining


def test_a_paid_pack_writes_one_record_by_the_provider(manager_client: Client, org: Organization) -> None:
    manager_client.post(reverse("buy_pack", args=[org.slug, "standard"]))
    purchase = Purchase.objects.get(organization=org)
    pay = reverse("checkout_pay", args=[org.slug, purchase.provider_session_id])
    manager_client.post(pay)
    manager_client.post(pay)  # a replay credits nothing and records nothing
    paid = AuditRecord.objects.get(action=Action.PURCHASE_PAID)
    assert paid.actor_kind == ActorKind.SYSTEM and paid.target == "Standard pack"
    assert "1,000 credits added" in paid.detail
    assert AuditRecord.objects.filter(action=Action.PURCHASE_STARTED).count() == 1


def test_a_staff_adjustment_writes_one_record_by_staff(org: Organization) -> None:
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    client = Client()
    client.force_login(staff)
    client.post(
        reverse("admin:ledger_account_change", args=[org.account.pk]),
        {"time_zone": org.account.time_zone, "adjust_by": "-250", "adjust_memo": "Goodwill reversal."},
        REMOTE_ADDR="192.0.2.1",
    )
    (record,) = AuditRecord.objects.all()
    assert (record.action, record.actor, record.actor_kind, record.target) == (
        Action.CREDITS_ADJUSTED,
        "staff",
        ActorKind.STAFF,
        "-250 credits",
    )
    assert record.detail.startswith("Goodwill reversal.") and record.ip_address == "192.0.2.1"


def test_a_key_made_by_the_command_writes_one_record(org: Organization) -> None:
    call_command(
        "create_api_key",
        "--org",
        org.slug,
        "--scopes",
        "account:read",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    (record,) = AuditRecord.objects.all()
    assert (record.action, record.actor_kind) == (Action.API_KEY_CREATED, ActorKind.SYSTEM)


def test_an_api_request_is_recorded_as_its_key(org: Organization) -> None:
    from django.test import RequestFactory

    key, _ = ApiKey.issue(org, name="runner", scopes=["usage:write"])
    request = RequestFactory().put("/api/v1/budgets/project/x", REMOTE_ADDR="198.51.100.1")
    request.auth = key  # type: ignore[attr-defined]
    record = audit.record(request, org, Action.BUDGET_SET, target="project x")
    assert (record.actor_kind, record.actor, record.ip_address) == (
        ActorKind.API_KEY,
        f"runner ({key.prefix}…)",
        "198.51.100.1",
    )


def test_records_cannot_be_changed_or_deleted_within_the_window(org: Organization) -> None:
    record = audit.record("test", org, Action.ALERT_ADDED, target="below 100 credits")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(detail="nothing happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).delete()
    assert AuditRecord.objects.get(pk=record.pk).detail == ""


def test_prune_deletes_only_records_past_the_plans_audit_window(org: Organization) -> None:
    now = timezone.now()
    old = audit.record("test", org, Action.ALERT_ADDED, at=now - dt.timedelta(days=91))  # Standard: 90
    kept = audit.record("test", org, Action.ALERT_ADDED, at=now - dt.timedelta(days=89))
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditRecord.objects.filter(pk=old.pk).update(detail="rewritten")  # old, yet never edited
    assert audit.prune() == 1
    assert list(AuditRecord.objects.values_list("pk", flat=True)) == [kept.pk]


def _audit_url(org: Organization, **query: str) -> str:
    from urllib.parse import urlencode

    return reverse("audit", args=[org.slug]) + ("?" + urlencode(query) if query else "")


def test_the_page_shows_who_what_and_when_in_organization_time(manager_client: Client, manager: User) -> None:
    tokyo = make_org_in("Asia/Tokyo")
    Membership.objects.create(organization=tokyo, user=manager, role=Role.MANAGER)
    audit.record(
        manager,
        tokyo,
        Action.API_KEY_REVOKED,
        target="runner",
        at=dt.datetime(2026, 12, 5, 20, 30, tzinfo=dt.UTC),
    )
    page = manager_client.get(_audit_url(tokyo))
    assert page.status_code == 200
    assert "6 Dec 2026, 05:30" in page.text  # 20:30 UTC is the next morning in Tokyo
    assert "API key revoked: runner" in page.text and manager.username in page.text


def make_org_in(time_zone: str) -> Organization:
    from tests.factories import make_org

    return make_org("standard", time_zone=time_zone)


def test_filters_by_action_person_and_day(manager_client: Client, org: Organization, manager: User) -> None:
    other = make_user(org, Role.MANAGER)
    audit.record(manager, org, Action.ALERT_ADDED, target="alert-by-manager")
    audit.record(other, org, Action.API_KEY_CREATED, target="key-by-other")
    audit.record(
        manager, org, Action.ALERT_ADDED, target="old-alert", at=timezone.now() - dt.timedelta(days=5)
    )
    by_action = manager_client.get(_audit_url(org, action=Action.API_KEY_CREATED)).text
    assert "key-by-other" in by_action and "alert-by-manager" not in by_action
    by_person = manager_client.get(_audit_url(org, actor=manager.username)).text
    assert "alert-by-manager" in by_person and "key-by-other" not in by_person
    today = timezone.localdate(timezone=org.tzinfo).isoformat()
    by_day = manager_client.get(_audit_url(org, start=today, end=today)).text
    assert "alert-by-manager" in by_day and "old-alert" not in by_day


def test_csv_export_has_the_filtered_records_neutralized(
    manager_client: Client, org: Organization, manager: User
) -> None:
    audit.record(manager, org, Action.API_KEY_CREATED, target="=HYPERLINK(evil)", detail="usage:write")
    audit.record(manager, org, Action.ALERT_ADDED, target="below 100 credits")
    response = manager_client.get(
        reverse("audit_export", args=[org.slug]), {"action": Action.API_KEY_CREATED}
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))  # type: ignore[arg-type]
    assert rows[0] == ["time", "actor_kind", "actor", "action", "target", "detail", "ip_address"]
    assert len(rows) == 2
    assert rows[1][1:6] == ["user", manager.username, "api_key.created", "'=HYPERLINK(evil)", "usage:write"]


def test_member_gets_403_and_other_organization_404(
    member_client: Client, outsider_client: Client, org: Organization
) -> None:
    for url in (reverse("audit", args=[org.slug]), reverse("audit_export", args=[org.slug])):
        assert member_client.get(url).status_code == 403
        assert outsider_client.get(url).status_code == 404


def test_another_organizations_records_never_show(
    manager_client: Client, org: Organization, other_org: Organization, outsider: User
) -> None:
    audit.record(outsider, other_org, Action.API_KEY_CREATED, target="their-key")
    assert "their-key" not in manager_client.get(_audit_url(org)).text
    export = manager_client.get(reverse("audit_export", args=[org.slug]))
    assert b"their-key" not in export.getvalue()  # type: ignore[arg-type]
