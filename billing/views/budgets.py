"""Budgets: managers set a monthly limit per project, member or API key, and watch what
each has used, what holds keep and what is left. The ledger enforces them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from billing import budget_changes
from billing.access import get_managed_organization, get_manager_membership
from billing.models import Membership, Organization
from ledger import budgets
from ledger.models import Budget, BudgetMonth, BudgetScope, Job

HISTORY_MONTHS = 6


class BudgetForm(forms.Form):
    scope = forms.ChoiceField(choices=BudgetScope.choices, label="For")
    name = forms.CharField(
        max_length=200,
        label="Name",
        help_text="The project or member as jobs name them, or the API key's name.",
    )
    monthly_limit = forms.IntegerField(
        min_value=0, max_value=budgets.MAX_LIMIT, label="Monthly limit (credits)"
    )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Name the project, member or API key.")
        return name


def _page(request: HttpRequest, membership: Membership, form: BudgetForm, status: int = 200) -> HttpResponse:
    org = membership.organization
    account = org.account
    figures = budgets.budgets(account)
    history: dict[int, list[BudgetMonth]] = {}
    this_month = budgets.month_of(account, timezone.now())
    for month in BudgetMonth.objects.filter(budget__account=account, month__lt=this_month).order_by("-month"):
        if len(history.setdefault(month.budget_id, [])) < HISTORY_MONTHS:
            history[month.budget_id].append(month)
    jobs = Job.objects.filter(account=account)
    suggestions = {
        BudgetScope.PROJECT: sorted(set(jobs.exclude(project="").values_list("project", flat=True)[:500])),
        BudgetScope.USER: sorted(set(jobs.exclude(user="").values_list("user", flat=True)[:500])),
        BudgetScope.API_KEY: sorted(set(org.api_keys.active().values_list("name", flat=True))),
    }
    return render(
        request,
        "billing/budgets.html",
        {
            "org": org,
            "membership": membership,
            "form": form,
            "budgets": [(b, history.get(b.budget.pk, []), _report_url(org, b)) for b in figures],
            "suggestions": sorted({name for names in suggestions.values() for name in names}),
            "month": this_month,
        },
        status=status,
    )


def _report_url(org: Organization, budget: budgets.BudgetFigures) -> str | None:
    """The usage report of what a project's or a user's budget covers this month (the
    ledger does not record which key posted a charge, so a key's budget has none)."""
    other = {BudgetScope.PROJECT: "user", BudgetScope.USER: "project"}.get(BudgetScope(budget.scope))
    if other is None:
        return None
    query = {"from": budget.month.isoformat(), "group": other, budget.scope: budget.name}
    return reverse("usage_report", args=[org.slug]) + "?" + urlencode(query)


@login_required
@require_http_methods(["GET", "POST"])
def budgets_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The organization's budgets; a POST sets one (a new one, or a new limit)."""
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    if request.method != "POST":
        return _page(request, membership, BudgetForm())
    form = BudgetForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, form, status=422)
    data = form.cleaned_data
    budget, made = budget_changes.set_budget(request, org, data["scope"], data["name"], data["monthly_limit"])
    scope = budget.get_scope_display().lower()
    what = f"{scope} budget “{budget.name}”: {budget.monthly_limit:,} credits a month"
    messages.success(request, f"{'Added' if made else 'Changed'} the {what}.")
    return redirect("budgets", slug=org.slug)


@login_required
@require_POST
def delete_budget(request: HttpRequest, slug: str, budget_id: int) -> HttpResponse:
    org = get_managed_organization(request.user, slug)
    budget = get_object_or_404(Budget, account=org.account, pk=budget_id)
    budget_changes.remove_budget(request, org, budget.scope, budget.name)
    messages.success(request, f"Removed the {budget.get_scope_display().lower()} budget “{budget.name}”.")
    return redirect("budgets", slug=org.slug)
