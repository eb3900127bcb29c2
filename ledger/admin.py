"""Staff views of the ledger. Entries are read-only; a manual adjustment is posted as a
new entry through ``postings.adjust``, never an edit."""

from __future__ import annotations

import uuid
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from ledger import postings
from ledger.models import Account, DailyRollup, Entry, Hold, Job, Lot, Price, Statement


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AccountForm(forms.ModelForm):  # type: ignore[type-arg]
    adjust_by = forms.IntegerField(
        required=False, help_text="Credits to add (positive) or remove (negative), posted as an entry."
    )
    adjust_memo = forms.CharField(required=False, max_length=500, help_text="Why; shown in the ledger.")

    # Who posts the adjustment (AccountAdmin.get_form sets it), and the posting's receipt.
    staff = ""
    receipt: postings.Receipt | None = None

    class Meta:
        model = Account
        fields = ["time_zone", "unlimited"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("adjust_by") and not data.get("adjust_memo"):
            self.add_error("adjust_memo", "Say why the balance is adjusted.")
        return data

    def full_clean(self) -> None:
        """Once the rest of the form is valid, post the adjustment: the ledger alone decides
        whether it can be made, and its refusal (more than the available credits, say) is
        this field's error. The admin saves in one transaction, so the entry commits with
        the account's settings or not at all."""
        super().full_clean()
        amount = getattr(self, "cleaned_data", {}).get("adjust_by")
        if not amount or self.errors:
            return
        try:
            self.receipt = postings.adjust(
                self.instance,
                amount,
                key=f"admin-{uuid.uuid4()}",
                memo=f"{self.cleaned_data['adjust_memo']} (by {self.staff})",
            )
        except postings.LedgerError as refusal:
            self.add_error("adjust_by", str(refusal))


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = AccountForm
    list_display = ["slug", "balance", "held", "unlimited", "time_zone"]
    search_fields = ["slug"]
    readonly_fields = ["slug", "balance", "held"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = cast(type[AccountForm], super().get_form(request, obj, change, **kwargs))
        form.staff = str(request.user)  # a class made for this request
        return form

    def save_model(self, request: HttpRequest, obj: Account, form: Any, change: bool) -> None:
        # The adjustment was posted as the form validated (AccountForm.full_clean).
        if form.receipt is not None:
            amount = form.cleaned_data["adjust_by"]
            messages.success(request, f"Posted an adjustment of {amount:+d}; balance {form.receipt.balance}.")
        # balance and held belong to the postings; only the settings are saved here.
        Account.objects.filter(pk=obj.pk).update(time_zone=obj.time_zone, unlimited=obj.unlimited)


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "created_at", "kind", "operation", "amount", "balance_after", "job"]
    list_filter = ["kind"]
    search_fields = ["account__slug", "operation"]
    list_select_related = ["account", "job"]


@admin.register(Lot)
class LotAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "source", "amount", "remaining", "expires_at", "expired"]
    list_filter = ["source", "expired"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "operation", "amount", "status", "expires_at"]
    list_filter = ["status"]


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["external_id", "account", "name", "project", "user", "resource_class"]
    search_fields = ["external_id", "name", "project", "user"]


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ["account", "date", "top_ups", "credits_used", "refunds", "expired", "balance"]


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    list_display = ["account", "period", "brought_forward", "top_ups", "credits_used", "closing_balance"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["operation", "credits_per_unit", "unit", "minimum_credits", "resource_class"]
