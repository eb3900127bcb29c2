"""Budgets: a monthly limit on the credits charged to a project, a user or an API key.

The posting functions enforce them (``ledger.over_budget`` in the same locked posting that
checks the balance) and keep their figures (``ledger.count_budgets``): what each month
used, net of refunds, and what pending holds keep. This module sets and removes budgets
and reads those figures; it never moves credits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.db import transaction
from django.utils import timezone

from ledger.models import Account, Budget, BudgetMonth, BudgetScope

ALERT_LEVELS = (50, 80, 100)
MAX_LIMIT = 2**62 - 1  # so that used + held + a charge never overflows a bigint


class InvalidBudget(ValueError):
    """A budget the rules refuse: an unknown scope, an empty name or a negative limit."""


@dataclasses.dataclass(frozen=True)
class BudgetFigures:
    """A budget in a month: its limit, what the month used, what holds keep, what is left."""

    budget: Budget
    month: dt.date
    used: int
    held: int

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def name(self) -> str:
        return self.budget.name

    @property
    def monthly_limit(self) -> int:
        return self.budget.monthly_limit

    @property
    def remaining(self) -> int:
        return max(self.monthly_limit - self.used - self.held, 0)

    @property
    def percent(self) -> int:
        """How much of the limit used and held credits take, in whole percent (a limit of
        0 is full)."""
        if self.monthly_limit <= 0:
            return 100
        return (self.used + self.held) * 100 // self.monthly_limit

    @property
    def bar_percent(self) -> int:
        """``percent`` for a bar: at most 100 (a limit lowered below what was used)."""
        return min(self.percent, 100)

    @property
    def level(self) -> int:
        """The highest alert level reached (0, 50, 80 or 100)."""
        return max((level for level in ALERT_LEVELS if self.percent >= level), default=0)

    def as_dict(self) -> dict[str, str | int]:
        return {
            "scope": self.scope,
            "name": self.name,
            "monthly_limit": self.monthly_limit,
            "used": self.used,
            "held": self.held,
            "remaining": self.remaining,
        }


def month_of(account: Account, moment: dt.datetime) -> dt.date:
    """The account's month a posting at ``moment`` counts in (``ledger.month_of``)."""
    day = account.local_date(moment)
    if account.open_from is not None:
        day = max(day, account.open_from)
    return day.replace(day=1)


def set_budget(account: Account, scope: str, name: str, monthly_limit: int) -> tuple[Budget, bool]:
    """Make or change the budget of ``scope`` and ``name``; whether it was made. A limit
    below what the month already used refuses further charges, it takes nothing back."""
    if scope not in BudgetScope.values:
        raise InvalidBudget(f"A budget's scope is one of {', '.join(BudgetScope.values)}.")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidBudget("A budget's name is 1 to 200 characters.")
    if type(monthly_limit) is not int or not 0 <= monthly_limit <= MAX_LIMIT:
        raise InvalidBudget("A monthly limit is a whole number of credits, 0 or more.")
    with transaction.atomic():
        # Under the account's lock, like a posting: a budget appears between postings.
        locked = Account.objects.select_for_update(no_key=True).get(pk=account.pk)
        budget, made = Budget.objects.update_or_create(
            account=locked, scope=scope, name=name, defaults={"monthly_limit": monthly_limit}
        )
        if not locked.budgeted:
            Account.objects.filter(pk=locked.pk).update(budgeted=True)
    account.budgeted = True
    return budget, made


def remove_budget(account: Account, scope: str, name: str) -> bool:
    """Remove the budget; whether there was one. Its history goes with it."""
    with transaction.atomic():
        locked = Account.objects.select_for_update(no_key=True).get(pk=account.pk)
        removed, _ = Budget.objects.filter(account=locked, scope=scope, name=name).delete()
        budgeted = Budget.objects.filter(account=locked).exists()
        Account.objects.filter(pk=locked.pk).update(budgeted=budgeted)
    account.budgeted = budgeted
    return bool(removed)


def budgets(account: Account, now: dt.datetime | None = None) -> list[BudgetFigures]:
    """The account's budgets with this month's figures, by scope and name."""
    month = month_of(account, now or timezone.now())
    used = dict(
        BudgetMonth.objects.filter(budget__account=account, month=month).values_list("budget_id", "used")
    )
    return [
        BudgetFigures(budget, month, used.get(budget.pk, 0), budget.held)
        for budget in Budget.objects.filter(account=account)
    ]


def find(account: Account, scope: str, name: str, now: dt.datetime | None = None) -> BudgetFigures | None:
    return next((b for b in budgets(account, now) if b.scope == scope and b.name == name), None)


def history(budget: Budget) -> list[BudgetMonth]:
    """What each month used, newest first."""
    return list(budget.months.all())
