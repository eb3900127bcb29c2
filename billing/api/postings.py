"""Postings for the job runner: debits, holds (settle, release), refunds, and gauges.

Each endpoint makes one ledger posting from its body and the request's Idempotency-Key
(in the clients' key space, apart from Tally's own keys) and answers from the receipt the
ledger stored against that key, so a retry gets the same status and body. A batch
(billing/api/batch.py) posts the same postings, many at a time.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.http import HttpRequest
from ninja import Header, Path, Router, Status

from billing.api.auth import WRITE, key_name, organization
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
from ledger.models import KeySpace

router = Router(tags=["postings"], auth=WRITE)

FAILURES: dict[int, type[Error]] = {
    401: Error,
    402: Error,
    403: Error,
    404: Error,
    409: Error,
    413: Error,
    415: Error,
    422: Error,
    429: Error,
}
IDEMPOTENCY_KEY = Header(  # type: ignore[type-arg]
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x21-\x7e]+$",
    description="Retrying with the same key and body returns the first result; generated when absent.",
)
HOLD_ID = Path(..., ge=1, le=MAX_BIGINT)  # type: ignore[type-arg]
CLIENT = KeySpace.CLIENT


def debit_posting(account_id: int, body: DebitIn, key: str, api_key: str) -> postings.Posting:
    return postings.Posting.debit(
        account_id,
        key=key,
        key_space=CLIENT,
        api_key=api_key,
        operation=body.operation,
        quantity=body.quantity,
        job=body.job.info() if body.job else None,
    )


def hold_posting(account_id: int, body: HoldIn, key: str, api_key: str) -> postings.Posting:
    ttl = dt.timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else postings.DEFAULT_HOLD_TTL
    return postings.Posting.reserve(
        account_id,
        key=key,
        key_space=CLIENT,
        api_key=api_key,
        operation=body.operation,
        quantity=body.quantity,
        amount=body.amount,
        job=body.job.info() if body.job else None,
        ttl=ttl,
    )


def settle_posting(account_id: int, hold_id: int, body: SettleIn, key: str) -> postings.Posting:
    return postings.Posting.settle(
        account_id, hold_id, key=key, key_space=CLIENT, amount=body.amount, quantity=body.quantity
    )


def release_posting(account_id: int, hold_id: int, key: str) -> postings.Posting:
    return postings.Posting.release(account_id, hold_id, key=key, key_space=CLIENT)


def refund_posting(account_id: int, body: RefundIn, key: str, api_key: str) -> postings.Posting:
    return postings.Posting.refund(
        account_id,
        body.job_external_id,
        body.amount,
        key=key,
        key_space=CLIENT,
        operation=body.operation,
        api_key=api_key,
    )


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


def post(posting: postings.Posting) -> PostingOut:
    """Post one posting; a refusal is raised and answered by the API's error handlers."""
    return receipt_out(postings.post(posting), posting.key)


@router.post("debits", response={201: PostingOut, **FAILURES})
def debit(
    request: HttpRequest, body: DebitIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Charge ``quantity`` units of ``operation`` now, at the price table's rate."""
    account_id = organization(request).account_id
    key = idempotency_key or uuid.uuid4().hex
    return Status(201, post(debit_posting(account_id, body, key, key_name(request))))


@router.post("holds", response={201: PostingOut, **FAILURES})
def hold(
    request: HttpRequest, body: HoldIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Reserve credits for a job about to start: ``quantity`` of ``operation``, or ``amount``."""
    account_id = organization(request).account_id
    key = idempotency_key or uuid.uuid4().hex
    return Status(201, post(hold_posting(account_id, body, key, key_name(request))))


@router.post("holds/{hold_id}/settle", response={200: PostingOut, **FAILURES})
def settle(
    request: HttpRequest,
    body: SettleIn,
    hold_id: int = HOLD_ID,
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> Status[PostingOut]:
    """Charge the hold's job ``amount`` (or ``quantity`` of its operation); release the rest."""
    account_id = organization(request).account_id
    key = idempotency_key or uuid.uuid4().hex
    return Status(200, post(settle_posting(account_id, hold_id, body, key)))


@router.post("holds/{hold_id}/release", response={200: PostingOut, **FAILURES})
def release(
    request: HttpRequest, hold_id: int = HOLD_ID, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Free a hold without charging anything."""
    account_id = organization(request).account_id
    key = idempotency_key or uuid.uuid4().hex
    return Status(200, post(release_posting(account_id, hold_id, key)))


@router.post("refunds", response={201: PostingOut, **FAILURES})
def refund(
    request: HttpRequest, body: RefundIn, idempotency_key: str | None = IDEMPOTENCY_KEY
) -> Status[PostingOut]:
    """Give back up to what a job consumed, as a positive entry linked to the job."""
    account_id = organization(request).account_id
    key = idempotency_key or uuid.uuid4().hex
    return Status(201, post(refund_posting(account_id, body, key, key_name(request))))


@router.put(
    "gauges",
    response={200: GaugesOut, 401: Error, 403: Error, 413: Error, 415: Error, 422: Error, 429: Error},
)
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
