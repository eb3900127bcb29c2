"""Auto top-up: when a posting leaves available credits below the manager's threshold, buy
the chosen pack with the stored payment method.

The trigger is the ledger's notice outbox: while auto top-up is on, the account is
watched, so every posting writes a notice in its own transaction, and ``billing.notices``
hands it to ``_posting`` below, which enqueues ``billing.auto_top_up`` once the notices'
transaction commits. The task (``run``) decides under the settings row's lock: nothing
when auto top-up is off, a top-up is already in flight (a pending auto top-up purchase:
the database allows one per organization), credits are back at the threshold, or the
month's limit is reached; otherwise it opens the purchase, commits, charges the card
(keyed by the purchase, so a retried charge is one payment) and credits the pack through
``purchases.fulfil``, the rule that credits a pack bought by hand. Three declines in a row
turn auto top-up off. Every outcome is emailed to the managers.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing import notices, payment_emails, purchases, watch
from billing.models import (
    AutoTopUp,
    CreditPack,
    Organization,
    PaymentMethod,
    Purchase,
    PurchaseOrigin,
    PurchaseStatus,
)
from billing.payments import ChargeDeclined, PaymentError, get_provider
from billing.templatetags.money import money
from ledger import budgets, postings
from ledger.models import Notice
from ledger.periods import month_bounds
from team import audit
from team.models import Action

MAX_THRESHOLD = 100_000_000
MAX_MONTHLY_LIMIT = 100
# A top-up still pending this long lost its worker mid-charge: the next run resumes it.
STUCK_AFTER = dt.timedelta(minutes=10)


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"
    OFF = "off"
    IN_FLIGHT = "in flight"
    NOT_NEEDED = "not needed"
    LIMIT_REACHED = "monthly limit reached"


class InvalidAutoTopUp(Exception):
    """The settings asked for cannot be saved; nothing changed."""


@watch.needs_postings
def _enabled(organization_id: int) -> bool:
    return AutoTopUp.objects.filter(organization_id=organization_id, enabled=True).exists()


def configure(
    org: Organization,
    *,
    enabled: bool,
    threshold: int,
    pack: CreditPack,
    monthly_limit: int,
    by: audit.Actor,
) -> AutoTopUp:
    """Save the organization's auto top-up. Turning it on needs a stored card and a pack
    for sale; turning it on again forgets past declines. When credits are already below
    the threshold, the first top-up is bought at once."""
    if enabled and not PaymentMethod.objects.filter(organization=org).exists():
        raise InvalidAutoTopUp("Add a payment method first: auto top-up charges it.")
    if org.account.unlimited:
        raise InvalidAutoTopUp(f"{org.name}'s plan is unlimited: it needs no top-ups.")
    if pack.is_custom or not pack.active:
        raise InvalidAutoTopUp(f"{pack.name} cannot be bought online.")
    if not 1 <= threshold <= MAX_THRESHOLD:
        raise InvalidAutoTopUp(f"The threshold is 1 to {MAX_THRESHOLD:,} credits.")
    if not 1 <= monthly_limit <= MAX_MONTHLY_LIMIT:
        raise InvalidAutoTopUp(f"The monthly limit is 1 to {MAX_MONTHLY_LIMIT} top-ups.")
    with transaction.atomic():
        settings = AutoTopUp.objects.select_for_update().filter(organization=org).first()
        was_enabled = settings is not None and settings.enabled
        settings = settings or AutoTopUp(organization=org)
        settings.enabled, settings.threshold, settings.pack = enabled, threshold, pack
        settings.monthly_limit = monthly_limit
        if enabled and not was_enabled:
            settings.declines, settings.disabled_reason = 0, ""
        settings.save()
        audit.record(by, org, Action.AUTO_TOP_UP_CHANGED, target=pack.name, detail=describe(settings))
        watch.update_notify(org.pk)
        if enabled:
            transaction.on_commit(functools.partial(_enqueue, org.pk))
    return settings


def describe(settings: AutoTopUp) -> str:
    if not settings.enabled:
        return "Off."
    pack = settings.pack
    return (
        f"On: buy {pack.name} ({pack.credits or 0:,} credits, {money(pack.price_cents or 0, pack.currency)}) "
        f"when available credits fall below {settings.threshold:,}, at most {settings.monthly_limit} "
        f"time{'s' if settings.monthly_limit != 1 else ''} a month."
    )


@notices.handles("posting")
def _posting(org: Organization, notice: Notice) -> None:
    """A posting left available credits below the threshold: enqueue a top-up. Only the
    last charge among the notices taken together decides (a batch of postings enqueues
    one task), and a top-up itself never calls for another."""
    receipt: dict[str, Any] = notice.detail
    if receipt.get("action") == "top_up" or org.account.unlimited:
        return
    threshold = (
        AutoTopUp.objects.filter(organization=org, enabled=True).values_list("threshold", flat=True).first()
    )
    if threshold is None or receipt["available"] >= threshold:
        return
    later = Notice.objects.filter(account_id=notice.account_id, kind="posting", pk__gt=notice.pk).exclude(
        detail__action="top_up"
    )
    if not later.exists():
        transaction.on_commit(functools.partial(_enqueue, org.pk))


def _enqueue(organization_id: int) -> None:
    from billing.tasks import auto_top_up_task

    auto_top_up_task.delay(organization_id)


def run(organization_id: int, now: dt.datetime | None = None) -> Outcome:
    """Buy the pack if a top-up is called for now (see the module's docstring)."""
    now = now or timezone.now()
    with transaction.atomic():
        settings = (
            AutoTopUp.objects.select_for_update(of=("self",))
            .select_related("pack", "organization__account")
            .filter(organization_id=organization_id)
            .first()
        )
        if settings is None or not settings.enabled:
            return Outcome.OFF
        org = settings.organization
        method = PaymentMethod.objects.get(organization=org)  # configure and remove keep one
        mine = Purchase.objects.filter(organization=org, origin=PurchaseOrigin.AUTO_TOP_UP)
        purchase = mine.filter(status=PurchaseStatus.PENDING).first()
        if purchase is not None:
            if now - purchase.created_at < STUCK_AFTER:
                return Outcome.IN_FLIGHT
            # Its worker died between opening it and recording the charge: charge it again
            # under the same key (the provider answers with the first charge, if there was one).
        elif postings.credits_now(org.account, now).available >= settings.threshold:
            return Outcome.NOT_NEEDED
        else:
            month = budgets.month_of(org.account, now)
            starts_at, ends_at = month_bounds(month, org.tzinfo)
            bought = mine.filter(
                status=PurchaseStatus.PAID, created_at__gte=starts_at, created_at__lt=ends_at
            )
            if bought.count() >= settings.monthly_limit:
                if settings.limit_reached_month != month:  # said once a month
                    settings.limit_reached_month = month
                    settings.save(update_fields=["limit_reached_month", "updated_at"])
                    transaction.on_commit(functools.partial(_limit_reached, settings))
                return Outcome.LIMIT_REACHED
            pack = settings.pack
            purchase = Purchase.objects.create(
                organization=org,
                pack=pack,
                credits=pack.credits or 0,
                price_cents=pack.price_cents or 0,
                currency=pack.currency,
                provider=method.provider,
                origin=PurchaseOrigin.AUTO_TOP_UP,
                created_at=now,
            )
    # The purchase is committed, so it is in flight: the charge runs without the lock.
    return _buy(settings, purchase, method, now)


def _limit_reached(settings: AutoTopUp) -> None:
    payment_emails.send(settings.organization, "auto_top_up_limit", settings=settings)


def _buy(settings: AutoTopUp, purchase: Purchase, method: PaymentMethod, now: dt.datetime) -> Outcome:
    org = settings.organization
    try:
        charge = get_provider(method.provider).charge(
            method,
            amount_cents=purchase.price_cents,
            currency=purchase.currency,
            key=f"tally-auto-top-up-{purchase.pk}",
            description=f"Tally auto top-up: {purchase.pack.name} for {org.name}",
        )
    except PaymentError as exc:
        return _failed(settings, purchase, exc)
    purchase = purchases.fulfil(purchase, payment_id=charge.payment_id, now=now)
    AutoTopUp.objects.filter(pk=settings.pk).update(declines=0)
    available = postings.credits_now(org.account).available
    payment_emails.send(
        org, "auto_top_up_succeeded", purchase=purchase, available=available, settings=settings
    )
    return Outcome.SUCCEEDED


def _failed(settings: AutoTopUp, purchase: Purchase, exc: PaymentError) -> Outcome:
    """The charge failed: the purchase closes unpaid (nothing credited); a decline counts
    towards turning auto top-up off."""
    declined = isinstance(exc, ChargeDeclined)
    with transaction.atomic():
        purchases.close_unpaid(purchase, status=PurchaseStatus.FAILED)
        locked = AutoTopUp.objects.select_for_update().get(pk=settings.pk)
        if declined:
            locked.declines += 1
            if locked.enabled and locked.declines >= AutoTopUp.MAX_DECLINES:
                locked.enabled = False
                locked.disabled_reason = f"The card was declined {locked.declines} times in a row."
                audit.record(
                    "auto top-up",
                    locked.organization,
                    Action.AUTO_TOP_UP_CHANGED,
                    detail=locked.disabled_reason,
                )
            locked.save(update_fields=["declines", "enabled", "disabled_reason", "updated_at"])
    if not locked.enabled:
        watch.update_notify(locked.organization_id)
    payment_emails.send(
        locked.organization, "auto_top_up_failed", purchase=purchase, settings=locked, reason=str(exc)
    )
    return Outcome.DECLINED if declined else Outcome.FAILED
