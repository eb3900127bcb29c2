"""Low-credit alerts: thresholds managers set, crossed downward or restored.

Each threshold keeps whether available credits are below it. A posting that may change
that state enqueues ``billing.tasks.send_credit_alerts`` on commit (a rolled-back debit
enqueues nothing). The task locks the account, compares the state with the credits
available *now* and emails the managers once per crossing: "low credits" when they fall
below (again at most once a period while they stay below), "credits restored" when a
top-up lifts them back above. Because the task looks at the committed state, a month
close that expires credits and renews them in one transaction sends nothing. A threshold
is also evaluated as it is set, so one that credits are already below says so at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from billing import watch
from billing.models import AlertKind, AlertThreshold, Organization, Role
from ledger.models import Account
from ledger.periods import current_period
from ledger.signals import credits_changed


class Notice(enum.StrEnum):
    LOW = "low_credits"
    RESTORED = "credits_restored"


@dataclasses.dataclass(frozen=True)
class Alert:
    notice: Notice
    threshold: AlertThreshold
    level: int
    available: int


def threshold_level(threshold: AlertThreshold, monthly_credits: int | None) -> int | None:
    """The number of credits a threshold stands for; None when it has no meaning (a
    percentage of an unlimited plan)."""
    if threshold.kind == AlertKind.ABSOLUTE:
        return threshold.value
    if not monthly_credits:
        return None
    return monthly_credits * threshold.value // 100


def _monthly_credits(org: Organization) -> int | None:
    subscription = org.plan_subscription
    return subscription.monthly_credits if subscription is not None else None


@watch.needs_postings
def _has_thresholds(organization_id: int) -> bool:
    return AlertThreshold.objects.filter(organization_id=organization_id).exists()


@receiver([post_save, post_delete], sender=AlertThreshold, dispatch_uid="billing.alerts.notify")
def _notify_while_thresholds(sender: Any, instance: AlertThreshold, **kwargs: Any) -> None:
    """The ledger sends credits_changed only for accounts whose ``notify`` flag is set, so
    it is kept on while the organization has a threshold (or another listener needs it)."""
    watch.update_notify(instance.organization_id)


# What ``evaluate`` itself saves: a threshold's state, not what it is set to.
_STATE_FIELDS = frozenset({"below", "last_alerted_at", "last_alert_period"})


@receiver(post_save, sender=AlertThreshold, dispatch_uid="billing.alerts.evaluate_when_set")
def _evaluate_when_set(
    sender: Any, instance: AlertThreshold, update_fields: Any = None, **kwargs: Any
) -> None:
    """A threshold is evaluated when it is set, not at the next posting: one added while
    credits are already below it says so and emails the managers at once. In this process
    (the send_credit_alerts task's work, not enqueued), so the page it returns to is current;
    once the save commits, so a rolled-back one sends nothing."""
    if update_fields is not None and frozenset(update_fields) <= _STATE_FIELDS:
        return
    account_id = (
        Organization.objects.filter(pk=instance.organization_id).values_list("account_id", flat=True).first()
    )
    if account_id is not None:
        transaction.on_commit(functools.partial(_evaluate_now, account_id))


def _evaluate_now(account_id: int) -> None:
    from billing.tasks import send_credit_alerts

    send_credit_alerts(account_id)


@receiver(credits_changed, dispatch_uid="billing.alerts.credits_changed")
def _credits_changed(sender: Any, account: Account, **kwargs: Any) -> None:
    """Enqueue an evaluation if a threshold's state may have changed. The ledger sends
    the signal once the posting commits (a rolled-back posting sends none), and
    ``on_commit`` defers the task until any transaction around this one commits too."""
    if account.unlimited:
        return
    period = current_period(timezone.now(), account.tzinfo)
    for threshold in AlertThreshold.objects.filter(organization__account_id=account.pk).select_related(
        "organization__subscription__plan"
    ):
        level = threshold_level(threshold, _monthly_credits(threshold.organization))
        if level is not None and _notice_due(threshold, level, account.available, period):
            transaction.on_commit(functools.partial(_enqueue, account.pk))
            return


def _notice_due(threshold: AlertThreshold, level: int, available: int, period: dt.date) -> Notice | None:
    """The email a threshold calls for with ``available`` credits: low once per crossing
    and period, restored when a top-up lifts it back above."""
    if available < level:
        return Notice.LOW if not threshold.below or threshold.last_alert_period != period else None
    return Notice.RESTORED if threshold.below else None


def _enqueue(account_id: int) -> None:
    from billing.tasks import send_credit_alerts

    send_credit_alerts.delay(account_id)


def evaluate(account_id: int, now: dt.datetime | None = None) -> list[Alert]:
    """Bring every threshold's state up to date with the credits available now and say
    which emails that calls for. One transaction, under the account row lock."""
    now = now or timezone.now()
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account_id)
        org = Organization.objects.select_related("subscription__plan").get(account=account)
        if account.unlimited:
            return []
        period = current_period(now, org.tzinfo)
        monthly = _monthly_credits(org)
        alerts: list[Alert] = []
        for threshold in AlertThreshold.objects.filter(organization=org).order_by("pk"):
            threshold.organization = org  # each alert's email needs it; no query per alert
            level = threshold_level(threshold, monthly)
            if level is None:
                continue
            notice = _notice_due(threshold, level, account.available, period)
            if notice == Notice.LOW:
                threshold.below, threshold.last_alerted_at = True, now
                threshold.last_alert_period = period
            elif notice == Notice.RESTORED:
                threshold.below = False
            else:
                continue
            alerts.append(Alert(notice, threshold, level, account.available))
            threshold.save(update_fields=["below", "last_alerted_at", "last_alert_period"])
    return alerts


def manager_emails(org: Organization) -> list[str]:
    return sorted(
        email
        for email in org.memberships.filter(role=Role.MANAGER).values_list("user__email", flat=True)
        if email
    )


def send_alert(alert: Alert) -> bool:
    """One email to the organization's managers: subject, text and HTML."""
    org = alert.threshold.organization
    recipients = manager_emails(org)
    if not recipients:
        return False
    site = settings.SITE_URL.rstrip("/")
    context = {
        "org": org,
        "threshold": alert.threshold,
        "level": alert.level,
        "available": alert.available,
        "billing_url": site + reverse("billing", args=[org.slug]),
        "alerts_url": site + reverse("alerts", args=[org.slug]),
    }
    name = str(alert.notice)
    subject = render_to_string(f"emails/{name}_subject.txt", context).strip()
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"emails/{name}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string(f"emails/{name}.html", context), "text/html")
    message.send()
    return True
