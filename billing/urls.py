from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from django.urls.converters import StringConverter

from billing import api
from billing.views import (
    alerts,
    api_keys,
    billing,
    budgets,
    health,
    home,
    payments,
    pricing,
    reports,
    review,
    transactions,
    usage,
    webhooks,
)
from team import urls as team_urls
from webhooks import urls as webhook_urls


class NameConverter(StringConverter):
    """A path segment naming a checkout or an invoice: no NUL byte (``%00``), which
    PostgreSQL text cannot hold, so such a URL is simply not found."""

    regex = "[^/\x00]+"


register_converter(NameConverter, "name")

org_urls = [
    path("", home.organization, name="organization"),
    path("billing/", billing.billing, name="billing"),
    path("billing/packs/<slug:pack>/buy/", billing.buy_pack, name="buy_pack"),
    path(
        "billing/purchases/<int:purchase_id>/complete/", billing.purchase_complete, name="purchase_complete"
    ),
    path(
        "billing/purchases/<int:purchase_id>/cancelled/",
        billing.purchase_cancelled,
        name="purchase_cancelled",
    ),
    path("billing/checkout/<name:session_id>/", billing.checkout, name="checkout"),
    path("billing/checkout/<name:session_id>/pay/", billing.checkout_pay, name="checkout_pay"),
    path("billing/checkout/<name:session_id>/cancel/", billing.checkout_cancel, name="checkout_cancel"),
    path("billing/invoices/<name:number>/", billing.invoice, name="invoice"),
    path("billing/invoices/<name:number>.pdf", payments.invoice_pdf, name="invoice_pdf"),
    path("billing/payment-method/add/", payments.add_payment_method, name="add_payment_method"),
    path("billing/payment-method/remove/", payments.remove_payment_method, name="remove_payment_method"),
    path(
        "billing/payment-method/setups/<int:setup_id>/done/",
        payments.payment_method_added,
        name="payment_method_added",
    ),
    path("billing/card/<name:session_id>/", payments.local_card, name="local_card"),
    path("billing/card/<name:session_id>/save/", payments.local_card_save, name="local_card_save"),
    path("billing/card/<name:session_id>/cancel/", payments.local_card_cancel, name="local_card_cancel"),
    path("billing/auto-top-up/", payments.auto_top_up_settings, name="auto_top_up"),
    path("billing/details/", payments.billing_details, name="billing_details"),
    path("usage/", usage.usage_page, name="usage"),
    path("usage/export.csv", usage.usage_export, name="usage_export"),
    path("pricing/", pricing.pricing, name="pricing"),
    path("usage/report/", reports.usage_report, name="usage_report"),
    path("usage/transactions/", transactions.transactions, name="transactions"),
    path("usage/review/", review.review, name="usage_review"),
    path("usage/report.csv", reports.usage_report_csv, name="usage_report_csv"),
    path("usage/days/<str:day>/", usage.usage_day, name="usage_day"),
    path("api-keys/", api_keys.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", api_keys.revoke_api_key, name="revoke_api_key"),
    path("alerts/", alerts.alerts, name="alerts"),
    path("alerts/<int:alert_id>/delete/", alerts.delete_alert, name="delete_alert"),
    path("budgets/", budgets.budgets_page, name="budgets"),
    path("budgets/<int:budget_id>/delete/", budgets.delete_budget, name="delete_budget"),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orgs/<slug:slug>/", include(org_urls)),
    path("orgs/<slug:slug>/", include(team_urls.org_urls)),
    path("orgs/<slug:slug>/", include(webhook_urls.org_urls)),
    path("", include(team_urls.urlpatterns)),
    path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe_webhook"),
    path("api/v1/", api.urls()),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
