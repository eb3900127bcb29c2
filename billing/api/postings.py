"""Postings for the job runner: debits, holds (settle, release), refunds, and gauges.

Each endpoint calls one ledger function with the request's Idempotency-Key and answers
from the receipt the ledger stored against it, so a retry gets the same status and body.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.http import HttpRequest
from ninja import Header, Path, Router, Status

from billing.api.auth import WRITE, organization
from billing.api.errors import NotFound
from billing.api.schemas import (
    MAX_BIGINT,
    DebitIn,
    Error,
    GaugesIn,
    GaugesOut,
    HoldIn,
    PostingOut,
    RefundIn,
    SettleIn,
)
from billing.models import Organization
from ledger import postings
from ledger.models import Hold

router = Router(tags=["postings"], auth=WRITE)

FAILURES: dict[int, type[Error]] = {
    401: Error, 402: Error, 403: Error, 404: Error, 409: Error, 422: Error, 429: Error,
}
IDEMPOTENCY_KEY = Header(  # type: ignore[type-arg]
    None, alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Retrying with the same key and body returns the first result; "
    "generated when absent.",
)
HOLD_ID = Path(..., ge=1, le=MAX_BIGINT)  # type: ignore[type-arg]


def receipt_out(receipt: postings.Receipt, key: str) -> PostingOut:
    return PostingOut(
        action=receipt.action,
        amount=receipt.amount,
        entry_id=receipt.entry_id,
        hold_id=receipt.hold_id,
        forfeited=receipt.forfeited,
        credits_remaining=receipt.balance,
        credits_held=receipt.held,
        credits_available=receipt.available,
        created_at=receipt.created_at,  # type: ignore[arg-type]
        idempotency_key=key,
    )


def pending_hold(org: Organization, hold_id: int) -> Hold:
    hold = Hold.objects.filter(account_id=org.account_id, pk=hold_id).first()
    if hold is None:
        raise NotFound(f"No hold {hold_id} on this organization's account.")
    return hold


@router.post("debits", response={201: PostingOut, **FAILURES})
def debit(
    request: HttpRequest, body: DebitIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Charge ``quantity`` units of ``operation`` now, at the price table's rate."""
    key = idempotency_key or uuid.uuid4().hex
    account = organization(request).account
    amount = postings.quote(body.operation, body.quantity)
    receipt = postings.debit(account, amount, key=key, operation=body.operation,
                             job=body.job.info() if body.job else None, quantity=body.quantity)
    return Status(201, receipt_out(receipt, key))


@router.post("holds", response={201: PostingOut, **FAILURES})
def hold(
    request: HttpRequest, body: HoldIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Reserve credits for a job about to start: ``quantity`` of ``operation``, or ``amount``."""
    key = idempotency_key or uuid.uuid4().hex
    account = organization(request).account
    amount = body.amount if body.amount is not None else postings.quote(body.operation, body.quantity or 0)
    ttl = dt.timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else postings.DEFAULT_HOLD_TTL
    receipt = postings.reserve(account, amount, key=key, operation=body.operation,
                               job=body.job.info() if body.job else None, ttl=ttl)
    return Status(201, receipt_out(receipt, key))


@router.post("holds/{hold_id}/settle", response={200: PostingOut, **FAILURES})
def settle(
    request: HttpRequest,
    body: SettleIn,
    hold_id: int = HOLD_ID,
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> Status[PostingOut]:
    """Charge the hold's job ``amount`` (or ``quantity`` of its operation); release the rest."""
    key = idempotency_key or uuid.uuid4().hex
    org = organization(request)
    held = pending_hold(org, hold_id)
    amount = body.amount
    if amount is None:
        amount = postings.quote(held.operation, body.quantity) if body.quantity else 0
    receipt = postings.settle(org.account, held.pk, amount, key=key)
    return Status(200, receipt_out(receipt, key))


@router.post("holds/{hold_id}/release", response={200: PostingOut, **FAILURES})
def release(
    request: HttpRequest, hold_id: int = HOLD_ID, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Free a hold without charging anything."""
    key = idempotency_key or uuid.uuid4().hex
    org = organization(request)
    held = pending_hold(org, hold_id)
    receipt = postings.release(org.account, held.pk, key=key)
    return Status(200, receipt_out(receipt, key))


@router.post("refunds", response={201: PostingOut, **FAILURES})
def refund(
    request: HttpRequest, body: RefundIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Give back up to what a job consumed, as a positive entry linked to the job."""
    key = idempotency_key or uuid.uuid4().hex
    account = organization(request).account
    receipt = postings.refund(account, body.job_external_id, body.amount, key=key,
                              operation=body.operation)
    return Status(201, receipt_out(receipt, key))


@router.put("gauges", response={200: GaugesOut, 401: Error, 403: Error, 422: Error, 429: Error})
def gauges(request: HttpRequest, body: GaugesIn) -> GaugesOut:
    """Report the organization's storage in bytes and its number of deployments."""
    org = organization(request)
    changes = body.model_dump(exclude_none=True)
    if changes:
        Organization.objects.filter(pk=org.pk).update(**changes)
        for name, value in changes.items():
            setattr(org, name, value)
    subscription = org.plan_subscription
    return GaugesOut(
        storage_bytes=org.storage_bytes,
        deployments=org.deployments,
        storage_limit_gb=subscription.storage_limit_gb if subscription else None,
        deployments_limit=subscription.deployments_limit if subscription else None,
    )
