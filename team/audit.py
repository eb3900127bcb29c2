"""The audit log: who changed money or access in an organization, when, what, and from
which address. Every such action calls ``record`` once, in the transaction that makes the
change (so a change rolled back leaves no record)::

    from team import audit
    from team.models import Action

    audit.record(request, org, Action.BUDGET_SET, target="project shelf-detector",
                 detail="Monthly limit 5,000 credits (was 3,000).")

``by`` says who:

- an ``HttpRequest``: its API key when the JSON API authenticated it (``request.auth``),
  else its signed-in user (staff when ``is_staff``), and the client's address
  (``REMOTE_ADDR``; Tally trusts no forwarding header);
- a user or an ``ApiKey`` without a request (a command, a task acting for someone);
- a ``str`` naming the part of Tally or the provider that acted ("Stripe", "scheduler").

``target`` names the thing changed (a pack, a key, an email address), ``detail`` says the
change in a sentence. Records cannot be changed or deleted (a trigger refuses it) until
they are older than the plan's audit window; ``prune`` then deletes them, daily.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone

from billing.models import ApiKey, Organization
from team.models import Action, ActorKind, AuditRecord

type Actor = HttpRequest | AbstractBaseUser | ApiKey | str


def record(
    by: Actor,
    organization: Organization,
    action: Action,
    target: str = "",
    detail: str = "",
    *,
    at: dt.datetime | None = None,
) -> AuditRecord:
    """Append one record of ``action`` on ``organization`` (see the module's docstring);
    ``at`` is when it happened, now unless said (the demo's past purchases)."""
    kind, actor = _who(by)
    return AuditRecord.objects.create(
        organization=organization,
        created_at=at or timezone.now(),
        actor_kind=kind,
        actor=actor[:200],
        action=Action(action).value,
        target=target[:200],
        detail=detail,
        ip_address=(by.META.get("REMOTE_ADDR") or None) if isinstance(by, HttpRequest) else None,
    )


def _who(by: Actor | AnonymousUser) -> tuple[ActorKind, str]:
    if isinstance(by, HttpRequest):
        key = getattr(by, "auth", None)
        return _who(key if isinstance(key, ApiKey) else by.user)
    if isinstance(by, ApiKey):
        return ActorKind.API_KEY, f"{by.name} ({by.prefix}…)"
    if isinstance(by, str):
        return ActorKind.SYSTEM, by
    if isinstance(by, AnonymousUser):
        raise ValueError("An audited action needs someone to have done it.")
    return (ActorKind.STAFF if getattr(by, "is_staff", False) else ActorKind.USER), by.get_username()


def prune() -> int:
    """Delete the records past their organization's audit window (the rule is the
    database's ``team_audit_expired``, which the append-only trigger also applies).
    Returns how many went."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM team_auditrecord WHERE team_audit_expired(organization_id, created_at)")
        return int(cursor.rowcount)
