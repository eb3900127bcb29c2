"""Request and response bodies of the JSON API, as DESIGN.md names their fields."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ledger.budgets import MAX_LIMIT
from ledger.postings import JobInfo

# PostgreSQL text cannot hold NUL; refusing it here keeps such input a 422, not a 500.
NO_NUL = r"^[^\x00]*$"
OPERATION = r"^[a-z0-9][a-z0-9_\-]*$"
MAX_BIGINT = 2**63 - 1
# Bounds that keep every product of price and quantity inside a PostgreSQL bigint.
MAX_QUANTITY = 1_000_000_000
MAX_CREDITS = 1_000_000_000_000

Operation = Annotated[str, Field(min_length=1, max_length=100, pattern=OPERATION)]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Credits = Annotated[int, Field(ge=1, le=MAX_CREDITS)]


def text(max_length: int, min_length: int = 0) -> Any:
    return Field("", min_length=min_length, max_length=max_length, pattern=NO_NUL)


class StrictIn(BaseModel):
    """A request body as DESIGN.md's input rules say: an object with only the fields named
    here, each of its own JSON type (no "10" or 1.0 or true for a number, no 7 for a text).
    A plain pydantic model: ninja's Schema also reads attributes of any object (for
    responses built from models), which input must not do, and costs ten times as much."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --- Errors -----------------------------------------------------------------------------


class ErrorDetail(Schema):
    code: str
    message: str
    required: int | None = None
    remaining: int | None = None
    upgrade_url: str | None = None
    fields: list[str] | None = None
    operation: str | None = None
    required_scope: str | None = None
    retry_after: int | None = None
    errors: list[dict[str, Any]] | None = None


class Error(Schema):
    error: ErrorDetail


# --- Reads ------------------------------------------------------------------------------


class JobOut(Schema):
    external_id: str
    name: str
    project: str
    user: str
    resource_class: str


class EntryOut(Schema):
    id: int
    created_at: dt.datetime
    operation: str
    amount: int
    balance_after: int
    job: JobOut | None


class BalanceOut(Schema):
    credits_remaining: int
    credits_available: int
    credits_held: int
    credits_monthly_allowance: int | None
    credits_reset_at: dt.datetime
    unlimited: bool
    recent_history: list[EntryOut]


class HistoryOut(Schema):
    entries: list[EntryOut]
    limit: int
    offset: int
    before_id: int | None = Field(description="The cursor this page was read before, if any.")
    next_before_id: int | None = Field(
        description="Pass as before_id (with offset=0) for the next page; null on the last."
    )
    has_more: bool
    window_days: int = Field(description="Days of history the plan's audit trail serves.")
    window_start: dt.datetime


class LotOut(Schema):
    lot_id: int
    source: str
    expires_at: dt.datetime | None
    credits: int


class BudgetOut(Schema):
    scope: str = Field(description="project, user or api_key.")
    name: str = Field(description="The project, the user, or the API key's name.")
    monthly_limit: int
    used: int = Field(description="Credits charged this month (the organization's month), net of refunds.")
    held: int = Field(description="Credits pending holds keep against it.")
    remaining: int = Field(description="monthly_limit - used - held, never below 0.")


class BudgetsOut(Schema):
    budgets: list[BudgetOut]


class BudgetIn(StrictIn):
    monthly_limit: int = Field(ge=0, le=MAX_LIMIT)


class EstimateOut(Schema):
    operation: str
    quantity: int
    total_credits: int
    credits_available: int
    sufficient: bool = Field(
        description="Whether a hold for the total would succeed now: the credits cover it and no "
        "budget refuses it."
    )
    lots: list[LotOut]
    budget: BudgetOut | None = Field(
        None, description="The budget that would refuse it (budget_exceeded), if one would."
    )


class ExpiringOut(Schema):
    date: dt.date = Field(description="The organization's day the credits stop counting.")
    credits: int = Field(description="What those lots hold now (less what holds stand on).")
    likely_unused: int = Field(description="What is left in them when they expire, at the recent pace.")


class ForecastOut(Schema):
    daily_burn: int | None = Field(
        description="Credits a day over the last 14 days, debits less refunds; null before a week of history."
    )
    run_out_at: dt.date | None = Field(description="When credits run out at that pace; null: not in sight.")
    run_out_low: dt.date | None = Field(description="The earliest likely day (the pace's 95% range).")
    run_out_high: dt.date | None = Field(description="The latest likely day.")
    history_days: int = Field(description="Days of history the pace is taken from.")
    expiring: list[ExpiringOut] = Field(description="Lots expiring in the next 60 days, by day.")
    message: str = Field(description="The forecast in words, as the pages say it.")


class UsageDayOut(Schema):
    date: dt.date
    top_ups: int = Field(description="Credits added: renewals, packs, promotions, positive adjustments.")
    credits_used: int = Field(description="debits - refunds + expired + adjustments.")
    debits: int
    refunds: int
    expired: int
    adjustments: int = Field(description="Negative adjustments, as a positive figure.")
    balance: int = Field(description="The balance at the end of the day.")


class UsageOut(Schema):
    days: list[UsageDayOut]


class PriceOut(Schema):
    operation: str
    description: str
    unit: str
    credits_per_unit: int
    minimum_credits: int
    resource_class: str


class PricingOut(Schema):
    prices: list[PriceOut]


# --- Postings ---------------------------------------------------------------------------


class JobIn(StrictIn):
    external_id: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    name: str = text(200)
    project: str = text(200)
    user: str = text(200)
    resource_class: str = text(64)

    def info(self) -> JobInfo:
        return JobInfo(self.external_id, self.name, self.project, self.user, self.resource_class)


class DebitIn(StrictIn):
    operation: Operation
    quantity: Quantity
    job: JobIn | None = None


def _quantity_or_amount[T: HoldIn | SettleIn](body: T) -> T:
    """A body names its credits either as ``quantity`` (priced) or as ``amount``."""
    if (body.quantity is None) == (body.amount is None):
        raise ValueError("Give either quantity or amount, not both.")
    return body


class HoldIn(StrictIn):
    operation: Operation
    quantity: Quantity | None = None
    amount: Credits | None = Field(None, description="Credits to hold; instead of quantity.")
    job: JobIn | None = None
    ttl_seconds: int | None = Field(
        None, ge=60, le=7 * 24 * 3600, description="Release the hold if unresolved by then."
    )
    quantity_or_amount = model_validator(mode="after")(_quantity_or_amount)


class SettleIn(StrictIn):
    amount: Annotated[int, Field(ge=0, le=MAX_CREDITS)] | None = Field(
        None, description="Credits to charge; the rest of the hold is released."
    )
    quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = Field(
        None, description="Units of the hold's operation to charge, priced now."
    )
    quantity_or_amount = model_validator(mode="after")(_quantity_or_amount)


def _job_form(value: Any) -> str | None:
    """Which form a refund's job takes: an object is a job, a string its external_id."""
    return "object" if isinstance(value, dict | JobIn) else "external_id" if isinstance(value, str) else None


class RefundIn(StrictIn):
    job: Annotated[
        Annotated[JobIn, Tag("object")]
        | Annotated[str, Tag("external_id"), Field(min_length=1, max_length=128, pattern=NO_NUL)],
        Discriminator(
            _job_form,
            custom_error_type="job_type",
            custom_error_message="Give the job's external_id or the job object.",
        ),
    ] = Field(description="The job to refund: its external_id, or the job object.")
    amount: Credits
    operation: Operation

    @property
    def job_external_id(self) -> str:
        return self.job if isinstance(self.job, str) else self.job.external_id


class GaugesIn(StrictIn):
    storage_bytes: Annotated[int, Field(ge=0, le=MAX_BIGINT)] | None = None
    deployments: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None


class GaugesOut(Schema):
    storage_bytes: int
    deployments: int
    storage_limit_gb: int | None
    deployments_limit: int | None


class PostingOut(Schema):
    """A posting's receipt. A retry with the same Idempotency-Key returns it unchanged."""

    action: str
    amount: int = Field(description="The entry's signed amount; 0 when no entry was posted.")
    entry_id: int | None
    hold_id: int | None
    forfeited: int = Field(description="Refund credits not returned because their lot expired.")
    credits_remaining: int
    credits_held: int
    credits_available: int
    created_at: dt.datetime
    idempotency_key: str
