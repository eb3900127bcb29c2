"""Emails to an organization's managers about its payments: each invoice charge and each
auto top-up, whatever its outcome. Each is a subject / text / HTML triple in
``templates/emails/<name>*``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from billing.alerts import manager_emails
from billing.models import Organization


def send(org: Organization, name: str, **extra: Any) -> bool:
    """Email ``org``'s managers the ``name`` triple; False when it has no manager's address."""
    recipients = manager_emails(org)
    if not recipients:
        return False
    site = settings.SITE_URL.rstrip("/")
    context = {"org": org, "site": site, "billing_url": site + reverse("billing", args=[org.slug]), **extra}
    message = EmailMultiAlternatives(
        subject=render_to_string(f"emails/{name}_subject.txt", context).strip(),
        body=render_to_string(f"emails/{name}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string(f"emails/{name}.html", context), "text/html")
    message.send()
    return True
