"""Budgets set and removed by someone: the ledger's change and its audit record, in one
transaction (the pages and the API both change budgets through here)."""

from __future__ import annotations

from django.db import transaction

from billing.models import Organization
from ledger import budgets
from ledger.models import Budget, BudgetScope
from team import audit
from team.models import Action


def set_budget(by: audit.Actor, org: Organization, scope: str, name: str, limit: int) -> tuple[Budget, bool]:
    with transaction.atomic():
        before = budgets.find(org.account, scope, name)
        budget, made = budgets.set_budget(org.account, scope, name, limit)
        was = "" if before is None else f" (was {before.monthly_limit:,})"
        audit.record(
            by,
            org,
            Action.BUDGET_SET,
            target=_target(budget.scope, budget.name),
            detail=f"Monthly limit {limit:,} credits{was}.",
        )
    return budget, made


def remove_budget(by: audit.Actor, org: Organization, scope: str, name: str) -> bool:
    with transaction.atomic():
        removed = budgets.remove_budget(org.account, scope, name)
        if removed:
            audit.record(by, org, Action.BUDGET_REMOVED, target=_target(scope, name))
    return removed


def _target(scope: str, name: str) -> str:
    return f"{BudgetScope(scope).label.lower()} {name}"
