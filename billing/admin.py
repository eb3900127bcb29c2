from django.contrib import admin

from billing.models import (
    AlertThreshold,
    ApiKey,
    CreditPack,
    Invoice,
    InvoiceLine,
    Membership,
    Organization,
    Plan,
    Purchase,
    Subscription,
)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "monthly_credits",
        "monthly_fee_cents",
        "rollover_months",
        "storage_limit_gb",
        "deployments_limit",
        "seats_limit",
        "audit_window_days",
    ]


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class SubscriptionInline(admin.StackedInline):  # type: ignore[type-arg]
    model = Subscription


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "slug", "time_zone"]
    search_fields = ["name", "slug"]
    exclude = ["account"]
    inlines = [SubscriptionInline, MembershipInline]


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "credits", "price_cents", "currency", "active"]


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["organization", "pack", "status", "provider", "provider_payment_id", "created_at"]
    list_filter = ["status", "provider"]
    readonly_fields = [f.name for f in Purchase._meta.fields]


class InvoiceLineInline(admin.TabularInline):  # type: ignore[type-arg]
    model = InvoiceLine
    extra = 0


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["number", "organization", "period", "total_cents", "status"]
    inlines = [InvoiceLineInline]


admin.site.register(AlertThreshold)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "organization", "prefix", "scopes", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "hashed_key", "created_at", "last_used_at"]
