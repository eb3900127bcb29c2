"""``POST batch``: many postings in one request, the job runner's high-volume path.

Each item is read as the body of its kind's endpoint (with its own ``idempotency_key``, and
``hold_id`` for a settle or release), and the valid ones are posted by the ledger in one
call. Every item stands or falls alone, exactly as if sent by itself: its answer is that
endpoint's success status and body, or its error status and body, in the item's place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Discriminator, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from billing.api import postings as endpoints
from billing.api.auth import WRITE, key_name, organization
from billing.api.errors import ledger_refusal, validation_refusal
from billing.api.schemas import (
    MAX_BIGINT,
    DebitIn,
    Error,
    HoldIn,
    PostingOut,
    RefundIn,
    SettleIn,
    StrictIn,
)
from ledger import postings

router = Router(tags=["postings"], auth=WRITE)

MAX_POSTINGS = 1_000
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
HoldId = Annotated[int, Field(ge=1, le=MAX_BIGINT)]


class DebitItem(DebitIn):
    kind: Literal["debit"]
    idempotency_key: IdempotencyKey


class HoldItem(HoldIn):
    kind: Literal["hold"]
    idempotency_key: IdempotencyKey


class SettleItem(SettleIn):
    kind: Literal["settle"]
    idempotency_key: IdempotencyKey
    hold_id: HoldId


class ReleaseItem(StrictIn):
    kind: Literal["release"]
    idempotency_key: IdempotencyKey
    hold_id: HoldId


class RefundItem(RefundIn):
    kind: Literal["refund"]
    idempotency_key: IdempotencyKey


Item = Annotated[DebitItem | HoldItem | SettleItem | ReleaseItem | RefundItem, Discriminator("kind")]
ITEM = TypeAdapter(Item)
SUCCESS = {"debit": 201, "hold": 201, "settle": 200, "release": 200, "refund": 201}


class BatchIn(StrictIn):
    postings: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_POSTINGS,
        description="Up to 1,000 postings, each an object with `kind` (debit, hold, settle, release, "
        "refund), its own `idempotency_key`, `hold_id` for settle and release, and the fields of "
        "that kind's endpoint.",
    )


class Posted(PostingOut):
    status: int


class Refused(Schema):
    status: int
    error: dict[str, Any] = Field(description="The error body its endpoint would answer: code, message, ...")


class BatchOut(Schema):
    results: list[Posted | Refused]


@router.post(
    "batch", response={200: BatchOut, 401: Error, 403: Error, 413: Error, 415: Error, 422: Error, 429: Error}
)
def batch(request: HttpRequest, body: BatchIn) -> BatchOut:
    """Post up to 1,000 postings at once; each is answered in its place, as if sent alone."""
    account_id = organization(request).account_id
    results: list[Posted | Refused | None] = []
    to_post: list[tuple[int, str, postings.Posting]] = []
    for raw in body.postings:
        try:
            item = ITEM.validate_python(raw)
        except PydanticValidationError as invalid:
            # Named as its endpoint would name them (without the kind the union tried), and
            # located in the batch.
            kind, place = raw.get("kind"), len(results)
            errors = [
                {**e, "loc": ("postings", place, *(e["loc"][1:] if e["loc"][:1] == (kind,) else e["loc"]))}
                for e in invalid.errors()
            ]
            status, detail = validation_refusal(errors)
            results.append(Refused(status=status, error=detail))
            continue
        to_post.append((len(results), item.kind, _posting(account_id, key_name(request), item)))
        results.append(None)
    answers = postings.post_batch([posting for _, _, posting in to_post]) if to_post else []
    for (place, kind, posting), answer in zip(to_post, answers, strict=True):
        if isinstance(answer, postings.LedgerError):
            status, detail = ledger_refusal(answer)
            results[place] = Refused(status=status, error=detail)
        else:
            receipt = endpoints.receipt_out(answer, posting.key)
            results[place] = Posted(status=SUCCESS[kind], **receipt.model_dump())
    return BatchOut(results=[result for result in results if result is not None])


def _posting(
    account_id: int, api_key: str, item: DebitItem | HoldItem | SettleItem | ReleaseItem | RefundItem
) -> postings.Posting:
    """The posting the item's own endpoint would make (``api_key``: the posting key's name)."""
    key = item.idempotency_key
    match item:
        case DebitItem():
            return endpoints.debit_posting(account_id, item, key, api_key)
        case HoldItem():
            return endpoints.hold_posting(account_id, item, key, api_key)
        case SettleItem():
            return endpoints.settle_posting(account_id, item.hold_id, item, key)
        case ReleaseItem():
            return endpoints.release_posting(account_id, item.hold_id, key)
        case RefundItem():
            return endpoints.refund_posting(account_id, item, key, api_key)
