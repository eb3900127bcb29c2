"""Demo data: four organizations on the four plans with three months of realistic usage.

Everything is posted through the ledger functions with deterministic idempotency keys,
and an organization that already exists is left alone, so seeding twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing import auto_top_up, invoices, purchases
from billing.closing import close_organization_month
from billing.models import (
    GB,
    BillingProfile,
    CreditPack,
    Invoice,
    Membership,
    Organization,
    PaymentMethodSetup,
    Plan,
    Purchase,
    Role,
    Subscription,
)
from billing.payments import ProviderName, local
from ledger import budgets, postings
from ledger.models import LotSource, Price
from ledger.periods import add_months, current_period, month_start

DEMO_PASSWORD = "demo-password"

PLANS = [
    # slug, name, monthly credits, fee (cents), rollover months, storage GB, deployments,
    # seats, audit-trail days
    ("free", "Free", 500, 0, 1, 5, 1, 3, 30),
    ("standard", "Standard", 10_000, 4_900, 1, 50, 5, 10, 90),
    ("professional", "Professional", 50_000, 19_900, 3, 250, 20, 25, 180),
    ("enterprise", "Enterprise", None, 150_000, 12, 2_000, 100, 200, 365),
]

PACKS = [
    ("standard", "Standard pack", 1_000, 1_500),
    ("professional", "Professional pack", 5_000, 6_000),
    ("enterprise", "Enterprise allocation", None, None),
]

PRICES = [
    # operation, description, unit, credits per unit, minimum, resource class
    ("training_a10g_per_minute", "Training on an A10G GPU", "minute", 10, 0, "a10g"),
    ("training_a100_per_minute", "Training on an A100 GPU", "minute", 60, 0, "a100"),
    ("training_h100_per_minute", "Training on an H100 GPU", "minute", 120, 0, "h100"),
    ("image_generate_imagen_fast", "Image generation, Imagen Fast", "image", 5, 0, "imagen-fast"),
    ("image_edit_gemini_flash", "Image edit, Gemini Flash", "image", 3, 0, "gemini-flash"),
    ("image_inference", "Image inference", "image", 1, 0, "inference"),
    ("sam3_per_minute", "SAM 3 segmentation session", "minute", 1, 3, "sam3"),
]


@dataclass(frozen=True)
class DemoOrg:
    slug: str
    name: str
    plan: str
    time_zone: str
    storage_gb: float
    deployments: int
    jobs_per_day: tuple[int, int]
    minutes: tuple[int, int]
    gpus: tuple[str, ...]
    custom_allocation: int | None = None  # Enterprise terms: credits granted each month
    # The stored test card (local provider): "4242..." is charged, "4000...0002" declined.
    card: str | None = None
    billing_details: tuple[str, str, str] | None = None  # legal name, address, tax id
    auto_top_up: tuple[int, str, int] | None = None  # threshold, pack, monthly limit
    # Budgets set as the current month begins: (scope, name, monthly limit).
    budgets: tuple[tuple[str, str, int], ...] = ()


ORGS = [
    DemoOrg("demo-free", "Demo Free Lab", "free", "UTC", 3.2, 1, (0, 2), (1, 3), ("a10g",)),
    DemoOrg(
        "demo-standard",
        "Demo Standard Studio",
        "standard",
        "America/New_York",
        41.5,
        3,
        (1, 4),
        (2, 8),
        ("a10g", "a10g", "a100"),
        card="4000000000000002",  # always declined: its invoices fail and are retried
    ),
    DemoOrg(
        "demo-pro",
        "Demo Pro Robotics",
        "professional",
        "Europe/Berlin",
        120.0,
        9,
        (2, 6),
        (3, 20),
        ("a10g", "a100", "h100"),
        budgets=(("project", "drone-mapping", 6_000), ("project", "catalog-images", 40_000)),
        card="4242424242424242",
        billing_details=(
            "Demo Pro Robotics GmbH",
            "Invalidenstraße 117\n10115 Berlin\nGermany",
            "DE 298 765 432",
        ),
        auto_top_up=(5_000, "professional", 3),
    ),
    DemoOrg(
        "demo-enterprise",
        "Demo Enterprise Vision",
        "enterprise",
        "Asia/Tokyo",
        860.0,
        42,
        (3, 8),
        (5, 40),
        ("a100", "h100"),
        custom_allocation=300_000,
    ),
]

PROJECTS = ["shelf-detector", "defect-segmentation", "catalog-images", "support-assistant", "drone-mapping"]
USERS = ["ada", "grace", "linus", "margaret", "tim", "barbara"]


def seed(log: Callable[[str], None] = print, now: dt.datetime | None = None) -> None:
    now = now or timezone.now()
    seed_catalog()
    for demo in ORGS:
        if Organization.objects.filter(slug=demo.slug).exists():
            log(f"{demo.slug}: already seeded, left as it is")
            continue
        with transaction.atomic():
            org = create_org(demo)
            set_up_payments(org, demo)
            entries = post_history(org, demo, now)
            if demo.auto_top_up is not None:
                threshold, pack, limit = demo.auto_top_up
                auto_top_up.configure(
                    org,
                    enabled=True,
                    threshold=threshold,
                    pack=CreditPack.objects.get(slug=pack),
                    monthly_limit=limit,
                    by=f"{demo.slug}-{Role.MANAGER}",
                )
        log(f"{demo.slug}: {entries} postings over three months")
    ensure_staff()


def seed_catalog() -> None:
    for order, (slug, name, credits, fee, rollover, storage, deploys, seats, audit) in enumerate(PLANS):
        Plan.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "monthly_credits": credits,
                "monthly_fee_cents": fee,
                "rollover_months": rollover,
                "storage_limit_gb": storage,
                "deployments_limit": deploys,
                "seats_limit": seats,
                "audit_window_days": audit,
                "sort_order": order,
            },
        )
    for order, (slug, name, credits, price) in enumerate(PACKS):
        CreditPack.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "credits": credits,
                "price_cents": price,
                "sort_order": order,
            },
        )
    for operation, description, unit, per_unit, minimum, resource in PRICES:
        Price.objects.get_or_create(
            operation=operation,
            defaults={
                "description": description,
                "unit": unit,
                "credits_per_unit": per_unit,
                "minimum_credits": minimum,
                "resource_class": resource,
            },
        )


def create_org(demo: DemoOrg) -> Organization:
    org = Organization.objects.create(
        name=demo.name,
        slug=demo.slug,
        time_zone=demo.time_zone,
        storage_bytes=int(demo.storage_gb * GB),
        deployments=demo.deployments,
    )
    Subscription.objects.create(
        organization=org,
        plan=Plan.objects.get(slug=demo.plan),
        monthly_credits_override=demo.custom_allocation,
    )
    User = get_user_model()
    for role in (Role.MANAGER, Role.MEMBER):
        user, created = User.objects.get_or_create(
            username=f"{demo.slug}-{role}", defaults={"email": f"{demo.slug}-{role}@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        Membership.objects.create(organization=org, user=user, role=role)
    return org


def set_up_payments(org: Organization, demo: DemoOrg) -> None:
    """Billing details and the stored test card, before any month closes."""
    if demo.billing_details is not None:
        legal_name, address, tax_id = demo.billing_details
        BillingProfile.objects.create(organization=org, legal_name=legal_name, address=address, tax_id=tax_id)
    if demo.card is not None:
        manager = get_user_model().objects.get(username=f"{demo.slug}-{Role.MANAGER}")
        setup = PaymentMethodSetup.objects.create(
            organization=org,
            provider=ProviderName.LOCAL,
            session_id=f"local_seti_demo_{org.slug}",
            started_by=manager,
        )
        local.add_card(setup, demo.card)


def collect_due(org: Organization, moment: dt.datetime) -> None:
    """Charge the organization's invoices due by ``moment``, as the scheduler would."""
    for invoice_id in Invoice.objects.filter(organization=org, next_attempt_at__lte=moment).values_list(
        "pk", flat=True
    ):
        invoices.collect(invoice_id, moment)


def post_history(org: Organization, demo: DemoOrg, now: dt.datetime) -> int:
    """Three months up to ``now``: renewals, jobs, refunds, packs, a promotion, an
    adjustment, the two past months closed, and a job still running on a hold."""
    rng = random.Random(demo.slug)
    account, tz, sub = org.account, org.tzinfo, org.subscription
    first = add_months(current_period(now, tz), -2)
    postings_made = 0
    job_number = 0
    day = month_start(first, tz)
    while day < now:
        if day.day == 1:
            if day.date() > first:
                # The month close runs at local midnight on the 1st, as the scheduler would:
                # it expires what is due, freezes the statement, invoices and renews.
                close_organization_month(org, add_months(day.date(), -1), now=day)
                account.refresh_from_db()
            sub.renew(day.date(), now=day)  # the close already renewed: a keyed no-op then
            postings_made += 1
            if day.date() == current_period(now, tz):
                for scope, name, limit in demo.budgets:
                    budgets.set_budget(account, scope, name, limit)
        collect_due(org, min(day + dt.timedelta(hours=1), now))  # the month's invoice, its retries
        if day.date() == first + dt.timedelta(days=9):
            postings.post_top_up(
                account,
                2_000,
                key="demo:promotional",
                source=LotSource.PROMOTIONAL,
                operation="promotional_grant",
                expires_at=day + dt.timedelta(days=30),
                memo="Welcome offer",
                now=day + dt.timedelta(hours=6),
            )
            postings_made += 1
        if day.date() == add_months(first, 1) + dt.timedelta(days=13):
            postings.adjust(
                account,
                250,
                key="demo:adjustment",
                memo="Goodwill credit for the 14th outage",
                now=day + dt.timedelta(hours=6, minutes=30),
            )
            postings_made += 1
        # Jobs start on distinct hours from 07:00, so each day's postings stay in order.
        for hour in sorted(rng.sample(range(7, 22), rng.randint(*demo.jobs_per_day))):
            moment = day + dt.timedelta(hours=hour, minutes=rng.randint(0, 15))
            if moment >= now:
                continue
            job_number += 1
            postings_made += post_job(org, rng, demo, job_number, moment)
        day += dt.timedelta(days=1)  # wall-clock arithmetic: the next local midnight
    account.refresh_from_db()
    postings_made += plant_findings(org, now)
    hold = 600 if account.unlimited else min(600, postings.credits_now(account, now).available // 2)
    if hold <= 0:
        return postings_made
    postings.reserve(
        account,
        hold,
        key="demo:running-hold",
        operation="training_a100_per_minute",
        job=postings.JobInfo("demo-running-1", "nightly-finetune", PROJECTS[0], USERS[0], "a100"),
        now=now,
    )
    return postings_made + 1


def plant_findings(org: Organization, now: dt.datetime) -> int:
    """Two things the review should find, posted after the rest of the history: a hold the
    job runner never settled (it expired) and a run settled at twice its estimate."""
    account = org.account
    if not account.unlimited and postings.credits_now(account, now).available < 1_000:
        return 0  # the Free demo has too few credits left to run these
    job = postings.JobInfo("demo-stuck-1", "eval-sweep", PROJECTS[1], USERS[1], "a100")
    postings.reserve(
        account,
        120,
        key="demo:stuck-hold",
        operation="training_a100_per_minute",
        job=job,
        ttl=dt.timedelta(minutes=1),
        now=now - dt.timedelta(minutes=4),
    )
    postings.release_expired_holds(now=now - dt.timedelta(minutes=2))
    job = postings.JobInfo("demo-long-run-1", "long-finetune", PROJECTS[0], USERS[2], "a100")
    hold = postings.reserve(
        account,
        300,
        key="demo:long-run",
        operation="training_a100_per_minute",
        job=job,
        now=now - dt.timedelta(seconds=90),
    )
    if hold.hold_id is not None:
        postings.settle(
            account, hold.hold_id, 600, key="demo:long-run-settle", now=now - dt.timedelta(minutes=1)
        )
    return 4


def post_job(org: Organization, rng: random.Random, demo: DemoOrg, number: int, moment: dt.datetime) -> int:
    account = org.account
    project, user = rng.choice(PROJECTS), rng.choice(USERS)
    if rng.random() < 0.65:
        gpu = rng.choice(demo.gpus)
        operation, quantity = f"training_{gpu}_per_minute", rng.randint(*demo.minutes)
        name, resource = f"{project}-train-{number:04d}", gpu
    else:
        operation = rng.choice(
            ["image_generate_imagen_fast", "image_edit_gemini_flash", "image_inference", "sam3_per_minute"]
        )
        quantity = rng.randint(5, 120)
        resource = next(row[5] for row in PRICES if row[0] == operation)
        name = f"{project}-{operation.split('_')[0]}-{number:04d}"
        gpu = ""
    amount = postings.quote(operation, quantity)
    job = postings.JobInfo(
        f"{demo.slug}-job-{number:05d}", name, project, f"{user}@{demo.slug}.example", resource
    )
    key = f"demo:job:{number}"
    made = 0
    try:
        try:
            postings.debit(
                account, amount, key=key, operation=operation, job=job, quantity=quantity, now=moment
            )
        except postings.InsufficientCredits:
            # Out of credits: the demo manager buys a pack, as the product intends.
            pack = CreditPack.objects.get(slug="professional" if demo.plan == "professional" else "standard")
            packs = -(-(amount - account.available) // (pack.credits or 1))
            buy_packs(org, pack, packs, number, moment - dt.timedelta(minutes=5))
            made += 1
            postings.debit(
                account, amount, key=key, operation=operation, job=job, quantity=quantity, now=moment
            )
    except postings.BudgetExceeded:
        return made  # its project's budget is spent: the job runner does not start it
    made += 1
    refund_at = moment + dt.timedelta(minutes=40)
    if gpu and rng.random() < 0.12 and refund_at < timezone.now():
        # A cancelled run gives back the minutes it did not use.
        give_back = amount * rng.randint(2, 6) // 10
        if give_back:
            postings.refund(
                account,
                job.external_id,
                give_back,
                key=f"demo:refund:{number}",
                operation=f"training_refund_{gpu}",
                now=refund_at,
            )
            made += 1
    return made


def buy_packs(org: Organization, pack: CreditPack, packs: int, number: int, moment: dt.datetime) -> None:
    """A paid purchase through the test checkout, fulfilled as the provider reports it, so
    the billing history and the month's invoice show it."""
    purchase = Purchase.objects.create(
        organization=org,
        pack=pack,
        buyer=get_user_model().objects.filter(username=f"{org.slug}-{Role.MANAGER}").first(),
        credits=packs * (pack.credits or 0),
        price_cents=packs * (pack.price_cents or 0),
        currency=pack.currency,
        provider=ProviderName.LOCAL,
        provider_session_id=f"local_cs_demo_{number:05d}",
        created_at=moment,
    )
    purchases.fulfil(purchase, payment_id=f"local_pi_demo_{org.slug}_{number:05d}", now=moment)


def ensure_staff() -> None:
    User = get_user_model()
    if not User.objects.filter(username="admin").exists():
        User.objects.create_superuser("admin", "admin@example.com", DEMO_PASSWORD)


def logins() -> list[tuple[str, str]]:
    rows = [
        (f"{demo.slug}-{role}", f"{role} of {demo.name} ({demo.plan})")
        for demo in ORGS
        for role in (Role.MANAGER, Role.MEMBER)
    ]
    return [*rows, ("admin", "staff: Django admin at /admin/")]
