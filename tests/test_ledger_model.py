"""The ledger against a plain in-memory model of one account.

Hypothesis drives top-ups, debits, reserves, settles, releases, refunds, expiry and the
passing of time; after every step the stored account must match the model and pass every
invariant `check_ledger` checks."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger import postings
from ledger.checks import account_breaks
from ledger.models import Account, Lot, LotSource

# Transactional, so each posting commits the way it does in production (on PostgreSQL,
# in pipeline mode); every example works on an account of its own.
pytestmark = [pytest.mark.ledger, pytest.mark.django_db(transaction=True)]

START = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


@dataclass
class ModelLot:
    remaining: int
    expires_at: dt.datetime | None
    order: int
    expired: bool = False


@dataclass
class ModelAccount:
    """What the ledger should do, written as plainly as possible."""

    lots: list[ModelLot] = field(default_factory=list)
    holds: dict[int, int] = field(default_factory=dict)
    # job -> list of (lot index, credits taken), and what has been refunded
    draws: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots)

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    def refused(self, snapshot: list[ModelLot]) -> None:
        """A refused posting changes nothing, not even the expiry it ran first."""
        self.lots = snapshot

    def expire(self, now: dt.datetime) -> None:
        for lot in self.lots:
            if lot.expires_at is not None and lot.expires_at <= now and not lot.expired:
                lot.remaining, lot.expired = 0, True

    def draw_order(self) -> list[int]:
        live = [i for i, lot in enumerate(self.lots) if lot.remaining > 0]
        return sorted(live, key=lambda i: (self.lots[i].expires_at is None,
                                           self.lots[i].expires_at or START, self.lots[i].order))

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

    def refund(self, job: str, amount: int, now: dt.datetime) -> int:
        net: dict[int, int] = {}
        for i, credits in self.draws[job]:
            net[i] = net.get(i, 0) + credits
        order = sorted(net, key=lambda i: (self.lots[i].expires_at is None,
                                           self.lots[i].expires_at or now, self.lots[i].order),
                       reverse=True)
        credited = 0
        for i in order:
            lot = self.lots[i]
            if amount == 0 or lot.expired or (lot.expires_at and lot.expires_at <= now):
                continue
            give = min(net[i], amount)
            lot.remaining += give
            self.draws[job].append((i, -give))
            amount -= give
            credited += give
        return credited


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = postings.open_account(f"model-{uuid.uuid4().hex[:12]}")
        self.model = ModelAccount()
        self.now = START
        self.jobs = 0

    def _key(self) -> str:
        return str(uuid.uuid4())

    @initialize()
    def start(self) -> None:
        self.now = START

    @rule(minutes=st.integers(1, 60 * 24 * 3))
    def time_passes(self, minutes: int) -> None:
        self.now += dt.timedelta(minutes=minutes)

    @rule(amount=st.integers(1, 500),
          source=st.sampled_from([LotSource.PURCHASE, LotSource.SUBSCRIPTION, LotSource.PROMOTIONAL]),
          days=st.one_of(st.none(), st.integers(1, 10)))
    def top_up(self, amount: int, source: LotSource, days: int | None) -> None:
        expires = None if days is None or source == LotSource.PURCHASE else self.now + dt.timedelta(days=days)
        postings.post_top_up(self.account, amount, key=self._key(), source=source, operation="top_up",
                             expires_at=expires, now=self.now)
        self.model.lots.append(ModelLot(amount, expires, len(self.model.lots)))

    @rule(amount=st.integers(1, 400))
    def debit(self, amount: int) -> None:
        snapshot = copy.deepcopy(self.model.lots)
        self.model.expire(self.now)
        job = f"job-{self.jobs}"
        try:
            postings.debit(self.account, amount, key=self._key(), operation="op",
                           job=postings.JobInfo(job), now=self.now)
        except postings.InsufficientCredits:
            assert self.model.balance - self.model.held < amount
            self.model.refused(snapshot)
            return
        assert self.model.balance - self.model.held >= amount
        self.jobs += 1
        self.model.take(amount, job)
        self.model.consumed[job] = amount

    @rule(amount=st.integers(1, 300))
    def reserve(self, amount: int) -> None:
        snapshot = copy.deepcopy(self.model.lots)
        self.model.expire(self.now)
        try:
            receipt = postings.reserve(self.account, amount, key=self._key(), operation="op", now=self.now,
                                       ttl=dt.timedelta(days=30))
        except postings.InsufficientCredits:
            assert self.model.balance - self.model.held < amount
            self.model.refused(snapshot)
            return
        assert receipt.hold_id is not None
        self.model.holds[receipt.hold_id] = amount

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), amount=st.integers(0, 400))
    def settle(self, data: st.DataObject, amount: int) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        snapshot = copy.deepcopy(self.model.lots)
        self.model.expire(self.now)
        others = self.model.held - self.model.holds[hold_id]
        try:
            postings.settle(self.account, hold_id, amount, key=self._key(), now=self.now)
        except postings.InsufficientCredits:
            assert self.model.balance - others < amount
            self.model.refused(snapshot)
            return
        assert self.model.balance - others >= amount
        del self.model.holds[hold_id]
        self.model.take(amount, None)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        postings.release(self.account, hold_id, key=self._key(), now=self.now)
        del self.model.holds[hold_id]
        with pytest.raises(postings.HoldNotPending):
            postings.release(self.account, hold_id, key=self._key(), now=self.now)

    @precondition(lambda self: self.model.consumed)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(sorted(self.model.consumed)))
        left = self.model.consumed[job] - self.model.refunded.get(job, 0)
        amount = data.draw(st.integers(1, max(left, 1) + 20))
        if amount > left:
            with pytest.raises(postings.InvalidPosting):
                postings.refund(self.account, job, amount, key=self._key(), operation="refund", now=self.now)
            return
        receipt = postings.refund(self.account, job, amount, key=self._key(), operation="refund",
                                  now=self.now)
        credited = self.model.refund(job, amount, self.now)
        assert (receipt.amount, receipt.forfeited) == (credited, amount - credited)
        self.model.refunded[job] = self.model.refunded.get(job, 0) + amount

    @rule()
    def expire(self) -> None:
        postings.expire_lots(self.account, now=self.now)
        self.model.expire(self.now)

    @invariant()
    def matches_the_model_and_the_invariants_hold(self) -> None:
        account = Account.objects.get(pk=self.account.pk)
        assert (account.balance, account.held) == (self.model.balance, self.model.held)
        assert account.available == max(self.model.balance - self.model.held, 0)
        stored = list(Lot.objects.filter(account=account).order_by("id").values_list("remaining", flat=True))
        assert stored == [lot.remaining for lot in self.model.lots]
        assert account_breaks(account) == []


def test_the_ledger_behaves_like_its_model() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=60, stateful_step_count=30, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
