"""Budgets over the API: read with ``account:read``; set and removed with ``budgets:write``.

The ledger enforces them (a posting that would take one past its limit is refused with
402 ``budget_exceeded``); these endpoints only set them and read their figures.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Path, Router, Status

from billing import budget_changes
from billing.api.auth import BUDGETS, READ, organization
from billing.api.errors import NotFound
from billing.api.schemas import NO_NUL, BudgetIn, BudgetOut, BudgetsOut, Error
from ledger import budgets
from ledger.models import BudgetScope

router = Router(tags=["budgets"])

FAILURES: dict[int, type[Error]] = dict.fromkeys((401, 403, 404, 413, 415, 422, 429), Error)
SCOPE = Path(..., pattern="^(" + "|".join(BudgetScope.values) + ")$")  # type: ignore[type-arg]
NAME = Path(..., min_length=1, max_length=200, pattern=NO_NUL)  # type: ignore[type-arg]


def budget_out(figures: budgets.BudgetFigures) -> BudgetOut:
    return BudgetOut.model_validate(figures, from_attributes=True)  # the same field names


@router.get("budgets", response={200: BudgetsOut, **FAILURES}, auth=READ)
def list_budgets(request: HttpRequest) -> BudgetsOut:
    """The organization's budgets with this month's figures."""
    return BudgetsOut(budgets=[budget_out(b) for b in budgets.budgets(organization(request).account)])


@router.put(
    "budgets/{scope}/{path:name}", response={200: BudgetOut, 201: BudgetOut, **FAILURES}, auth=BUDGETS
)
def put_budget(
    request: HttpRequest, body: BudgetIn, scope: str = SCOPE, name: str = NAME
) -> Status[BudgetOut]:
    """Set the monthly limit of the budget of a project, a user or an API key (by its name);
    201 when the budget is new."""
    org = organization(request)
    _, made = budget_changes.set_budget(request, org, scope, name, body.monthly_limit)
    figures = budgets.find(org.account, scope, name)
    assert figures is not None
    return Status(201 if made else 200, budget_out(figures))


@router.delete("budgets/{scope}/{path:name}", response={204: None, **FAILURES}, auth=BUDGETS)
def delete_budget(request: HttpRequest, scope: str = SCOPE, name: str = NAME) -> Status[None]:
    """Remove the budget; jobs it covered are no longer limited by it."""
    if not budget_changes.remove_budget(request, organization(request), scope, name):
        raise NotFound(f"No {scope} budget named {name!r}.")
    return Status(204, None)
