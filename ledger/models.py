"""The credit ledger: accounts, lots, append-only entries, holds, jobs, prices, rollups.

The rules that move credits live in the posting functions (``ledger/sql``, called by
``ledger.postings``); these models only store what those functions wrote. Nothing here imports ``billing``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import ExpressionWrapper, Q


class Account(models.Model):
    """One organization's credit account. ``balance`` and ``held`` are kept by postings."""

    slug = models.SlugField(unique=True, help_text="The owning organization's slug.")
    time_zone = models.CharField(max_length=64, default="UTC", help_text="The zone days and months are in.")
    next_time_zone = models.CharField(
        max_length=64,
        blank=True,
        help_text="A new time zone, in force from the month after the current one closes.",
    )
    open_from = models.DateField(
        null=True,
        blank=True,
        help_text="The first day of the first month without a statement; no entry is dated before it.",
    )
    unlimited = models.BooleanField(
        default=False, help_text="An unlimited account is never refused; it may overdraw."
    )
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    notify = models.BooleanField(
        default=False,
        help_text="Send credits_changed after each posting (set while a listener, such as a "
        "low-credit alert, needs to hear of this account's changes).",
    )
    budgeted = models.BooleanField(
        default=False, help_text="Whether the account has budgets, which postings then check and count."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug

    @property
    def available(self) -> int:
        return max(self.balance - self.held, 0)

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.tzinfo).date()


class LotSource(models.TextChoices):
    SUBSCRIPTION = "subscription"
    PURCHASE = "purchase"
    PROMOTIONAL = "promotional"
    ADJUSTMENT = "adjustment"


class Lot(models.Model):
    """A grant of credits; debits draw from lots soonest-expiry first."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lots")
    source = models.CharField(max_length=16, choices=LotSource.choices)
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    expired = models.BooleanField(default=False)
    entry = models.OneToOneField("Entry", on_delete=models.PROTECT, related_name="lot", null=True, blank=True)
    created_at = models.DateTimeField()
    # Whether a posting may draw on the lot: kept by the database, and it changes only when
    # the lot is used up, revived by a refund or expired.
    live = models.GeneratedField(
        expression=ExpressionWrapper(Q(remaining__gt=0, expired=False), output_field=models.BooleanField()),
        output_field=models.BooleanField(),
        db_persist=True,
    )

    class Meta:
        indexes = [
            # The index holds live lots only, so a posting's read of them never steps over
            # lots used up or expired long ago. Its condition reads ``live``, not
            # ``remaining``: a debit that leaves credits in a lot changes nothing the index
            # reads, so PostgreSQL updates the row in place (a HOT update) without a new
            # entry in every index of the table.
            models.Index(
                fields=["account", "expires_at", "created_at"],
                name="lot_live_idx",
                condition=Q(live=True),
            )
        ]
        constraints = [models.CheckConstraint(condition=Q(remaining__gte=0), name="lot_remaining_gte_0")]

    def __str__(self) -> str:
        return f"{self.source} lot {self.pk} ({self.remaining}/{self.amount})"

    def is_expired_at(self, moment: dt.datetime) -> bool:
        return self.expired or (self.expires_at is not None and self.expires_at <= moment)


class Job(models.Model):
    """A job on the platform that consumed credits (a training run, a batch of images)."""

    # Looked up by (account, external_id), whose unique index serves the account alone too.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    external_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200, blank=True)
    project = models.CharField(max_length=200, blank=True)
    user = models.CharField(max_length=200, blank=True)
    resource_class = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "external_id"], name="job_unique_external_id")
        ]

    def __str__(self) -> str:
        return self.name or self.external_id


class EntryKind(models.TextChoices):
    TOP_UP = "top_up"
    DEBIT = "debit"
    REFUND = "refund"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"

    def figure(self, amount: int, source: str | None) -> tuple[str, int]:
        """The ``Figures`` part an entry of this kind counts in (a top-up's by its lot's
        source), and what it adds there: parts are positive figures. The posting functions
        keep the rollups by this rule; ``check_ledger`` recomputes them by it."""
        match self:
            case EntryKind.TOP_UP:
                return f"top_ups_{source}", amount
            case EntryKind.ADJUSTMENT:
                return ("top_ups_adjustment", amount) if amount > 0 else ("adjustments", -amount)
            case EntryKind.DEBIT:
                return "debits", -amount
            case EntryKind.REFUND:
                return "refunds", amount
            case EntryKind.EXPIRY:
                return "expired", -amount
        raise ValueError(self)


class EntryQuerySet(models.QuerySet["Entry"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("Ledger entries are append-only; post an adjustment instead.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Ledger entries are append-only; post an adjustment instead.")


class Entry(models.Model):
    """One posting. Signed: < 0 consumed credits, > 0 added them. Never edited."""

    # Indexed by the composite indexes below, which all start with the account.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries", db_index=False)
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    operation = models.CharField(max_length=100)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    quantity = models.BigIntegerField(null=True, blank=True)
    # Indexed below only where set: most entries have no hold, and top-ups no job.
    job = models.ForeignKey(
        Job,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="entries",
        db_index=False,
    )
    hold = models.ForeignKey(
        "Hold",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="entries",
        db_index=False,
    )
    refund_of_expired = models.BigIntegerField(
        default=0, help_text="For a refund: the share that came from lots since expired."
    )
    memo = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    local_date = models.DateField(help_text="The day in the account's time zone.")

    objects = EntryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "entries"
        indexes = [
            models.Index(fields=["account", "local_date"], name="entry_account_day_idx"),
            models.Index(fields=["account", "-id"], name="entry_account_recent_idx"),
            models.Index(fields=["job"], name="entry_job_idx", condition=Q(job__isnull=False)),
            models.Index(fields=["hold"], name="entry_hold_idx", condition=Q(hold__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.amount:+d}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise TypeError("Ledger entries are append-only; post an adjustment instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Ledger entries are append-only; post an adjustment instead.")


class LotDraw(models.Model):
    """What one entry took from (< 0) or returned to (> 0) one lot."""

    entry = models.ForeignKey(Entry, on_delete=models.PROTECT, related_name="draws")
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="draws")
    amount = models.BigIntegerField()

    def __str__(self) -> str:
        return f"entry {self.entry_id} {self.amount:+d} on lot {self.lot_id}"


class HoldStatus(models.TextChoices):
    PENDING = "pending"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class Hold(models.Model):
    """Credits reserved for a running job; resolved exactly once."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    operation = models.CharField(max_length=100)
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.PENDING)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, null=True, blank=True, related_name="holds")
    settled_amount = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    api_key = models.CharField(
        max_length=100, blank=True, help_text="The name of the API key that placed it."
    )
    budgets = ArrayField(
        models.BigIntegerField(), default=list, blank=True, help_text="The budgets its credits count against."
    )

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], name="hold_pending_idx", condition=Q(status="pending"))
        ]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_gt_0")]

    def __str__(self) -> str:
        return f"hold {self.pk} {self.amount} ({self.status})"


class Price(models.Model):
    """What one unit of an operation costs, in credits. Staff edit these in the admin."""

    operation = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    unit = models.CharField(max_length=32, default="unit")
    credits_per_unit = models.PositiveIntegerField()
    minimum_credits = models.PositiveIntegerField(default=0)
    resource_class = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["operation"]

    def __str__(self) -> str:
        return f"{self.operation}: {self.credits_per_unit}/{self.unit}"


class Figures(models.Model):
    """What moved a balance over a day or a month, in parts, with one meaning everywhere
    (DESIGN.md): ``top_ups`` are credits added, by their lot's source; ``credits_used`` is
    everything else that left the balance, debits less their refunds plus expired credits
    and negative adjustments. So ``balance = previous + top_ups - credits_used``."""

    top_ups_subscription = models.BigIntegerField(default=0)
    top_ups_purchase = models.BigIntegerField(default=0)
    top_ups_promotional = models.BigIntegerField(default=0)
    top_ups_adjustment = models.BigIntegerField(default=0, help_text="Positive adjustments.")
    debits = models.BigIntegerField(default=0)
    refunds = models.BigIntegerField(default=0)
    expired = models.BigIntegerField(default=0)
    adjustments = models.BigIntegerField(default=0, help_text="Negative adjustments, as a positive figure.")

    PARTS = (
        "top_ups_subscription",
        "top_ups_purchase",
        "top_ups_promotional",
        "top_ups_adjustment",
        "debits",
        "refunds",
        "expired",
        "adjustments",
    )

    class Meta:
        abstract = True

    @property
    def top_ups(self) -> int:
        return (
            self.top_ups_subscription
            + self.top_ups_purchase
            + self.top_ups_promotional
            + self.top_ups_adjustment
        )

    @property
    def credits_used(self) -> int:
        return self.debits - self.refunds + self.expired + self.adjustments

    def parts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.PARTS}


class DailyRollup(Figures):
    """Per account and local day, kept by the posting functions in the same transaction as
    each entry; ``balance`` is the balance at the end of the day."""

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="daily_rollups", db_index=False
    )  # the unique (account, date) index serves
    date = models.DateField()
    balance = models.BigIntegerField(help_text="Balance at the end of the day.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "date"], name="rollup_unique_account_day")]
        ordering = ["-date"]

    def __str__(self) -> str:
        return f"{self.account_id} {self.date}"


class GroupDay(models.Model):
    """Credits used by jobs on one local day, per project, user, resource class and
    operation: what debits took and refunds gave back. Kept by the posting functions in the
    same transaction as each debit and refund (``ledger.add_to_groups``), so a report by any
    of these costs days x groups, never a scan of entries. Its debits and refunds on a day
    are the day's rollup's (``check_ledger`` says so). Blank: the job did not say, or the
    debit had no job."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="group_days", db_index=False)
    date = models.DateField()
    project = models.CharField(max_length=200)
    user = models.CharField(max_length=200)
    resource_class = models.CharField(max_length=64)
    operation = models.CharField(max_length=100)
    debits = models.BigIntegerField(default=0)
    refunds = models.BigIntegerField(default=0)

    GROUPS = ("project", "user", "resource_class", "operation")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "date", "project", "user", "resource_class", "operation"],
                name="group_day_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.project}/{self.user}/{self.resource_class}/{self.operation}"

    @property
    def credits_used(self) -> int:
        return self.debits - self.refunds


class GroupMonth(models.Model):
    """A closed month's credits used by one value of one dimension (a project, a user, a
    resource class, an operation): its days' ``GroupDay`` rows added up when the month
    closes (``ledger.statements``), so a report over a year reads twelve rows per group."""

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="group_months", db_index=False
    )
    month = models.DateField()
    dimension = models.CharField(max_length=16)  # one of GroupDay.GROUPS
    name = models.CharField(max_length=200)
    debits = models.BigIntegerField(default=0)
    refunds = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "dimension", "month", "name"], name="group_month_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.dimension} {self.name}"


class KeySpace(models.TextChoices):
    """Where an idempotency key comes from. Clients' keys (the API's Idempotency-Key) and
    Tally's own (renewals, purchases, the close) never meet, whatever their text."""

    CLIENT = "client"
    TALLY = "tally"


class IdempotencyRecord(models.Model):
    """The first result of a posting, kept against its key. Refused requests store nothing."""

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="idempotency", db_index=False
    )  # the unique (account, key_space, key) index serves
    key_space = models.CharField(max_length=8, choices=KeySpace.choices)
    key = models.CharField(max_length=255)
    action = models.CharField(max_length=32)
    params = models.JSONField()
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key_space", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return self.key


class Statement(Figures):
    """A closed month, frozen: its figures are its days' sums, and
    ``closing_balance = brought_forward + top_ups - credits_used``. Append-only at the
    database, as are its days."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="statements")
    period = models.DateField(help_text="The first day of the month.")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    brought_forward = models.BigIntegerField()
    closing_balance = models.BigIntegerField()
    last_entry_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "period"], name="statement_one_per_month")]
        ordering = ["-period"]

    def __str__(self) -> str:
        return f"{self.account} {self.period:%Y-%m}"

    @property
    def last_day(self) -> dt.date:
        return (self.ends_at - dt.timedelta(microseconds=1)).astimezone(self.account.tzinfo).date()


class StatementDay(Figures):
    """A statement's frozen daily row."""

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="days")
    date = models.DateField()
    balance = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["statement", "date"], name="statement_day_unique")]
        ordering = ["-date"]

    def __str__(self) -> str:
        return f"{self.statement_id} {self.date}"


class BudgetScope(models.TextChoices):
    PROJECT = "project", "Project"
    USER = "user", "Member"
    API_KEY = "api_key", "API key"


class Budget(models.Model):
    """A monthly limit on the credits charged to a project, a user or an API key (by the
    job's ``project`` or ``user``, or the name of the key that posted). The posting
    functions check it in the same locked posting that checks the balance: a debit, hold
    or settle that would take ``used`` this month plus ``held`` past ``monthly_limit`` is
    refused. Months are the account's."""

    # Found by the unique (account, scope, name) index, which serves the account alone too.
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="budgets", db_index=False)
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    name = models.CharField(max_length=200)
    monthly_limit = models.BigIntegerField()
    held = models.BigIntegerField(default=0, help_text="Credits pending holds keep against it.")
    # What budget alerts said last: the highest level (50, 80, 100) in ``alerted_month``.
    alerted_month = models.DateField(null=True, blank=True)
    alerted_level = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scope", "name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "scope", "name"], name="budget_unique_name"),
            models.CheckConstraint(condition=Q(monthly_limit__gte=0), name="budget_limit_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.name}: {self.monthly_limit}/month"


class BudgetMonth(models.Model):
    """What a budget's matching charges used in one month (net of refunds, never below 0)."""

    # The unique (budget, month) index serves lookups by budget: no second index to keep
    # up on every posting's update of ``used``.
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="months", db_index=False)
    month = models.DateField(help_text="The month's first day, in the account's time zone.")
    used = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-month"]
        constraints = [models.UniqueConstraint(fields=["budget", "month"], name="budget_month_unique")]

    def __str__(self) -> str:
        return f"{self.budget} in {self.month:%Y-%m}: {self.used}"


class Notice(models.Model):
    """Something the ledger tells listeners, written in the posting's own transaction (an
    outbox): a posting on a watched account, a hold that expired, a budget that crossed an
    alert level. Listeners take notices in id order and delete them."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=32)
    detail = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "id"], name="notice_account_idx")]

    def __str__(self) -> str:
        return f"{self.kind} on {self.account_id}"
