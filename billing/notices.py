"""What the ledger tells Tally, acted on: budget alerts (and, through the handlers other
modules register, outgoing webhooks).

The posting functions write a ``ledger.Notice`` in the posting's own transaction (an
outbox): a budget that crossed 50, 80 or 100% of its limit, and, on a watched account,
each posting and each expired hold. So a rolled-back posting leaves none and a committed
one never loses its. Once a posting commits, ``credits_changed`` enqueues
``billing.process_notices`` for its account; the scheduler also sweeps up any whose task
was lost. ``process`` takes an account's notices in order, hands each to the handlers of
its kind and deletes it, in one transaction: a handler that fails leaves the notice for
the next run.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.dispatch import receiver
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from billing.alerts import manager_emails
from billing.models import Organization
from ledger import budgets
from ledger.models import Account, Budget, Notice
from ledger.signals import credits_changed

Handler = Callable[[Organization, Notice], None]
_HANDLERS: dict[str, list[Handler]] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    """Register a handler for notices of ``kind`` ('budget', 'posting', 'hold.expired')."""

    def register(handler: Handler) -> Handler:
        _HANDLERS.setdefault(kind, []).append(handler)
        return handler

    return register


def process(account_id: int) -> int:
    """Act on the account's notices, oldest first, and delete them; how many there were."""
    with transaction.atomic():
        notices = list(Notice.objects.select_for_update().filter(account_id=account_id).order_by("id"))
        if not notices:
            return 0
        org = Organization.objects.select_related("account").get(account_id=account_id)
        for notice in notices:
            for handler in _HANDLERS.get(notice.kind, []):
                handler(org, notice)
        Notice.objects.filter(pk__in=[notice.pk for notice in notices]).delete()
    return len(notices)


def accounts_waiting(older_than: dt.timedelta, now: dt.datetime | None = None) -> list[int]:
    """Accounts with a notice older than ``older_than``: their task was lost, or failed."""
    moment = (now or timezone.now()) - older_than
    return list(Notice.objects.filter(created_at__lte=moment).values_list("account_id", flat=True).distinct())


@receiver(credits_changed, dispatch_uid="billing.notices.credits_changed")
def _credits_changed(sender: Any, account: Account, **kwargs: Any) -> None:
    transaction.on_commit(functools.partial(_enqueue, account.pk))


def _enqueue(account_id: int) -> None:
    from billing.tasks import process_notices

    if Notice.objects.filter(account_id=account_id).exists():
        process_notices.delay(account_id)


# --- Budget alerts ----------------------------------------------------------------------


@handles("budget")
def alert_budget(org: Organization, notice: Notice) -> None:
    """Email the managers once per level a budget reaches in a month (50, 80, 100%)."""
    budget = Budget.objects.select_for_update().filter(pk=notice.detail["budget"]).first()
    if budget is None:  # removed since
        return
    figures = budgets.find(org.account, budget.scope, budget.name)
    month = dt.date.fromisoformat(notice.detail["month"])
    if figures is None or figures.month != month:
        return  # the month is over: its alert no longer helps
    already = budget.alerted_level if budget.alerted_month == month else 0
    if figures.level <= already:
        return
    Budget.objects.filter(pk=budget.pk).update(alerted_month=month, alerted_level=figures.level)
    send_budget_alert(org, figures)


def send_budget_alert(org: Organization, figures: budgets.BudgetFigures) -> bool:
    recipients = manager_emails(org)
    if not recipients:
        return False
    site = settings.SITE_URL.rstrip("/")
    context = {
        "org": org,
        "budget": figures,
        "level": figures.level,
        "budgets_url": site + reverse("budgets", args=[org.slug]),
    }
    message = EmailMultiAlternatives(
        subject=render_to_string("emails/budget_alert_subject.txt", context).strip(),
        body=render_to_string("emails/budget_alert.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("emails/budget_alert.html", context), "text/html")
    message.send()
    return True
