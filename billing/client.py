"""A small Python client for Tally's JSON API (stdlib only).

from billing.client import Client, InsufficientCreditsError

client = Client("http://127.0.0.1:8000", api_key="tly_...")
print(client.credits.balance().credits_remaining)
for entry in client.credits.iter(page_size=100):
    print(entry.created_at, entry.operation, entry.amount)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

# --- Errors -----------------------------------------------------------------------------


class TallyError(Exception):
    """The API refused a request; ``code`` and ``message`` come from its error body."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail


class InsufficientCreditsError(TallyError):
    """HTTP 402: the available credits do not cover the request; nothing was changed."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(status, code, message, detail)
        self.required: int = detail["required"]
        self.remaining: int = detail["remaining"]
        self.upgrade_url: str = detail["upgrade_url"]


class BudgetExceededError(TallyError):
    """HTTP 402 ``budget_exceeded``: the posting would take a budget (of the job's project
    or user, or of this key) past its monthly limit; nothing was changed."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(status, code, message, detail)
        self.required: int = detail["required"]
        self.budget = Budget(**detail["budget"])


class IdempotencyConflictError(TallyError):
    """HTTP 409: the Idempotency-Key was used before with other parameters."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(status, code, message, detail)
        self.fields: list[str] = detail.get("fields", [])


class RateLimitedError(TallyError):
    """HTTP 429: too many requests with this key; retry after ``retry_after`` seconds."""

    def __init__(self, status: int, code: str, message: str, detail: dict[str, Any]) -> None:
        super().__init__(status, code, message, detail)
        self.retry_after: int = detail.get("retry_after", 1)


ERRORS: dict[int, type[TallyError]] = {
    402: InsufficientCreditsError,
    409: IdempotencyConflictError,
    429: RateLimitedError,
}
# A code whose error has its own class, whatever its status shares with others.
ERROR_CODES: dict[str, type[TallyError]] = {"budget_exceeded": BudgetExceededError}


def _error(status: int, error: dict[str, Any]) -> TallyError:
    code = error.get("code", "http_error")
    kind = ERROR_CODES.get(code) or ERRORS.get(status, TallyError)
    return kind(status, code, error.get("message", ""), error)


# --- Results ----------------------------------------------------------------------------


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


@dataclasses.dataclass(frozen=True)
class Job:
    external_id: str
    name: str = ""
    project: str = ""
    user: str = ""
    resource_class: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A ledger entry. ``amount < 0`` consumed credits; ``> 0`` added them."""

    id: int
    created_at: dt.datetime
    operation: str
    amount: int
    balance_after: int
    job: Job | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            id=data["id"],
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            operation=data["operation"],
            amount=data["amount"],
            balance_after=data["balance_after"],
            job=Job(**data["job"]) if data.get("job") else None,
        )


@dataclasses.dataclass(frozen=True)
class CreditBalance:
    credits_remaining: int
    credits_available: int
    credits_held: int
    credits_monthly_allowance: int | None
    credits_reset_at: dt.datetime
    unlimited: bool
    recent_history: list[Entry]


@dataclasses.dataclass(frozen=True)
class HistoryPage:
    """One page of history, newest first; iterate it for its entries."""

    entries: list[Entry]
    has_more: bool
    next_before_id: int | None

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


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
    budget: Budget | None = None  # the budget that would refuse it


@dataclasses.dataclass(frozen=True)
class Budget:
    """A monthly limit on a project's, a user's or a key's charges, with this month's figures."""

    scope: str
    name: str
    monthly_limit: int
    used: int
    held: int
    remaining: int


@dataclasses.dataclass(frozen=True)
class Posting:
    """What a debit, hold, settle, release or refund did."""

    action: str
    amount: int
    entry_id: int | None
    hold_id: int | None
    forfeited: int
    credits_remaining: int
    credits_held: int
    credits_available: int
    created_at: dt.datetime
    idempotency_key: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Posting:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["created_at"] = dt.datetime.fromisoformat(data["created_at"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class UsageDay:
    """One day: ``balance`` is the previous day's plus ``top_ups`` less ``credits_used``,
    which is ``debits - refunds + expired + adjustments``."""

    date: dt.date
    top_ups: int
    credits_used: int
    debits: int
    refunds: int
    expired: int
    adjustments: int
    balance: int


# --- Batch items (``Client.batch``) -------------------------------------------------------


def debit_item(
    operation: str, quantity: int, *, idempotency_key: str, job: Job | None = None
) -> dict[str, Any]:
    return {
        "kind": "debit",
        "idempotency_key": idempotency_key,
        "operation": operation,
        "quantity": quantity,
        "job": dataclasses.asdict(job) if job else None,
    }


def hold_item(
    operation: str,
    quantity: int | None = None,
    *,
    idempotency_key: str,
    amount: int | None = None,
    job: Job | None = None,
) -> dict[str, Any]:
    return {
        "kind": "hold",
        "idempotency_key": idempotency_key,
        "operation": operation,
        "quantity": quantity,
        "amount": amount,
        "job": dataclasses.asdict(job) if job else None,
    }


def settle_item(
    hold_id: int, amount: int | None = None, *, idempotency_key: str, quantity: int | None = None
) -> dict[str, Any]:
    return {
        "kind": "settle",
        "idempotency_key": idempotency_key,
        "hold_id": hold_id,
        "amount": amount,
        "quantity": quantity,
    }


def release_item(hold_id: int, *, idempotency_key: str) -> dict[str, Any]:
    return {"kind": "release", "idempotency_key": idempotency_key, "hold_id": hold_id}


def refund_item(job: str | Job, amount: int, operation: str, *, idempotency_key: str) -> dict[str, Any]:
    return {
        "kind": "refund",
        "idempotency_key": idempotency_key,
        "job": job.external_id if isinstance(job, Job) else job,
        "amount": amount,
        "operation": operation,
    }


# --- The client -------------------------------------------------------------------------


class Client:
    """One organization's view of the API, through its key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/") + "/api/v1/"
        self._api_key = api_key
        self.timeout = timeout
        self.credits = Credits(self)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        url = self._prefix + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._netloc, timeout=self.timeout)
        try:
            conn.request(method, url, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"null")
        except ValueError:  # not the API's JSON: a proxy's or server's error page
            text = raw.decode(errors="replace").strip()[:200]
            raise TallyError(response.status, "http_error", text, {}) from None
        if response.status >= 400:
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise _error(response.status, error)
        return data

    def _post(self, path: str, body: dict[str, Any] | None, key: str | None) -> Posting:
        return Posting.from_json(
            self.request("POST", path, body=body, idempotency_key=key or uuid.uuid4().hex)
        )

    def debit(
        self, operation: str, quantity: int, *, job: Job | None = None, idempotency_key: str | None = None
    ) -> Posting:
        body = {"operation": operation, "quantity": quantity, "job": dataclasses.asdict(job) if job else None}
        return self._post("debits", body, idempotency_key)

    def reserve(
        self,
        operation: str,
        quantity: int | None = None,
        *,
        amount: int | None = None,
        job: Job | None = None,
        idempotency_key: str | None = None,
    ) -> Posting:
        body = {
            "operation": operation,
            "quantity": quantity,
            "amount": amount,
            "job": dataclasses.asdict(job) if job else None,
        }
        return self._post("holds", body, idempotency_key)

    def settle(
        self,
        hold_id: int,
        amount: int | None = None,
        *,
        quantity: int | None = None,
        idempotency_key: str | None = None,
    ) -> Posting:
        return self._post(
            f"holds/{hold_id}/settle", {"amount": amount, "quantity": quantity}, idempotency_key
        )

    def release(self, hold_id: int, *, idempotency_key: str | None = None) -> Posting:
        return self._post(f"holds/{hold_id}/release", None, idempotency_key)

    def refund(
        self, job: str | Job, amount: int, operation: str, *, idempotency_key: str | None = None
    ) -> Posting:
        external_id = job.external_id if isinstance(job, Job) else job
        body = {"job": external_id, "amount": amount, "operation": operation}
        return self._post("refunds", body, idempotency_key)

    def batch(self, items: list[dict[str, Any]]) -> list[Posting | TallyError]:
        """Up to 1,000 postings in one request (made with ``debit_item``, ``hold_item``,
        ``settle_item``, ``release_item``, ``refund_item``). Each is answered in its place,
        as if sent alone: its Posting, or the error it would have raised. A retried batch
        replays each posting (every item carries its own idempotency key)."""
        data = self.request("POST", "batch", body={"postings": items})
        results: list[Posting | TallyError] = []
        for answer in data["results"]:
            status = answer["status"]
            if "error" in answer:
                error = answer["error"]
                results.append(_error(status, error))
            else:
                results.append(Posting.from_json(answer))
        return results

    def usage(self, days: int = 30) -> list[UsageDay]:
        data = self.request("GET", "usage", params={"days": days})
        return [UsageDay(**{**row, "date": dt.date.fromisoformat(row["date"])}) for row in data["days"]]

    def budgets(self) -> list[Budget]:
        """The organization's budgets with this month's figures."""
        return [Budget(**budget) for budget in self.request("GET", "budgets")["budgets"]]

    def set_budget(self, scope: str, name: str, monthly_limit: int) -> Budget:
        """Set the monthly limit of a ``project``, ``user`` or ``api_key`` budget (scope
        ``budgets:write``)."""
        path = f"budgets/{scope}/{urllib.parse.quote(name, safe='')}"
        return Budget(**self.request("PUT", path, body={"monthly_limit": monthly_limit}))

    def remove_budget(self, scope: str, name: str) -> None:
        self.request("DELETE", f"budgets/{scope}/{urllib.parse.quote(name, safe='')}")


class Credits:
    """``client.credits``: balance, history, the auto-paging iterator and estimates."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def balance(self) -> CreditBalance:
        data = self._client.request("GET", "credits/balance")
        return CreditBalance(
            credits_remaining=data["credits_remaining"],
            credits_available=data["credits_available"],
            credits_held=data["credits_held"],
            credits_monthly_allowance=data["credits_monthly_allowance"],
            credits_reset_at=dt.datetime.fromisoformat(data["credits_reset_at"]),
            unlimited=data["unlimited"],
            recent_history=[Entry.from_json(e) for e in data["recent_history"]],
        )

    def history(self, limit: int = 50, offset: int = 0, *, before_id: int | None = None) -> HistoryPage:
        data = self._client.request(
            "GET", "credits/history", params={"limit": limit, "offset": offset, "before_id": before_id}
        )
        return HistoryPage(
            entries=[Entry.from_json(e) for e in data["entries"]],
            has_more=data["has_more"],
            next_before_id=data["next_before_id"],
        )

    def iter(self, page_size: int = 100) -> Iterator[Entry]:
        """Every entry in the audit-trail window, newest first. Pages are cut by id, so
        entries posted while iterating neither repeat nor shift a page."""
        before_id: int | None = None
        while True:
            page = self.history(limit=page_size, before_id=before_id)
            yield from page.entries
            if not page.has_more:
                return
            before_id = page.next_before_id

    def estimate(self, operation: str, quantity: int, *, project: str = "", user: str = "") -> Estimate:
        """What it would cost, and whether it would go ahead now for a job of ``project`` and
        ``user`` posted with this key (``budget``: the budget that would refuse it)."""
        params: dict[str, Any] = {"operation": operation, "quantity": quantity}
        params |= {name: value for name, value in [("project", project), ("user", user)] if value}
        data = self._client.request("GET", "credits/estimate", params=params)
        return Estimate(
            operation=data["operation"],
            quantity=data["quantity"],
            total_credits=data["total_credits"],
            credits_available=data["credits_available"],
            sufficient=data["sufficient"],
            lots=[
                LotPlan(
                    lot_id=lot["lot_id"],
                    source=lot["source"],
                    expires_at=_when(lot["expires_at"]),
                    credits=lot["credits"],
                )
                for lot in data["lots"]
            ],
            budget=Budget(**data["budget"]) if data.get("budget") else None,
        )
