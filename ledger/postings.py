"""The functions that move credits: typed wrappers around the ledger's PL/pgSQL functions.

Each posting kind is one function in ``ledger/sql/postings.sql``, the only home of its
rule: it locks the account, replays a key posted before, checks, writes every row and
records its answer against the key, in one round trip. These wrappers call it and turn
its refusals (answered, having written nothing) into the exceptions below. At top level
the call is its own transaction; in a caller's transaction it is part of that one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Sequence
from typing import Any, Self

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from ledger.models import Account, Hold, HoldStatus, KeySpace, Lot, LotSource
from ledger.signals import credits_changed

DEFAULT_HOLD_TTL = dt.timedelta(hours=24)


# --- Errors -----------------------------------------------------------------------------


class LedgerError(Exception):
    code = "ledger_error"


class InsufficientCredits(LedgerError):
    """The available credits do not cover the request (HTTP 402). Nothing was changed."""

    code = "insufficient_credits"

    def __init__(self, required: int, remaining: int, upgrade_url: str) -> None:
        self.required = required
        self.remaining = remaining
        self.upgrade_url = upgrade_url
        super().__init__(f"This needs {required} credits; {remaining} are available.")


class BudgetExceeded(LedgerError):
    """The posting would take a budget past its monthly limit (HTTP 402). Nothing was
    changed. ``budget`` says which, with its ``scope``, ``name``, ``monthly_limit``,
    ``used`` and ``remaining`` this month."""

    code = "budget_exceeded"

    def __init__(self, message: str, required: int, budget: dict[str, Any]) -> None:
        self.required = required
        self.budget = budget
        super().__init__(message)


class IdempotencyConflict(LedgerError):
    """The key was used before with other parameters (HTTP 409)."""

    code = "idempotency_conflict"

    def __init__(self, key: str, fields: list[str]) -> None:
        self.key = key
        self.fields = fields
        super().__init__(f"Idempotency key {key!r} was used with different {', '.join(fields)}.")


class UnknownOperation(LedgerError):
    code = "unknown_operation"

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"No price is defined for operation {operation!r}.")


class InvalidPosting(LedgerError):
    """A request the rules refuse whatever the balance (HTTP 422)."""

    code = "validation_error"


class HoldNotFound(InvalidPosting):
    """No such hold on this account (HTTP 404)."""

    code = "not_found"


class HoldNotPending(InvalidPosting):
    code = "hold_not_pending"


def _refusal(error: dict[str, Any]) -> LedgerError:
    """The ledger's exception for a refusal a posting function answered."""
    code, message, detail = error["code"], error["message"], error["detail"]
    match code:
        case "insufficient_credits":
            url = settings.SITE_URL.rstrip("/") + f"/orgs/{detail['slug']}/billing/"
            return InsufficientCredits(detail["required"], detail["remaining"], url)
        case "budget_exceeded":
            return BudgetExceeded(message, detail["required"], detail["budget"])
        case "idempotency_conflict":
            return IdempotencyConflict(detail["key"], detail["fields"])
        case "unknown_operation":
            return UnknownOperation(detail["operation"])
        case "hold_not_found":
            return HoldNotFound(message)
        case "hold_not_pending":
            return HoldNotPending(message)
        case "invalid_posting":
            return InvalidPosting(message)
    raise ValueError(f"Not a refusal the ledger makes: {code!r}")


# --- Inputs and results -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobInfo:
    external_id: str
    name: str = ""
    project: str = ""
    user: str = ""
    resource_class: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What a posting did, as first recorded; a retry with the same key returns it again."""

    action: str
    amount: int
    balance: int
    held: int
    available: int
    created_at: str
    entry_id: int | None = None
    hold_id: int | None = None
    forfeited: int = 0


@dataclasses.dataclass(frozen=True)
class Expiry:
    """An expiry entry: what expired (a negative amount) of which lot."""

    entry_id: int
    lot_id: int
    amount: int


@dataclasses.dataclass(frozen=True)
class Posting:
    """One posting of a batch: its kind (a ledger function), account, key and fields."""

    kind: str
    account_id: int
    key: str
    key_space: KeySpace = KeySpace.TALLY
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def top_up(
        cls,
        account_id: int,
        amount: int,
        *,
        key: str,
        source: LotSource,
        operation: str,
        expires_at: dt.datetime | None = None,
        memo: str = "",
        key_space: KeySpace = KeySpace.TALLY,
    ) -> Self:
        return cls(
            "top_up",
            account_id,
            key,
            key_space,
            {
                "amount": amount,
                "source": source,
                "operation": operation,
                "expires_at": expires_at,
                "memo": memo,
            },
        )

    @classmethod
    def adjustment(cls, account_id: int, amount: int, *, key: str, memo: str) -> Self:
        return cls("adjustment", account_id, key, KeySpace.TALLY, {"amount": amount, "memo": memo})

    @classmethod
    def debit(
        cls,
        account_id: int,
        *,
        key: str,
        operation: str,
        quantity: int | None = None,
        amount: int | None = None,
        job: JobInfo | None = None,
        memo: str = "",
        key_space: KeySpace = KeySpace.TALLY,
        api_key: str = "",
    ) -> Self:
        """``api_key``: the name of the API key posting it, whose budget it counts against."""
        return cls(
            "debit",
            account_id,
            key,
            key_space,
            {
                "operation": operation,
                "quantity": quantity,
                "amount": amount,
                "job": job.as_dict() if job else None,
                "memo": memo,
                "api_key": api_key,
            },
        )

    @classmethod
    def reserve(
        cls,
        account_id: int,
        *,
        key: str,
        operation: str,
        quantity: int | None = None,
        amount: int | None = None,
        job: JobInfo | None = None,
        ttl: dt.timedelta = DEFAULT_HOLD_TTL,
        key_space: KeySpace = KeySpace.TALLY,
        api_key: str = "",
    ) -> Self:
        """The hold counts against the budgets of its job and ``api_key``; so does its settle."""
        return cls(
            "reserve",
            account_id,
            key,
            key_space,
            {
                "operation": operation,
                "quantity": quantity,
                "amount": amount,
                "job": job.as_dict() if job else None,
                "ttl_seconds": ttl.total_seconds(),
                "api_key": api_key,
            },
        )

    @classmethod
    def settle(
        cls,
        account_id: int,
        hold_id: int,
        *,
        key: str,
        amount: int | None = None,
        quantity: int | None = None,
        key_space: KeySpace = KeySpace.TALLY,
    ) -> Self:
        return cls(
            "settle", account_id, key, key_space, {"hold_id": hold_id, "amount": amount, "quantity": quantity}
        )

    @classmethod
    def release(
        cls, account_id: int, hold_id: int, *, key: str, key_space: KeySpace = KeySpace.TALLY
    ) -> Self:
        return cls("release", account_id, key, key_space, {"hold_id": hold_id})

    @classmethod
    def refund(
        cls,
        account_id: int,
        job_external_id: str,
        amount: int,
        *,
        key: str,
        operation: str,
        key_space: KeySpace = KeySpace.TALLY,
        api_key: str = "",
    ) -> Self:
        """What is given back is given back to the budgets of the job and of ``api_key``."""
        return cls(
            "refund",
            account_id,
            key,
            key_space,
            {"job": job_external_id, "amount": amount, "operation": operation, "api_key": api_key},
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "account": self.account_id,
            "key_space": self.key_space,
            "key": self.key,
            **self.fields,
        }


@dataclasses.dataclass(frozen=True)
class LotPlan:
    lot_id: int
    source: str
    expires_at: dt.datetime | None
    credits: int


@dataclasses.dataclass(frozen=True)
class Estimate:
    operation: str
    quantity: int
    total_credits: int
    credits_available: int
    sufficient: bool
    lots: list[LotPlan]
    # The budget that would refuse it (scope, name, monthly_limit, used, held, remaining).
    budget: dict[str, Any] | None = None


# --- Postings ---------------------------------------------------------------------------


def post_top_up(
    account: Account,
    amount: int,
    *,
    key: str,
    source: LotSource,
    operation: str,
    expires_at: dt.datetime | None = None,
    memo: str = "",
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
) -> Receipt:
    """Add credits as a new lot (a renewal, a pack, a promotion, a manual grant)."""
    _require_positive(amount)
    posting = Posting.top_up(
        account.pk,
        amount,
        key=key,
        source=source,
        operation=operation,
        expires_at=expires_at,
        memo=memo,
        key_space=key_space,
    )
    return _post(account, posting, now)


def debit(
    account: Account,
    amount: int | None = None,
    *,
    key: str,
    operation: str,
    job: JobInfo | None = None,
    quantity: int | None = None,
    memo: str = "",
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
    api_key: str = "",
) -> Receipt:
    """Consume ``amount`` credits now, or ``quantity`` of ``operation`` at the price table's
    rate. Refused with ``InsufficientCredits`` unless available credits cover it, and with
    ``BudgetExceeded`` if it would take a budget of its job or ``api_key`` past its limit."""
    if amount is not None:
        _require_positive(amount)
    posting = Posting.debit(
        account.pk,
        key=key,
        operation=operation,
        quantity=quantity,
        amount=amount,
        job=job,
        memo=memo,
        key_space=key_space,
        api_key=api_key,
    )
    return _post(account, posting, now)


def adjust(account: Account, amount: int, *, key: str, memo: str, now: dt.datetime | None = None) -> Receipt:
    """A staff correction: a positive amount grants a never-expiring lot, a negative one
    consumes credits like a debit. Never an edit of an earlier entry."""
    return _post(account, Posting.adjustment(account.pk, amount, key=key, memo=memo), now)


def reserve(
    account: Account,
    amount: int | None = None,
    *,
    key: str,
    operation: str,
    job: JobInfo | None = None,
    quantity: int | None = None,
    ttl: dt.timedelta = DEFAULT_HOLD_TTL,
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
    api_key: str = "",
) -> Receipt:
    """Put credits on hold for a job about to start: ``available`` drops, ``balance`` not;
    so does what remains of the budgets of its job and ``api_key``."""
    if amount is not None:
        _require_positive(amount)
    posting = Posting.reserve(
        account.pk,
        key=key,
        operation=operation,
        quantity=quantity,
        amount=amount,
        job=job,
        ttl=ttl,
        key_space=key_space,
        api_key=api_key,
    )
    return _post(account, posting, now)


def settle(
    account: Account,
    hold_id: int,
    amount: int | None = None,
    *,
    key: str,
    quantity: int | None = None,
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
) -> Receipt:
    """Charge a hold's job ``amount`` (or ``quantity`` of its operation) and release the
    rest. Up to the held amount this never fails; more is charged from available credits,
    or refused with the hold left pending."""
    posting = Posting.settle(
        account.pk, hold_id, key=key, amount=amount, quantity=quantity, key_space=key_space
    )
    return _post(account, posting, now)


def release(
    account: Account,
    hold_id: int,
    *,
    key: str,
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
) -> Receipt:
    """Free a hold without charging anything."""
    return _post(account, Posting.release(account.pk, hold_id, key=key, key_space=key_space), now)


def refund(
    account: Account,
    job_external_id: str,
    amount: int,
    *,
    key: str,
    operation: str,
    now: dt.datetime | None = None,
    key_space: KeySpace = KeySpace.TALLY,
    api_key: str = "",
) -> Receipt:
    """Give back up to what a job consumed, to the lots it came from (and to the budgets of
    the job and ``api_key``). The share of a lot that has since expired is forfeited, not
    revived."""
    _require_positive(amount)
    posting = Posting.refund(
        account.pk,
        job_external_id,
        amount,
        key=key,
        operation=operation,
        key_space=key_space,
        api_key=api_key,
    )
    return _post(account, posting, now)


def post_batch(postings: Sequence[Posting], now: dt.datetime | None = None) -> list[Receipt | LedgerError]:
    """Post every posting in one call, accounts locked in id order. Each stands or falls
    alone: its receipt, or the ledger's exception for its refusal, in the same order."""
    items = [posting.as_json() for posting in postings]
    answers = _call("post_batch", json.dumps(items, default=str), now)
    return [
        _refusal(answer["error"]) if "error" in answer else _receipt(posting.account_id, answer)
        for posting, answer in zip(postings, answers, strict=True)
    ]


def expire_lots(account: Account, now: dt.datetime | None = None) -> list[Expiry]:
    """Post one ``expiry`` entry per lot past its expiry, for what remained of it, except
    the credits pending holds stand on (they expire when the holds resolve)."""
    answer = _call("expire_lots", account.pk, now)
    account.balance, account.held = answer["balance"], answer["held"]
    return [Expiry(**expired) for expired in answer["expired"]]


def expire_due_lots(now: dt.datetime | None = None) -> int:
    """Expire every lot past its expiry on every account, so balances never count dead
    credits while an account is quiet. Returns how many expiry entries were posted."""
    moment = now or timezone.now()
    due = (
        Lot.objects.filter(live=True, expires_at__lte=moment)
        .order_by()
        .values_list("account_id", flat=True)
        .distinct()
    )
    return sum(len(_call("expire_lots", account_id, moment)["expired"]) for account_id in due)


def release_expired_holds(now: dt.datetime | None = None) -> int:
    """Release every pending hold past its expiry, each exactly once."""
    moment = now or timezone.now()
    due = Hold.objects.filter(status=HoldStatus.PENDING, expires_at__lte=moment).values_list("id", flat=True)
    return sum(bool(_call("expire_hold", hold_id, moment)) for hold_id in due)


# --- Reads ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credits:
    """An account's credits now: what remains, what is held, and what is available."""

    remaining: int
    held: int
    available: int


def credits_now(account: Account, now: dt.datetime | None = None) -> Credits:
    """The account's credits as the next posting will see them: credits in lots past their
    expiry no longer count (less what pending holds stand on), even before the periodic
    sweep has posted their expiry."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM ledger.credits(%s, %s)", [account.pk, now or timezone.now()])
        return Credits(*cursor.fetchone())


def open_account(slug: str, *, time_zone: str = "UTC", unlimited: bool = False) -> Account:
    account, _ = Account.objects.get_or_create(
        slug=slug, defaults={"time_zone": time_zone, "unlimited": unlimited}
    )
    return account


def change_time_zone(account: Account, time_zone: str) -> None:
    """Days and months are counted in ``time_zone`` from the month after the current one:
    the change waits for the current month to close, so no month mixes two zones and no
    entry is dated into a closed month. An account that has posted nothing changes now."""
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        if not locked.entries.exists():
            locked.time_zone, locked.next_time_zone = time_zone, ""
        else:
            locked.next_time_zone = "" if time_zone == locked.time_zone else time_zone
        locked.save(update_fields=["time_zone", "next_time_zone"])
    account.time_zone, account.next_time_zone = locked.time_zone, locked.next_time_zone


def quote(operation: str, quantity: int) -> int:
    """Credits for ``quantity`` units of ``operation`` from the price table (the rule the
    posting functions use)."""
    cost = _call("cost", operation, quantity, None)
    if isinstance(cost, dict):
        raise _refusal(cost["error"])
    return int(cost)


def live_lots(account: Account, now: dt.datetime | None = None) -> list[Lot]:
    """The lots with credits left and not past their expiry, in the order debits draw them."""
    moment = now or timezone.now()
    lots = Lot.objects.filter(account=account, live=True).order_by(
        F("expires_at").asc(nulls_last=True), "created_at", "id"
    )
    return [lot for lot in lots if not lot.is_expired_at(moment)]


def estimate(
    account: Account,
    operation: str,
    quantity: int,
    now: dt.datetime | None = None,
    *,
    project: str = "",
    user: str = "",
    api_key: str = "",
) -> Estimate:
    """What ``quantity`` of ``operation`` would cost, which lots it would draw on, and
    whether a budget of a job's ``project`` or ``user``, or of ``api_key``, would refuse it.
    Posts nothing; another caller may spend the credits before the real posting."""
    now = now or timezone.now()
    total = quote(operation, quantity)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ledger.over_budget(a, ledger.budgets_of(a, %s::jsonb, %s), %s, %s) FROM ledger_account a"
            " WHERE a.id = %s",
            [json.dumps({"project": project, "user": user}), api_key, total, now, account.pk],
        )
        (refusal,) = cursor.fetchone()
    refusal = json.loads(refusal) if isinstance(refusal, str) else refusal
    account.refresh_from_db(fields=["balance", "held", "unlimited"])
    lots = live_lots(account, now)
    available = max(sum(lot.remaining for lot in lots) - account.held, 0)
    plan, needed, to_skip = [], total, account.held
    # Held credits are drawn first by their settles, so an estimate draws after them.
    for lot in lots:
        skip = min(to_skip, lot.remaining)
        to_skip -= skip
        take = min(lot.remaining - skip, needed)
        if take > 0:
            plan.append(LotPlan(lot.pk, lot.source, lot.expires_at, take))
            needed -= take
    return Estimate(
        operation=operation,
        quantity=quantity,
        total_credits=total,
        credits_available=available,
        sufficient=(account.unlimited or total <= available) and refusal is None,
        lots=plan,
        budget=refusal["error"]["detail"]["budget"] if refusal else None,
    )


# --- Calling the database ---------------------------------------------------------------


def post(posting: Posting, now: dt.datetime | None = None) -> Receipt:
    """One posting (a batch of one: the same call alone or among others); its receipt, or
    its refusal raised."""
    (result,) = post_batch([posting], now)
    if isinstance(result, LedgerError):
        raise result
    return result


def _post(account: Account, posting: Posting, now: dt.datetime | None) -> Receipt:
    """``post``, leaving ``account`` with its totals after the posting."""
    receipt = post(posting, now)
    account.balance, account.held = receipt.balance, receipt.held
    return receipt


def _receipt(account_id: int, answer: dict[str, Any]) -> Receipt:
    """The receipt of a posting's answer; once the posting commits, listeners of an
    account that asked for it hear that its credits changed (a replay changed nothing)."""
    receipt = Receipt(**answer["receipt"])
    if answer.get("notify") and not answer["replayed"]:
        transaction.on_commit(functools.partial(_tell_credits_changed, account_id))
    return receipt


def _tell_credits_changed(account_id: int) -> None:
    credits_changed.send(Account, account=Account.objects.get(pk=account_id))


def _call(function: str, *args: Any) -> Any:
    """``ledger.<function>(args)``: one statement, its own transaction at top level; its
    answer (JSON decoded)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ledger.{function}({', '.join(['%s'] * len(args))})", args)
        (answer,) = cursor.fetchone()
    return json.loads(answer) if isinstance(answer, str) else answer


def _require_positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidPosting("Amounts are positive whole numbers of credits.")
