"""The webhooks pages, under an organization (``org_urls``)."""

from django.urls import path

from webhooks import views

org_urls = [
    path("webhooks/", views.endpoints_page, name="webhooks"),
    path("webhooks/<int:endpoint_id>/", views.endpoint_page, name="webhook_endpoint"),
    path("webhooks/<int:endpoint_id>/rotate/", views.rotate_secret, name="webhook_rotate"),
    path("webhooks/<int:endpoint_id>/test/", views.send_test, name="webhook_test"),
    path("webhooks/<int:endpoint_id>/delete/", views.delete_endpoint, name="webhook_delete"),
    path(
        "webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/resend/",
        views.resend,
        name="webhook_resend",
    ),
]
