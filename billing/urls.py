from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from billing.api import api
from billing.views import alerts, api_keys, health, home, usage

org_urls = [
    path("usage/", usage.usage_page, name="usage"),
    path("usage/export.csv", usage.usage_export, name="usage_export"),
    path("usage/days/<str:day>/", usage.usage_day, name="usage_day"),
    path("alerts/", alerts.alerts, name="alerts"),
    path("alerts/<int:alert_id>/delete/", alerts.delete_alert, name="delete_alert"),
    path("", home.organization, name="organization"),
    path("api-keys/", api_keys.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", api_keys.revoke_api_key, name="revoke_api_key"),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orgs/<slug:slug>/", include(org_urls)),
    path("api/v1/", api.urls),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
