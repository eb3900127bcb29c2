from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from billing.views import home

org_urls = [
    path("", home.organization, name="organization"),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orgs/<slug:slug>/", include(org_urls)),
    path("admin/", admin.site.urls),
]
