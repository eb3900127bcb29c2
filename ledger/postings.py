"""The functions that move credits. Each is one transaction and the only home of its rule.

Every posting locks the account row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL; on
SQLite the IMMEDIATE transaction already holds the write lock), applies its rule, and stores its
result against its idempotency key in the same transaction. A refused posting raises and
rolls back, so it stores nothing, not even its key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import Model, Sum
from django.db.models.base import ModelState
from django.utils import timezone

from ledger.db import prepared_cursor, prepared_cursors, unobserved
from ledger.models import (
    Account,
    Entry,
    EntryKind,
    Hold,
    HoldStatus,
    IdempotencyRecord,
    Job,
    Lot,
    LotDraw,
    LotSource,
    Price,
)
from ledger.periods import as_aware
from ledger.signals import credits_changed, watched_sql

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


class IdempotencyConflict(LedgerError):
    """The key was used before with other parameters (HTTP 409)."""

    code = "idempotency_conflict"

    def __init__(self, key: str, fields: list[str]) -> None:
        self.key = key
        self.fields = fields
        super().__init__(
            f"Idempotency key {key!r} was used with different {', '.join(fields)}."
        )


class UnknownOperation(LedgerError):
    code = "unknown_operation"

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"No price is defined for operation {operation!r}.")


class InvalidPosting(LedgerError):
    """A request the rules refuse whatever the balance (HTTP 422)."""

    code = "validation_error"


class HoldNotPending(InvalidPosting):
    code = "hold_not_pending"


# --- Inputs and results -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JobInfo:
    external_id: str
    name: str = ""
    project: str = ""
    user: str = ""
    resource_class: str = ""

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)  # its fields, all strings


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # its fields, all plain values


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


# --- Public functions -------------------------------------------------------------------


def open_account(slug: str, *, time_zone: str = "UTC", unlimited: bool = False) -> Account:
    account, _ = Account.objects.get_or_create(
        slug=slug, defaults={"time_zone": time_zone, "unlimited": unlimited}
    )
    return account


def quote(operation: str, quantity: int) -> int:
    """Credits for ``quantity`` units of ``operation`` from the price table."""
    if quantity <= 0:
        raise InvalidPosting("Quantity must be a positive whole number.")
    # Every priced posting asks, so this is one prepared statement, not an ORM query.
    with prepared_cursor() as cursor:
        cursor.execute(_PRICE, [operation])
        row = cursor.fetchone()
    if row is None:
        raise UnknownOperation(operation)
    return Price(credits_per_unit=row[0], minimum_credits=row[1]).total_for(quantity)


def live_lots(account: Account, now: dt.datetime | None = None) -> list[Lot]:
    """The lots with credits left and not past their expiry, in the order debits draw them."""
    moment = now or timezone.now()
    return [lot for lot in _lots_in_draw_order(account) if not lot.is_expired_at(moment)]


def estimate(account: Account, operation: str, quantity: int, now: dt.datetime | None = None) -> Estimate:
    """What ``quantity`` of ``operation`` would cost and which lots it would draw on. Posts
    nothing; another caller may spend the credits before the real posting."""
    now = now or timezone.now()
    total = quote(operation, quantity)
    account.refresh_from_db(fields=["balance", "held", "unlimited"])
    lots = live_lots(account, now)
    spendable = sum(lot.remaining for lot in lots) - account.held
    available = max(spendable, 0)
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
        sufficient=account.unlimited or total <= available,
        lots=plan,
    )


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
) -> Receipt:
    """Add credits as a new lot (a renewal, a pack, a promotion, a manual grant)."""
    _require_positive(amount)
    params = {"amount": amount, "source": str(source), "operation": operation,
              "expires_at": expires_at.isoformat() if expires_at else None}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        kind = EntryKind.ADJUSTMENT if source == LotSource.ADJUSTMENT else EntryKind.TOP_UP
        entry = book.append(kind, operation, amount, moment, memo=memo)
        book.new_lot(amount, source, moment, entry=entry, expires_at=expires_at)
        return book.receipt("top_up", moment, entry=entry)

    return _posting(account, key, "top_up", params, apply, now)


def debit(
    account: Account,
    amount: int,
    *,
    key: str,
    operation: str,
    job: JobInfo | None = None,
    quantity: int | None = None,
    memo: str = "",
    now: dt.datetime | None = None,
) -> Receipt:
    """Consume credits now. Refused with ``InsufficientCredits`` unless available covers it."""
    _require_positive(amount)
    params = {"amount": amount, "operation": operation, "quantity": quantity,
              "job": job.as_dict() if job else None}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        lots = book.live_lots(moment)
        book.check_available(amount)
        entry = book.consume(lots, amount, EntryKind.DEBIT, operation, moment,
                             job_id=book.job_id, quantity=quantity, memo=memo)
        return book.receipt("debit", moment, entry=entry)

    return _posting(account, key, "debit", params, apply, now, job=job)


def adjust(
    account: Account, amount: int, *, key: str, memo: str, now: dt.datetime | None = None
) -> Receipt:
    """A staff correction: a positive amount grants a never-expiring lot, a negative one
    consumes credits like a debit. Never an edit of an earlier entry."""
    if amount == 0:
        raise InvalidPosting("An adjustment must change the balance.")
    if amount > 0:
        return post_top_up(account, amount, key=key, source=LotSource.ADJUSTMENT,
                           operation="manual_adjustment", memo=memo, now=now)
    params = {"amount": amount, "memo": memo}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        lots = book.live_lots(moment)
        book.check_available(-amount)
        entry = book.consume(lots, -amount, EntryKind.ADJUSTMENT, "manual_adjustment", moment,
                             memo=memo)
        return book.receipt("adjustment", moment, entry=entry)

    return _posting(account, key, "adjustment", params, apply, now)


def reserve(
    account: Account,
    amount: int,
    *,
    key: str,
    operation: str,
    job: JobInfo | None = None,
    ttl: dt.timedelta = DEFAULT_HOLD_TTL,
    now: dt.datetime | None = None,
) -> Receipt:
    """Put credits on hold for a job about to start: ``available`` drops, ``balance`` not."""
    _require_positive(amount)
    params = {"amount": amount, "operation": operation,
              "job": job.as_dict() if job else None}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        book.live_lots(moment)
        book.check_available(amount)
        hold = Hold.objects.create(account=book.account, operation=operation, amount=amount,
                                   job_id=book.job_id, created_at=moment, expires_at=moment + ttl)
        book.change_held(amount)
        return book.receipt("reserve", moment, hold=hold)

    return _posting(account, key, "reserve", params, apply, now, job=job)


def settle(
    account: Account, hold_id: int, amount: int, *, key: str, now: dt.datetime | None = None
) -> Receipt:
    """Charge a hold's job ``amount`` and release the rest. More than was held is charged
    from available credits, or refused with the hold left pending."""
    if amount < 0:
        raise InvalidPosting("A settle amount cannot be negative.")
    params = {"hold": hold_id, "amount": amount}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        hold = book.pending_hold(hold_id)
        lots = book.live_lots(moment)
        acct = book.account
        others_held = acct.held - hold.amount
        if not acct.unlimited and acct.balance - others_held < amount:
            raise book.insufficient(amount, acct.balance - others_held)
        entry = None
        if amount:
            entry = book.consume(lots, amount, EntryKind.DEBIT, hold.operation, moment,
                                 job_id=hold.job_id, hold=hold)
        book.resolve(hold, HoldStatus.SETTLED, moment, settled_amount=amount)
        return book.receipt("settle", moment, entry=entry, hold=hold)

    return _posting(account, key, "settle", params, apply, now)


def release(account: Account, hold_id: int, *, key: str, now: dt.datetime | None = None) -> Receipt:
    """Free a hold without charging anything."""

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        hold = book.pending_hold(hold_id)
        book.resolve(hold, HoldStatus.RELEASED, moment)
        return book.receipt("release", moment, hold=hold)

    return _posting(account, key, "release", {"hold": hold_id}, apply, now)


def refund(
    account: Account,
    job_external_id: str,
    amount: int,
    *,
    key: str,
    operation: str,
    now: dt.datetime | None = None,
) -> Receipt:
    """Give back up to what a job consumed, to the lots it came from. The share of a lot
    that has since expired is forfeited, not revived."""
    _require_positive(amount)
    params = {"job": job_external_id, "amount": amount, "operation": operation}

    def apply(book: _Book, moment: dt.datetime) -> Receipt:
        job = Job.objects.filter(account=book.account, external_id=job_external_id).first()
        if job is None:
            raise InvalidPosting(f"No job {job_external_id!r} has consumed credits here.")
        entries = list(job.entries.all())
        consumed = -sum(e.amount for e in entries if e.kind == EntryKind.DEBIT)
        refunded = sum(e.amount + e.refund_of_expired for e in entries if e.kind == EntryKind.REFUND)
        if amount > consumed - refunded:
            raise InvalidPosting(
                f"Job {job_external_id!r} has {consumed - refunded} credits left to refund; "
                f"{amount} were asked."
            )
        returns, overdraft_part, forfeited = _refund_plan(entries, amount, moment)
        entry = book.append(EntryKind.REFUND, operation, amount - forfeited, moment, job=job,
                            refund_of_expired=forfeited)
        book.return_to_lots(entry, returns, overdraft_part, moment)
        return book.receipt("refund", moment, entry=entry, forfeited=forfeited)

    return _posting(account, key, "refund", params, apply, now)


def expire_lots(account: Account, now: dt.datetime | None = None) -> list[Entry]:
    """Post one ``expiry`` entry per lot past its expiry, for exactly what remained."""
    moment = now or timezone.now()
    with _transaction() as on_commit:
        book = _Book(account, on_commit)
        entries = book.expire([lot for lot in book.lots if lot.is_expired_at(moment)], moment)
        if entries:
            book.flush()
    _copy_totals(book.account, account)
    return entries


def expire_due_lots(now: dt.datetime | None = None) -> int:
    """Expire every lot past its expiry on every account, so balances never count dead
    credits while an account is quiet. Returns how many expiry entries were posted."""
    moment = now or timezone.now()
    due = (Lot.objects.filter(live=True, expires_at__lte=moment)
           .order_by().values_list("account_id", flat=True).distinct())
    return sum(len(expire_lots(Account(pk=account_id), now=moment)) for account_id in due)


def release_expired_holds(now: dt.datetime | None = None) -> int:
    """Release every pending hold past its expiry, each exactly once."""
    moment = now or timezone.now()
    released = 0
    due = Hold.objects.filter(status=HoldStatus.PENDING, expires_at__lte=moment)
    for hold_id, account_id in due.values_list("id", "account_id"):
        with _transaction() as on_commit:
            book = _Book(Account(pk=account_id), on_commit)
            hold = Hold.objects.get(pk=hold_id)
            if hold.status == HoldStatus.PENDING:
                book.resolve(hold, HoldStatus.EXPIRED, moment)
                book.flush()
                released += 1
    return released


# --- The machinery ----------------------------------------------------------------------


def _posting(
    account: Account,
    key: str,
    action: str,
    params: dict[str, Any],
    apply: Callable[[_Book, dt.datetime], Receipt],
    now: dt.datetime | None,
    job: JobInfo | None = None,
) -> Receipt:
    if not key or len(key) > 255:
        raise InvalidPosting("An idempotency key of 1 to 255 characters is required.")
    params_json = json.dumps(params)  # what is recorded against the key, made before the lock
    try:
        with _transaction() as on_commit:
            book = _Book(account, on_commit, key=key, job=job)
            if book.first_result is not None:
                raise _PostedBefore(book.first_result)
            receipt = apply(book, now or timezone.now())
            book.record(key, action, params_json, receipt)
            book.flush()
    except _PostedBefore as before:
        return _replay(before.first, key, action, params)
    except (LedgerError, DatabaseError):
        # The same key may have been posted by a concurrent retry that took the lock
        # first (its record is unique, so ours failed; in a pipeline the failure shows
        # as the pipeline aborted): then answer exactly as it was answered.
        first = _first_result(account.pk, key)
        if first is None:
            raise
        return _replay(first, key, action, params)
    _copy_totals(book.account, account)
    return receipt


class _PostedBefore(Exception):
    """The key was posted before: leave the transaction, rolling back anything this
    attempt wrote (a job row it made), and answer as the first posting was answered."""

    def __init__(self, first: IdempotencyRecord) -> None:
        self.first = first


def _first_result(account_id: int, key: str) -> IdempotencyRecord | None:
    """What was recorded against ``key`` on this account, if anything."""
    with prepared_cursor() as cursor:
        cursor.execute(_FIRST_RESULT, [account_id, key])
        row = cursor.fetchone()
    return _first_result_from(account_id, key, row) if row is not None else None


def _first_result_from(account_id: int, key: str, row: tuple[Any, ...]) -> IdempotencyRecord:
    action, params, result = (v if isinstance(v, dict | None) or i == 0 else json.loads(v)
                              for i, v in enumerate(row))
    return IdempotencyRecord(account_id=account_id, key=key, action=action, params=params,
                             result=result)


def _replay(first: IdempotencyRecord, key: str, action: str, params: dict[str, Any]) -> Receipt:
    differing = sorted(
        name for name in params.keys() | first.params.keys()
        if params.get(name) != first.params.get(name)
    )
    if first.action != action:
        differing.insert(0, "action")
    if differing:
        raise IdempotencyConflict(key, differing)
    return Receipt(**first.result)


class _Book:
    """One posting's hold on an account: the locked row, and the writes it will make.

    Entries, holds and new lots are inserted at once, since their ids are needed. The rest
    (balance totals, the days' rollups, lot draws, lots' remaining credits, hold outcomes,
    the idempotency record) is gathered and sent together by ``flush``: one round trip on
    PostgreSQL (a pipeline), so the account row stays locked as briefly as possible."""

    def __init__(
        self, account: Account, on_commit: OnCommit, *, key: str | None = None,
        job: JobInfo | None = None,
    ) -> None:
        self.on_commit = on_commit
        (self.account, self.lots, self._entry_ids, self.job_id, self.first_result,
         self.watched) = _lock_and_read(account.pk, key, job)
        self.available_before = self.account.available
        self._entries: list[Entry] = []
        self._rollups: dict[dt.date, list[int]] = {}
        self._draws: list[tuple[int, int, int]] = []
        self._lots: dict[int, Lot] = {}
        self._holds: list[Hold] = []
        self._record: tuple[str, str, str, Receipt] | None = None

    # Reading

    def live_lots(self, moment: dt.datetime) -> list[Lot]:
        """The lots a posting may draw on; any already past expiry are expired first."""
        due = [lot for lot in self.lots if lot.is_expired_at(moment)]
        if due:
            self.expire(due, moment)
        return [lot for lot in self.lots if lot not in due]

    def pending_hold(self, hold_id: int) -> Hold:
        hold = Hold.objects.filter(account=self.account, pk=hold_id).first()
        if hold is None:
            raise InvalidPosting(f"No hold {hold_id} on this account.")
        if hold.status != HoldStatus.PENDING:
            raise HoldNotPending(f"Hold {hold_id} is already {hold.status}.")
        return hold

    def insufficient(self, required: int, remaining: int) -> InsufficientCredits:
        url = settings.SITE_URL.rstrip("/") + f"/orgs/{self.account.slug}/billing/"
        return InsufficientCredits(required=required, remaining=max(remaining, 0), upgrade_url=url)

    def check_available(self, amount: int) -> None:
        acct = self.account
        if not acct.unlimited and acct.balance - acct.held < amount:
            raise self.insufficient(amount, acct.balance - acct.held)

    def receipt(
        self,
        action: str,
        moment: dt.datetime,
        *,
        entry: Entry | None = None,
        hold: Hold | None = None,
        forfeited: int = 0,
    ) -> Receipt:
        acct = self.account
        return Receipt(
            action=action, amount=entry.amount if entry else 0, balance=acct.balance,
            held=acct.held, available=acct.available, created_at=moment.isoformat(),
            entry_id=entry.pk if entry else None, hold_id=hold.pk if hold else None,
            forfeited=forfeited,
        )

    # Writing

    def append(
        self, kind: EntryKind, operation: str, amount: int, moment: dt.datetime, **fields: Any
    ) -> Entry:
        """Write one entry and move the balance; the day's rollup follows at flush."""
        acct = self.account
        acct.balance += amount
        job, hold = fields.pop("job", None), fields.pop("hold", None)
        job_id, hold_id = fields.pop("job_id", None), fields.pop("hold_id", None)
        if job is not None:
            job_id = job.pk
        if hold is not None:
            hold_id = hold.pk
        # Made as loaded (see _loaded), from its values in the model's field order: every
        # posting makes one while it holds the lock.
        entry = _loaded(Entry, _ENTRY_ORDER, (
            None, acct.pk, kind, operation, amount, acct.balance, fields.pop("quantity", None),
            job_id, hold_id, fields.pop("refund_of_expired", 0), fields.pop("memo", ""), moment,
            acct.local_date(moment)))
        if fields:
            raise TypeError(f"Not entry fields: {sorted(fields)}")
        entry.pk = self._entry_ids.pop() if self._entry_ids else _next_entry_id()
        if entry.pk is None:
            _insert_entry(entry)  # no sequence to draw ids from (SQLite): insert it now
        else:
            self._entries.append(entry)
        day = self._rollups.setdefault(entry.local_date, [0, 0, 0, 0, 0])
        entry_kind = EntryKind(kind)
        day[_ROLLUP_COLUMNS.index(entry_kind.rollup_column)] += entry_kind.rollup_change(amount)
        day[4] = entry.balance_after
        return entry

    def new_lot(
        self,
        amount: int,
        source: LotSource,
        moment: dt.datetime,
        *,
        entry: Entry | None,
        expires_at: dt.datetime | None = None,
    ) -> Lot:
        # A credit to an overdrawn (unlimited) account pays the overdraft first.
        overdraft = max(-(self.account.balance - amount), 0)
        return Lot.objects.create(
            account=self.account, source=source, amount=amount,
            remaining=amount - min(overdraft, amount), expires_at=expires_at,
            created_at=moment, entry=entry,
        )

    def consume(
        self,
        lots: list[Lot],
        amount: int,
        kind: EntryKind,
        operation: str,
        moment: dt.datetime,
        **fields: Any,
    ) -> Entry:
        """Post ``amount`` consumed and draw it from ``lots`` in their order."""
        entry = self.append(kind, operation, -amount, moment, **fields)
        needed = amount
        for lot in lots:
            if needed == 0:
                break
            take = min(lot.remaining, needed)
            if take:
                lot.remaining -= take
                needed -= take
                self.draw(entry, lot, -take)
        if needed and not self.account.unlimited:
            raise AssertionError("lots do not cover a checked debit")  # the check above failed
        return entry

    def expire(self, lots: list[Lot], moment: dt.datetime) -> list[Entry]:
        entries = []
        for lot in lots:
            remaining, lot.remaining, lot.expired = lot.remaining, 0, True
            entry = self.append(EntryKind.EXPIRY, "expiry", -remaining, moment,
                                memo=f"{lot.source} lot {lot.pk} expired")
            self.draw(entry, lot, -remaining)
            entries.append(entry)
        return entries

    def return_to_lots(
        self,
        entry: Entry,
        returns: list[tuple[Lot, int]],
        overdraft_part: int,
        moment: dt.datetime,
    ) -> None:
        # An overdrawn (unlimited) account is paid down first: by the share no lot covered,
        # then by what would have gone back to lots. Only the rest refills lots.
        absorb = min(max(-(self.account.balance - entry.amount), 0), entry.amount)
        from_overdraft_part = min(absorb, overdraft_part)
        absorb -= from_overdraft_part
        for lot, give in returns:
            cut = min(absorb, give)
            absorb -= cut
            if give - cut:
                lot.remaining += give - cut
                self.draw(entry, lot, give - cut)
        # The uncovered share left over (its overdraft was since paid off) becomes a
        # never-expiring lot, so no refunded credit is lost.
        surplus = overdraft_part - from_overdraft_part
        if surplus > 0:
            lot = Lot.objects.create(account=self.account, source=LotSource.ADJUSTMENT,
                                     amount=surplus, remaining=surplus, created_at=moment)
            self._draws.append((entry.pk, lot.pk, surplus))

    def draw(self, entry: Entry, lot: Lot, amount: int) -> None:
        self._draws.append((entry.pk, lot.pk, amount))
        self._lots[lot.pk] = lot

    def change_held(self, amount: int) -> None:
        self.account.held += amount

    def resolve(
        self, hold: Hold, status: HoldStatus, moment: dt.datetime, settled_amount: int | None = None
    ) -> None:
        hold.status, hold.resolved_at, hold.settled_amount = status, moment, settled_amount
        self._holds.append(hold)
        self.change_held(-hold.amount)

    def record(self, key: str, action: str, params_json: str, receipt: Receipt) -> None:
        self._record = (key, action, params_json, receipt)

    def flush(self) -> None:
        """Send the gathered writes, then tell listeners the credits changed."""
        ops, acct = connection.ops, self.account
        writes: list[tuple[str, list[Any]]] = [_entry_insert(entry) for entry in self._entries]
        writes.append(("UPDATE ledger_account SET balance = %s, held = %s WHERE id = %s",
                       [acct.balance, acct.held, acct.pk]))
        for date, (top_ups, used, refunds, expired, balance) in self._rollups.items():
            writes.append((_ROLLUP_UPSERT, [acct.pk, ops.adapt_datefield_value(date), top_ups,
                                            used, refunds, expired, balance]))
        if self._draws:
            writes.append((_insert_draws(len(self._draws)),
                           [v for draw in self._draws for v in draw]))
        for lot in self._lots.values():
            writes.append(("UPDATE ledger_lot SET remaining = %s, expired = %s WHERE id = %s",
                           [lot.remaining, lot.expired, lot.pk]))
        for hold in self._holds:
            writes.append((
                "UPDATE ledger_hold SET status = %s, resolved_at = %s, settled_amount = %s "
                "WHERE id = %s",
                [hold.status, ops.adapt_datetimefield_value(hold.resolved_at),
                 hold.settled_amount, hold.pk],
            ))
        if self._record:
            key, action, params_json, receipt = self._record
            writes.append((_INSERT_RECORD, [
                acct.pk, key, action, params_json, json.dumps(receipt.as_dict()),
                ops.adapt_datetimefield_value(timezone.now())]))
        _execute_together(writes)
        if self.watched and (self._rollups or self._holds
                             or acct.available != self.available_before):
            # Any posting that moved balance or held (a reserve moves only held) is heard
            # of once committed, outside the lock; a posting rolled back is never heard of.
            self.on_commit(functools.partial(
                _tell_credits_changed, acct.pk, acct.slug, acct.time_zone, acct.unlimited,
                acct.balance, acct.held, self.available_before))


def _tell_credits_changed(
    pk: int, slug: str, time_zone: str, unlimited: bool, balance: int, held: int, before: int
) -> None:
    changed = Account(pk=pk, slug=slug, time_zone=time_zone, unlimited=unlimited,
                      balance=balance, held=held)
    credits_changed.send(Account, account=changed, available_before=before)


_ROLLUP_COLUMNS = ("top_ups", "credits_used", "refunds", "expired")
_ROLLUP_UPSERT = (
    "INSERT INTO ledger_dailyrollup (account_id, date, top_ups, credits_used, refunds, expired, "
    "balance) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (account_id, date) DO UPDATE SET "
    + ", ".join(f"{c} = ledger_dailyrollup.{c} + excluded.{c}" for c in _ROLLUP_COLUMNS)
    + ", balance = excluded.balance"
)


_PRICE = "SELECT credits_per_unit, minimum_credits FROM ledger_price WHERE operation = %s"
_INSERT_RECORD = ('INSERT INTO ledger_idempotencyrecord (account_id, "key", action, params, '
                  "result, created_at) VALUES (%s, %s, %s, %s, %s, %s)")


@functools.lru_cache(maxsize=16)
def _insert_draws(count: int) -> str:
    return ("INSERT INTO ledger_lotdraw (entry_id, lot_id, amount) VALUES "
            + ", ".join(["(%s, %s, %s)"] * count))


_ENTRY_COLUMNS = ("account_id", "kind", "operation", "amount", "balance_after", "quantity", "job_id",
                  "hold_id", "refund_of_expired", "memo", "created_at", "local_date")
_ENTRY_ORDER = ["id", *_ENTRY_COLUMNS]
assert [field.attname for field in Entry._meta.concrete_fields] == _ENTRY_ORDER
_LOT_COLUMNS = ("id", "source", "amount", "remaining", "expires_at", "expired", "created_at")
# The draw order, defined once: soonest expiry first, never-expiring last, oldest first
# among equals.
_DRAW_ORDER = "expires_at ASC NULLS LAST, created_at, id"
_LIVE_LOTS = (
    f"SELECT {', '.join(_LOT_COLUMNS)} FROM ledger_lot "
    f"WHERE account_id = %s AND live ORDER BY {_DRAW_ORDER}"
)


# The identity column's sequence by its name, which a prepared statement resolves once;
# pg_get_serial_sequence() would search the catalog again on every posting, under the lock.
_NEXT_ENTRY_ID = "SELECT nextval('ledger_entry_id_seq')"
_FIRST_RESULT = ("SELECT action, params, result FROM ledger_idempotencyrecord "
                 'WHERE account_id = %s AND "key" = %s')


def _lock_sql(pg: bool) -> str:
    """Read the account, and whether a listener watches it. On PostgreSQL lock it, and take
    an id for the entry the posting will most likely write.

    The lock is the one an UPDATE that keeps the row's key takes (FOR NO KEY UPDATE): it
    excludes every other posting and the month close (FOR UPDATE), but not the foreign-key
    checks of rows that merely reference the account."""
    return (f"SELECT slug, time_zone, unlimited, balance, held, {watched_sql()}"
            + (", nextval('ledger_entry_id_seq')" if pg else "")
            + " FROM ledger_account WHERE id = %s" + (" FOR NO KEY UPDATE" if pg else ""))


# A job is made on first sight and its first description stays. NOT EXISTS spares the id
# sequence on every later sight; ON CONFLICT covers a first sight by a writer that does not
# lock the account.
_MAKE_JOB = (
    'INSERT INTO ledger_job (account_id, external_id, name, project, "user", resource_class, '
    "created_at) SELECT %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS "
    "(SELECT 1 FROM ledger_job WHERE account_id = %s AND external_id = %s) ON CONFLICT DO NOTHING"
)
_FIND_JOB = "SELECT id FROM ledger_job WHERE account_id = %s AND external_id = %s"


@functools.cache
def _after_lock_sql(job: bool, key: bool) -> str:
    """On PostgreSQL, all a posting reads once it holds the lock, as one statement: one row
    per live lot in draw order (or one row of NULLs), each beginning with the job's id
    (made now, or found) and what was recorded against the key."""
    job_id = f"(SELECT id FROM made UNION ALL {_FIND_JOB} LIMIT 1)" if job else "NULL"
    first = "r.action, r.params, r.result" if key else "NULL, NULL, NULL"
    return (
        (f"WITH made AS ({_MAKE_JOB} RETURNING id) " if job else "")
        + f"SELECT {job_id}, {first}, l.* FROM (SELECT) AS one "
        + ('LEFT JOIN ledger_idempotencyrecord r ON r.account_id = %s AND r."key" = %s ' if key else "")
        + f"LEFT JOIN LATERAL ({_LIVE_LOTS}) AS l ON true "
        + "ORDER BY " + ", ".join(f"l.{term}" for term in _DRAW_ORDER.split(", "))
    )


def _lock_and_read(
    account_id: int, key: str | None, job: JobInfo | None
) -> tuple[Account, list[Lot], list[int | None], int | None, IdempotencyRecord | None, bool]:
    """Everything a posting reads: lock the account row (on PostgreSQL taking an id for the
    entry the posting will most likely write); make or find its job; look up its key; read
    its lots with credits left, in draw order.

    On PostgreSQL that is two statements in one round trip (a pipeline): the lock, then the
    rest, which must be a statement of its own, since a statement that waited for the lock
    still reads other tables as they were when it began. Once the lock is held no other
    posting can be making the same job, so making it cannot wait on one."""
    pg = connection.vendor == "postgresql"
    make_job: list[Any] = []  # _MAKE_JOB's parameters
    find_job: list[Any] = []  # _FIND_JOB's
    if job is not None:
        find_job = [account_id, job.external_id]
        make_job = [account_id, job.external_id, job.name, job.project, job.user,
                    job.resource_class, connection.ops.adapt_datetimefield_value(timezone.now()),
                    *find_job]
    job_id: int | None = None
    recorded: tuple[Any, ...] | None = None
    if pg:
        key_params = [account_id, key] if key is not None else []
        params = [*make_job, *find_job, *key_params, account_id]
        rows, after = _read_together([(_lock_sql(pg), [account_id]),
                                      (_after_lock_sql(job is not None, key is not None), params)])
        job_id, *first_row = after[0][:4]
        recorded = tuple(first_row) if first_row[0] is not None else None
        lot_rows = [row[4:] for row in after if row[4] is not None]
    else:
        reads = []
        if job is not None:
            _execute_together([(_MAKE_JOB, make_job)])
            reads.append((_FIND_JOB, find_job))
        if key is not None:
            reads.append((_FIRST_RESULT, [account_id, key]))
        results = _read_together([*reads, (_lock_sql(pg), [account_id]), (_LIVE_LOTS, [account_id])])
        if job is not None:
            job_id = results.pop(0)[0][0]
        if key is not None:
            recorded = next(iter(results.pop(0)), None)
        rows, lot_rows = results
    if not rows:
        raise Account.DoesNotExist(f"No account {account_id}.")
    first = _first_result_from(account_id, key, recorded) if key and recorded else None
    slug, time_zone, unlimited, balance, held, watched, *entry_ids = rows[0]
    if job is not None and job_id is None:
        job_id = _read_together([(_FIND_JOB, find_job)])[0][0][0]
    account = _loaded(Account, _ACCOUNT_FIELDS,
                      (account_id, slug, time_zone, bool(unlimited), balance, held))
    return account, _lots_from_rows(account, lot_rows), entry_ids, job_id, first, bool(watched)


_ACCOUNT_FIELDS = ["id", "slug", "time_zone", "unlimited", "balance", "held"]


def _loaded[M: Model](model: type[M], fields: Sequence[str], values: Iterable[Any]) -> M:
    """What ``model.from_db`` makes of a row, without running ``Model.__init__``: a
    posting makes one for each row it reads (the account, its lots) or writes (an entry)
    while it holds the lock, and ``__init__``'s per-field work and init signals cost more
    than the rule's own Python. The values are those loaded from the default database, and
    a field left out loads when first read, as a deferred field does. None of these models
    has an ``__init__`` of its own or a receiver of its init signals."""
    instance = model.__new__(model)
    instance.__dict__.update(zip(fields, values, strict=True))
    state = instance._state = ModelState()
    state.adding, state.db = False, DEFAULT_DB_ALIAS
    return instance


def _read_together(reads: list[tuple[str, list[Any]]]) -> list[list[tuple[Any, ...]]]:
    """Each statement's rows. In a pipeline (see ``_transaction``) the statements, and any
    writes queued before them, travel together: one round trip."""
    with prepared_cursors(len(reads)) as cursors:
        for cursor, (sql, params) in zip(cursors, reads, strict=True):
            cursor.execute(sql, params)
        return [cursor.fetchall() for cursor in cursors]


def _lots_from_rows(account: Account, rows: list[tuple[Any, ...]]) -> list[Lot]:
    lots = []
    for pk, source, amount, remaining, expires_at, expired, created_at in rows:
        lot = _loaded(Lot, _LOT_FIELDS, (
            pk, account.pk, source, amount, remaining, as_aware(expires_at), bool(expired),
            as_aware(created_at)))
        lots.append(lot)
    return lots


_LOT_FIELDS = ["id", "account_id", "source", "amount", "remaining", "expires_at", "expired",
               "created_at"]


def _next_entry_id() -> int | None:
    """A further entry id, from the sequence where the database has one."""
    if connection.vendor != "postgresql":
        return None
    with prepared_cursor() as cursor:
        cursor.execute(_NEXT_ENTRY_ID)
        return int(cursor.fetchone()[0])


_INSERT_NUMBERED_ENTRY = (f"INSERT INTO ledger_entry (id, {', '.join(_ENTRY_COLUMNS)}) "
                          f"VALUES ({', '.join(['%s'] * (len(_ENTRY_COLUMNS) + 1))})")


def _entry_insert(entry: Entry) -> tuple[str, list[Any]]:
    """The INSERT for an entry whose id was taken from the sequence already."""
    return _INSERT_NUMBERED_ENTRY, [entry.pk, *_entry_values(entry)]


def _entry_values(entry: Entry) -> list[Any]:
    ops = connection.ops
    values = [getattr(entry, column) for column in _ENTRY_COLUMNS]
    values[-2] = ops.adapt_datetimefield_value(entry.created_at)
    values[-1] = ops.adapt_datefield_value(entry.local_date)
    return values


def _insert_entry(entry: Entry) -> None:
    sql = (f"INSERT INTO ledger_entry ({', '.join(_ENTRY_COLUMNS)}) "
           f"VALUES ({', '.join(['%s'] * len(_ENTRY_COLUMNS))}) RETURNING id")
    with prepared_cursor() as cursor:
        cursor.execute(sql, _entry_values(entry))
        entry.pk = cursor.fetchone()[0]


def _execute_together(writes: list[tuple[str, list[Any]]]) -> None:
    """Run statements whose results nobody reads. In a pipeline (see ``_transaction``) they
    are only queued, and travel to the server with the next statement whose result is read,
    or with the Sync that ends the pipeline.

    On PostgreSQL several writes go as one statement, each a data-modifying WITH query:
    they change different rows, so running them together changes nothing but the cost (one
    statement to send, start and answer instead of one per write), most of it paid while
    the account is locked."""
    if connection.vendor == "postgresql" and len(writes) > 1:
        writes = [(_together(tuple(sql for sql, _ in writes)),
                   [value for _, params in writes for value in params])]
    with prepared_cursor() as cursor:
        for sql, params in writes:
            cursor.execute(sql, params)


@functools.lru_cache(maxsize=64)
def _together(statements: tuple[str, ...]) -> str:
    """Writes as one statement of data-modifying WITH queries (a posting's few shapes)."""
    return "WITH " + ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(statements)) + " SELECT"


OnCommit = Callable[[Callable[[], object]], object]


@contextlib.contextmanager
def _transaction() -> Iterator[OnCommit]:
    """A posting's transaction; it gives what to call with a callback to run once the
    transaction has committed (never, if it rolls back).

    At top level on PostgreSQL, when nothing observes the connection's queries (see
    ``ledger.db.unobserved``), the posting runs in psycopg's pipeline mode as the
    pipeline's own transaction: in PostgreSQL's extended query protocol the statements
    sent before a Sync form one transaction, committed when the Sync arrives, or rolled
    back if one of them failed. A statement whose result is not read waits for the next
    one that is, so the posting makes two round trips (the lock and its reads; its writes
    and the Sync) and holds the account lock for one of them and the Python between; a
    COMMIT statement would add a send of its own under the lock. When the rule refuses,
    BEGIN and ROLLBACK go before the Sync, so nothing the posting did (a job row it made)
    is kept. Django's atomic block is left out there because its bookkeeping
    cost more than the posting's own statements, and so is psycopg's own transaction
    handling: with autocommit off it waits for BEGIN's answer before sending anything
    else, a round trip of its own, and its rollback forgets the connection's prepared
    statements. Django therefore sees autocommit on during such a posting: code run inside
    one may use the ORM's plain queries and ``create``, but must not open an atomic block
    of its own (psycopg refuses it, since the connection is in a transaction Django does
    not know of).

    Otherwise it is Django's atomic block: inside an enclosing transaction a savepoint,
    since there the writes would only be sent after the savepoint was released, and an
    error could no longer be rolled back to it."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or db.in_atomic_block or not unobserved(db):
        with transaction.atomic(using=db.alias):
            yield transaction.on_commit
        return
    committed: list[Callable[[], object]] = []
    db.ensure_connection()
    with db.wrap_database_errors, db.connection.pipeline():
        try:
            yield committed.append
        except (DatabaseError, psycopg.Error):
            raise  # a statement failed: the pipeline is aborted, and its Sync rolls back
        except BaseException:
            # The rule refused (or Python failed) with the transaction sound: end it
            # before the Sync, which would commit it. BEGIN first makes it an explicit
            # transaction, its statements so far included, for ROLLBACK to end: a bare
            # ROLLBACK ends it too, but the server logs a warning each time.
            _execute_together([("BEGIN", [])])
            _execute_together([("ROLLBACK", [])])
            raise
    for callback in committed:
        callback()


def _copy_totals(source: Account, target: Account) -> None:
    if source is not target:
        target.balance, target.held = source.balance, source.held


def _require_positive(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidPosting("Amounts are positive whole numbers of credits.")


def _lots_in_draw_order(acct: Account) -> list[Lot]:
    with prepared_cursor() as cursor:
        cursor.execute(_LIVE_LOTS, [acct.pk])
        return _lots_from_rows(acct, cursor.fetchall())


def _refund_plan(
    entries: list[Entry], amount: int, moment: dt.datetime
) -> tuple[list[tuple[Lot, int]], int, int]:
    """Split a refund: first the share no lot covered (an unlimited account's overdraft),
    then live lots in reverse draw order, and last the forfeited share of expired lots."""
    refund_ids = [e.pk for e in entries if e.kind == EntryKind.REFUND]
    debit_ids = [e.pk for e in entries if e.kind == EntryKind.DEBIT]
    net_taken: dict[int, int] = {}
    for lot_id, total in (
        LotDraw.objects.filter(entry_id__in=debit_ids + refund_ids)
        .values_list("lot_id")
        .annotate(total=Sum("amount"))
    ):
        net_taken[lot_id] = -total
    consumed = -sum(e.amount for e in entries if e.kind == EntryKind.DEBIT)
    taken_from_lots = -(
        LotDraw.objects.filter(entry_id__in=debit_ids).aggregate(t=Sum("amount"))["t"] or 0
    )
    returned_to_lots = (
        LotDraw.objects.filter(entry_id__in=refund_ids).aggregate(t=Sum("amount"))["t"] or 0
    )
    refunded_outside_lots = sum(
        e.amount for e in entries if e.kind == EntryKind.REFUND
    ) - returned_to_lots
    overdraft_part = min(amount, consumed - taken_from_lots - refunded_outside_lots)
    left = amount - overdraft_part
    lots = Lot.objects.in_bulk(net_taken.keys())
    order = sorted(
        (lots[i] for i, n in net_taken.items() if n > 0),
        key=lambda lot: (lot.expires_at is None, lot.expires_at or moment, lot.created_at, lot.pk),
        reverse=True,
    )
    returns = []
    for lot in order:
        if left == 0 or lot.is_expired_at(moment):
            continue
        give = min(net_taken[lot.pk], left)
        returns.append((lot, give))
        left -= give
    return returns, overdraft_part, left
