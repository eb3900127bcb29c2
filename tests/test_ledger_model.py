"""The ledger against a plain in-memory model of one account.

Hypothesis drives top-ups, debits, adjustments, reserves, settles, releases, refunds,
expiry of lots and of holds, batches of postings, a budget on one project (its limit
changed now and then), and the passing of time. Each step is
first predicted by the model, then posted; the outcome must be the predicted one, and after
every step the stored account must match the model and pass every invariant
`check_ledger` checks."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger import budgets, postings
from ledger.checks import account_breaks
from ledger.models import Account, Budget, BudgetMonth, Lot, LotSource

# Transactional, so each posting commits the way it does in production; every example
# works on an account of its own.
pytestmark = [pytest.mark.ledger, pytest.mark.django_db(transaction=True)]

START = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
BUDGETED = "vision"  # the project with a budget
Refusal = type[postings.LedgerError] | None


@dataclass
class ModelLot:
    remaining: int
    expires_at: dt.datetime | None
    order: int
    expired: bool = False

    def past_expiry(self, now: dt.datetime) -> bool:
        return self.expired or (self.expires_at is not None and self.expires_at <= now)


@dataclass
class ModelHold:
    amount: int
    expires_at: dt.datetime
    budgeted: bool = False  # a hold for a job of the budget's project


@dataclass
class ModelBudget:
    """The budget on BUDGETED: charges of its jobs each month (net of refunds, never below
    0) plus what its pending holds keep may not pass its limit."""

    limit: int = 400
    used: dict[dt.date, int] = field(default_factory=dict)

    def month(self, now: dt.datetime) -> dt.date:
        return now.date().replace(day=1)

    def over(self, used_now: int, held: int, amount: int) -> bool:
        return used_now + held + amount > self.limit

    def count(self, now: dt.datetime, amount: int) -> None:
        month = self.month(now)
        self.used[month] = max(self.used.get(month, 0) + amount, 0)


@dataclass
class ModelAccount:
    """What the ledger should do, written as plainly as possible (DESIGN.md's rules)."""

    lots: list[ModelLot] = field(default_factory=list)
    holds: dict[int, ModelHold] = field(default_factory=dict)
    # job -> list of (lot index, credits taken; negative when given back)
    draws: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    budget: ModelBudget = field(default_factory=ModelBudget)
    budgeted_jobs: set[str] = field(default_factory=set)

    def budget_held(self) -> int:
        return sum(hold.amount for hold in self.holds.values() if hold.budgeted)

    def budget_refuses(
        self, amount: int, now: dt.datetime, budgeted: bool, hold: ModelHold | None = None
    ) -> bool:
        if not budgeted:
            return False
        used_now = self.budget.used.get(self.budget.month(now), 0)
        return self.budget.over(used_now, self.budget_held() - (hold.amount if hold else 0), amount)

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    @property
    def held(self) -> int:
        return sum(hold.amount for hold in self.holds.values())

    @property
    def available(self) -> int:
        return self.balance - self.held

    def draw_order(self) -> list[int]:
        """Soonest expiry first, never-expiring last, oldest first among equals."""
        live = [i for i, lot in enumerate(self.lots) if lot.remaining > 0]
        return sorted(
            live,
            key=lambda i: (
                self.lots[i].expires_at is None,
                self.lots[i].expires_at or START,
                self.lots[i].order,
            ),
        )

    def expire(self, now: dt.datetime) -> None:
        """Lots past their expiry lose what remains, except what pending holds stand on: lots
        not yet due cover the holds first, then the due lots a settle would draw first."""
        not_due = sum(lot.remaining for lot in self.lots if not lot.past_expiry(now))
        promised = max(self.held - not_due, 0)
        for i in self.draw_order():
            lot = self.lots[i]
            if lot.past_expiry(now):
                keep = min(lot.remaining, promised)
                promised -= keep
                lot.remaining, lot.expired = keep, keep == 0

    def take(self, amount: int, job: str | None) -> None:
        for i in self.draw_order():
            if amount == 0:
                break
            give = min(self.lots[i].remaining, amount)
            self.lots[i].remaining -= give
            amount -= give
            if job:
                self.draws.setdefault(job, []).append((i, give))
        assert amount == 0

    def give_back(self, job: str, amount: int, now: dt.datetime) -> int:
        """Return a refund to the job's lots, latest-expiring first; lots past their expiry
        are skipped (that share is forfeited). Returns the credits returned."""
        net: dict[int, int] = {}
        for i, credits in self.draws[job]:
            net[i] = net.get(i, 0) + credits
        order = sorted(
            net,
            key=lambda i: (
                self.lots[i].expires_at is None,
                self.lots[i].expires_at or now,
                self.lots[i].order,
            ),
            reverse=True,
        )
        credited = 0
        for i in order:
            lot = self.lots[i]
            if amount == 0 or net[i] <= 0 or lot.past_expiry(now):
                continue
            give = min(net[i], amount)
            lot.remaining += give
            self.draws[job].append((i, -give))
            amount -= give
            credited += give
        return credited

    # Each posting: change the model as the ledger should, and say whether it is refused.

    def debit(self, amount: int, job: str | None, now: dt.datetime) -> Refusal:
        snapshot = copy.deepcopy(self.lots)
        self.expire(now)
        if self.available < amount:
            self.lots = snapshot  # a refused posting changes nothing, not even the expiry
            return postings.InsufficientCredits
        budgeted = job in self.budgeted_jobs
        if self.budget_refuses(amount, now, budgeted):
            self.lots = snapshot
            return postings.BudgetExceeded
        self.take(amount, job)
        if job:
            self.consumed[job] = amount
        if budgeted:
            self.budget.count(now, amount)
        return None

    def reserve(
        self, token: int, amount: int, expires_at: dt.datetime, now: dt.datetime, budgeted: bool = False
    ) -> Refusal:
        snapshot = copy.deepcopy(self.lots)
        self.expire(now)
        if self.available < amount:
            self.lots = snapshot
            return postings.InsufficientCredits
        if self.budget_refuses(amount, now, budgeted):
            self.lots = snapshot
            return postings.BudgetExceeded
        self.holds[token] = ModelHold(amount, expires_at, budgeted)
        return None

    def settle(self, hold_id: int, amount: int, now: dt.datetime) -> Refusal:
        snapshot = copy.deepcopy(self.lots)
        self.expire(now)
        hold = self.holds[hold_id]
        if self.balance - (self.held - hold.amount) < amount:
            self.lots = snapshot
            return postings.InsufficientCredits
        if amount > hold.amount and self.budget_refuses(amount, now, hold.budgeted, hold):
            self.lots = snapshot
            return postings.BudgetExceeded
        self.take(amount, None)
        if hold.budgeted:
            self.budget.count(now, amount)
        del self.holds[hold_id]
        self.expire(now)  # the credits the hold stood on are no longer promised
        return None

    def release(self, hold_id: int, now: dt.datetime) -> Refusal:
        if hold_id not in self.holds:
            return postings.HoldNotPending
        del self.holds[hold_id]
        self.expire(now)
        return None

    def refund(self, job: str, amount: int, now: dt.datetime) -> tuple[Refusal, int]:
        if amount > self.consumed[job] - self.refunded.get(job, 0):
            return postings.InvalidPosting, 0
        self.refunded[job] = self.refunded.get(job, 0) + amount
        credited = self.give_back(job, amount, now)
        if job in self.budgeted_jobs:
            self.budget.count(now, -credited)
        return None, credited


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = postings.open_account(f"model-{uuid.uuid4().hex[:12]}")
        budgets.set_budget(self.account, "project", BUDGETED, ModelBudget.limit)
        self.model = ModelAccount()
        self.now = START
        self.jobs = 0
        self.resolved: list[int] = []  # holds settled, released or expired

    def _key(self) -> str:
        return str(uuid.uuid4())

    def _job(self, budgeted: bool = False) -> postings.JobInfo:
        """A new job; ``budgeted``: of the budget's project."""
        self.jobs += 1
        name = f"job-{self.jobs}"
        if budgeted:
            self.model.budgeted_jobs.add(name)
        return postings.JobInfo(name, project=BUDGETED if budgeted else "elsewhere")

    @rule(limit=st.integers(0, 600))
    def change_the_budget(self, limit: int) -> None:
        budgets.set_budget(self.account, "project", BUDGETED, limit)
        self.model.budget.limit = limit

    @initialize()
    def start(self) -> None:
        self.now = START

    @rule(hours=st.integers(1, 48))
    def time_passes(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @precondition(lambda self: self._next_expiry() is not None)
    @rule()
    def a_lot_reaches_its_expiry(self) -> None:
        self.now = self._next_expiry() or self.now

    def _next_expiry(self) -> dt.datetime | None:
        return min(
            (
                lot.expires_at
                for lot in self.model.lots
                if lot.expires_at is not None and lot.expires_at > self.now
            ),
            default=None,
        )

    @rule(
        amount=st.integers(1, 500),
        source=st.sampled_from([LotSource.PURCHASE, LotSource.SUBSCRIPTION, LotSource.PROMOTIONAL]),
        hours=st.one_of(st.none(), st.integers(1, 72)),
    )
    def top_up(self, amount: int, source: LotSource, hours: int | None) -> None:
        expires = (
            None if hours is None or source == LotSource.PURCHASE else self.now + dt.timedelta(hours=hours)
        )
        postings.post_top_up(
            self.account,
            amount,
            key=self._key(),
            source=source,
            operation="top_up",
            expires_at=expires,
            now=self.now,
        )
        self.model.lots.append(ModelLot(amount, expires, len(self.model.lots)))

    @rule(amount=st.integers(1, 400), budgeted=st.booleans())
    def debit(self, amount: int, budgeted: bool) -> None:
        job = self._job(budgeted)
        expected = self.model.debit(amount, job.external_id, self.now)
        _outcome_is(
            expected,
            lambda: postings.debit(
                self.account, amount, key=self._key(), operation="op", job=job, now=self.now
            ),
        )

    @rule(amount=st.integers(-300, 300).filter(bool))
    def adjust(self, amount: int) -> None:
        if amount > 0:
            self.model.lots.append(ModelLot(amount, None, len(self.model.lots)))
            expected = None
        else:
            expected = self.model.debit(-amount, None, self.now)
        _outcome_is(
            expected, lambda: postings.adjust(self.account, amount, key=self._key(), memo="fix", now=self.now)
        )

    @rule(amount=st.integers(1, 300), hours=st.integers(1, 24 * 5), budgeted=st.booleans())
    def reserve(self, amount: int, hours: int, budgeted: bool) -> None:
        expected = self.model.reserve(-1, amount, self.now + dt.timedelta(hours=hours), self.now, budgeted)
        job = self._job(budgeted)
        receipt = _outcome_is(
            expected,
            lambda: postings.reserve(
                self.account,
                amount,
                key=self._key(),
                operation="op",
                job=job,
                now=self.now,
                ttl=dt.timedelta(hours=hours),
            ),
        )
        if receipt is not None:
            assert receipt.hold_id is not None
            self.model.holds[receipt.hold_id] = self.model.holds.pop(-1)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), amount=st.integers(0, 400))
    def settle(self, data: st.DataObject, amount: int) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        promised = self.model.holds[hold_id].amount
        expected = self.model.settle(hold_id, amount, self.now)
        if amount <= promised:
            assert expected is None  # a hold is a promise
        _outcome_is(
            expected, lambda: postings.settle(self.account, hold_id, amount, key=self._key(), now=self.now)
        )
        if expected is None:
            self.resolved.append(hold_id)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        self.model.release(hold_id, self.now)
        postings.release(self.account, hold_id, key=self._key(), now=self.now)
        self.resolved.append(hold_id)
        with pytest.raises(postings.HoldNotPending):
            postings.release(self.account, hold_id, key=self._key(), now=self.now)

    @precondition(lambda self: self.model.consumed)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(sorted(self.model.consumed)))
        left = self.model.consumed[job] - self.model.refunded.get(job, 0)
        amount = data.draw(st.integers(1, max(left, 1) + 20))
        expected, credited = self.model.refund(job, amount, self.now)
        receipt = _outcome_is(
            expected,
            lambda: postings.refund(
                self.account, job, amount, key=self._key(), operation="refund", now=self.now
            ),
        )
        if receipt is not None:
            assert (receipt.amount, receipt.forfeited) == (credited, amount - credited)

    @rule()
    def expire_lots(self) -> None:
        postings.expire_lots(self.account, now=self.now)
        self.model.expire(self.now)

    @rule()
    def expire_holds(self) -> None:
        postings.release_expired_holds(now=self.now)
        for hold_id, hold in list(self.model.holds.items()):
            if hold.expires_at <= self.now:
                self.model.release(hold_id, self.now)
                self.resolved.append(hold_id)

    @rule(
        kinds=st.lists(
            st.sampled_from(["debit", "reserve", "settle", "release", "refund"]), min_size=1, max_size=6
        ),
        amounts=st.lists(st.integers(0, 300), min_size=6, max_size=6),
    )
    def batch(self, kinds: list[str], amounts: list[int]) -> None:
        """Several postings in one call: each stands or falls exactly as if sent alone."""
        items: list[postings.Posting] = []
        expected: list[tuple[Refusal, int | None]] = []  # refusal, and a new hold's token
        pk = self.account.pk
        for n, (kind, amount) in enumerate(zip(kinds, amounts, strict=False)):
            token = None
            if kind == "debit" and amount:
                job = self._job(budgeted=n % 2 == 0)
                items.append(
                    postings.Posting.debit(pk, key=self._key(), operation="op", amount=amount, job=job)
                )
                refusal = self.model.debit(amount, job.external_id, self.now)
            elif kind == "reserve" and amount:
                token = -1 - n
                job = self._job(budgeted=n % 2 == 1)
                items.append(
                    postings.Posting.reserve(pk, key=self._key(), operation="op", amount=amount, job=job)
                )
                refusal = self.model.reserve(
                    token, amount, self.now + postings.DEFAULT_HOLD_TTL, self.now, budgeted=n % 2 == 1
                )
            elif kind == "settle" and [h for h in self.model.holds if h > 0]:
                hold_id = max(h for h in self.model.holds if h > 0)
                items.append(postings.Posting.settle(pk, hold_id, key=self._key(), amount=amount))
                refusal = self.model.settle(hold_id, amount, self.now)
            elif kind == "release" and self.resolved:
                hold_id = self.resolved[-1]  # resolved already: refused alone, the rest goes on
                items.append(postings.Posting.release(pk, hold_id, key=self._key()))
                refusal = postings.HoldNotPending
            elif kind == "refund" and self.model.consumed:
                refunded = sorted(self.model.consumed)[0]
                items.append(
                    postings.Posting.refund(pk, refunded, amount or 1, key=self._key(), operation="refund")
                )
                refusal, _ = self.model.refund(refunded, amount or 1, self.now)
            else:
                continue
            expected.append((refusal, token))
        results = postings.post_batch(items, now=self.now)
        for (refusal, token), result in zip(expected, results, strict=True):
            if refusal is None:
                assert isinstance(result, postings.Receipt), result
                if token is not None:
                    assert result.hold_id is not None
                    self.model.holds[result.hold_id] = self.model.holds.pop(token)
            else:
                assert isinstance(result, refusal), (refusal, result)

    @invariant()
    def matches_the_model_and_the_invariants_hold(self) -> None:
        account = Account.objects.get(pk=self.account.pk)
        assert (account.balance, account.held) == (self.model.balance, self.model.held)
        assert account.available == max(self.model.available, 0)
        stored = list(Lot.objects.filter(account=account).order_by("id").values_list("remaining", flat=True))
        assert stored == [lot.remaining for lot in self.model.lots]
        assert account_breaks(account) == []
        budget = Budget.objects.get(account=account)
        assert budget.monthly_limit == self.model.budget.limit
        assert budget.held == self.model.budget_held()
        stored_used = dict(BudgetMonth.objects.filter(budget=budget).values_list("month", "used"))
        assert stored_used == {
            month: used for month, used in self.model.budget.used.items() if month in stored_used
        }
        assert all(used == 0 for month, used in self.model.budget.used.items() if month not in stored_used)


def _outcome_is[T](refusal: Refusal, post: Callable[[], T]) -> T | None:
    """Post, and check the ledger refused exactly when (and as) the model said it would."""
    if refusal is None:
        return post()
    with pytest.raises(refusal):
        post()
    return None


def test_the_ledger_behaves_like_its_model() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
