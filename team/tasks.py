"""Celery tasks of the team app."""

from __future__ import annotations

from celery import shared_task

from team import audit


@shared_task(name="team.prune_audit_log")
def prune_audit_log() -> int:
    """Daily: delete audit records older than their organization's plan's audit window."""
    return audit.prune()
