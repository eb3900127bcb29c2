"""The audit log (managers): who changed money or access, when (in the organization's
time), what and from where; filtered by action, person and dates, and exported as CSV."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django import forms
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from billing import csv_files
from billing.access import get_manager_membership
from billing.models import Organization
from team.models import Action, AuditRecord

PAGE_ROWS = 100
CSV_HEADER = ["time", "actor_kind", "actor", "action", "target", "detail", "ip_address"]


class AuditFilter(forms.Form):
    action = forms.ChoiceField(choices=[("", "Any action"), *Action.choices], required=False)
    actor = forms.CharField(required=False, label="Who", max_length=200)
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    before = forms.IntegerField(required=False, widget=forms.HiddenInput)


def _records(org: Organization, form: AuditFilter) -> QuerySet[AuditRecord]:
    """The records the filter chooses, newest first; days are the organization's."""
    records = AuditRecord.objects.filter(organization=org)
    if not form.is_valid():
        return records.none()
    data = form.cleaned_data
    tz = org.tzinfo
    if data["action"]:
        records = records.filter(action=data["action"])
    if data["actor"]:
        records = records.filter(actor__icontains=data["actor"])
    if data["start"]:
        records = records.filter(created_at__gte=dt.datetime.combine(data["start"], dt.time(), tz))
    if data["end"]:
        end = data["end"] + dt.timedelta(days=1)
        records = records.filter(created_at__lt=dt.datetime.combine(end, dt.time(), tz))
    return records.order_by("-created_at", "-id")


@login_required
@require_GET
def audit_log(request: HttpRequest, slug: str) -> HttpResponse:
    membership = get_manager_membership(request.user, slug)
    org = membership.organization
    form = AuditFilter(request.GET)
    records = _records(org, form)
    if form.is_valid() and form.cleaned_data["before"]:
        records = records.filter(id__lt=form.cleaned_data["before"])
    page = list(records[: PAGE_ROWS + 1])
    query = request.GET.copy()
    query.pop("before", None)
    older = ""
    if len(page) > PAGE_ROWS:
        page = page[:PAGE_ROWS]
        query["before"] = str(page[-1].pk)
        older = "?" + query.urlencode()
        query.pop("before")
    subscription = org.plan_subscription
    return render(
        request,
        "team/audit.html",
        {
            "org": org,
            "membership": membership,
            "form": form,
            "records": page,
            "older_url": older,
            "export_url": reverse("audit_export", args=[org.slug])
            + ("?" + query.urlencode() if query else ""),
            "window_days": subscription.plan.audit_window_days if subscription else None,
        },
    )


@login_required
@require_GET
def audit_export(request: HttpRequest, slug: str) -> StreamingHttpResponse:
    org = get_manager_membership(request.user, slug).organization
    records = _records(org, AuditFilter(request.GET))
    return csv_files.response(CSV_HEADER, _csv_rows(org, records), f"tally-{org.slug}-audit.csv")


def _csv_rows(org: Organization, records: QuerySet[AuditRecord]) -> Iterator[list[str]]:
    for record in records.iterator(chunk_size=1000):
        yield [
            record.created_at.astimezone(org.tzinfo).isoformat(timespec="seconds"),
            record.actor_kind,
            record.actor,
            record.action,
            record.target,
            record.detail,
            record.ip_address or "",
        ]
