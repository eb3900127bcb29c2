from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.models import Organization
from ledger.admin import AccountAdmin
from ledger.models import Account
from team import audit
from team.models import Action, AuditRecord, Invitation


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["email", "organization", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    readonly_fields = ["hashed_token"]


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: the database refuses changes anyway."""

    list_display = ["created_at", "organization", "actor_kind", "actor", "action", "target", "ip_address"]
    list_filter = ["action", "actor_kind"]
    search_fields = ["organization__slug", "actor", "target"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditedAccountAdmin(AccountAdmin):
    """The ledger's account admin, whose staff adjustments are also written to the
    organization's audit log (the ledger itself knows nothing of organizations)."""

    def save_model(self, request: HttpRequest, obj: Account, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        org = Organization.objects.filter(account=obj).first()
        if form.receipt is not None and org is not None:
            amount = form.cleaned_data["adjust_by"]
            audit.record(
                request,
                org,
                Action.CREDITS_ADJUSTED,
                target=f"{amount:+,d} credits",
                detail=f"{form.cleaned_data['adjust_memo']} Balance after: {form.receipt.balance:,}.",
            )


admin.site.unregister(Account)
admin.site.register(Account, AuditedAccountAdmin)
