from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from billing.views import alerts, home, usage

org_urls = [
    path("usage/", usage.usage_page, name="usage"),
    path("usage/export.csv", usage.usage_export, name="usage_export"),
    path("usage/days/<str:day>/", usage.usage_day, name="usage_day"),
    path("alerts/", alerts.alerts, name="alerts"),
    path("alerts/<int:alert_id>/delete/", alerts.delete_alert, name="delete_alert"),
    path("", home.organization, name="organization"),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orgs/<slug:slug>/", include(org_urls)),
    path("admin/", admin.site.urls),
]
