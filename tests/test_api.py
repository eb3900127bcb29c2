"""The JSON API through Django's test client: every endpoint, its errors, and who may call it."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from billing.api import api, auth
from billing.api.schemas import BalanceOut
from billing.models import ApiKey, Organization, Scope
from ledger import postings
from ledger.models import Entry, Hold, IdempotencyRecord, LotSource
from tests.factories import fund, make_org

pytestmark = pytest.mark.django_db

BOTH: list[str] = [Scope.ACCOUNT_READ, Scope.USAGE_WRITE]
JOB = {
    "external_id": "run-1",
    "name": "yolox",
    "project": "shelf-detector",
    "user": "ada",
    "resource_class": "a10g",
}


def issue(org: Organization, scopes: list[str] | None = None) -> str:
    return ApiKey.issue(org, name="runner", scopes=scopes or BOTH)[1]


def call(
    method: str,
    path: str,
    key: str | None,
    body: Any = None,
    *,
    raw: str | None = None,
    idempotency_key: str | None = None,
) -> Any:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    data = raw if raw is not None else (json.dumps(body) if body is not None else "")
    return getattr(Client(), method)(
        f"/api/v1/{path}",
        data=data if method != "get" else None,
        content_type="application/json",
        headers=headers,
    )


@pytest.fixture
def key(org: Organization) -> str:
    return issue(org)


def entries(org: Organization) -> int:
    return Entry.objects.filter(account=org.account).count()


def error(response: Any) -> dict[str, Any]:
    return response.json()["error"]  # type: ignore[no-any-return]


# --- Reads ------------------------------------------------------------------------------


def test_balance_shows_remaining_available_held_and_recent_history(org: Organization, key: str) -> None:
    postings.reserve(org.account, 300, key="h1", operation="training_a10g_per_minute")
    for n in range(25):
        postings.debit(org.account, 10, key=f"d{n}", operation="image_inference", quantity=10)
    data = call("get", "credits/balance", key).json()
    assert data["credits_remaining"] == 5_000 - 250
    assert data["credits_held"] == 300
    assert data["credits_available"] == 5_000 - 250 - 300
    assert data["credits_monthly_allowance"] == 10_000
    assert data["unlimited"] is False
    reset = dt.datetime.fromisoformat(data["credits_reset_at"])
    assert reset > timezone.now() and reset.day == 1
    history = data["recent_history"]
    assert len(history) == 20
    assert history[0]["balance_after"] == 4_750 and history[0]["amount"] == -10
    assert [e["id"] for e in history] == sorted((e["id"] for e in history), reverse=True)


def test_balance_is_json_in_its_published_schema(org: Organization, key: str) -> None:
    postings.debit(
        org.account,
        10,
        key="d",
        operation="image_inference",
        quantity=10,
        job=postings.JobInfo("run-1", name="yolox", project="shelf-detector"),
    )
    response = call("get", "credits/balance", key)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = BalanceOut.model_validate(response.json())
    assert body.recent_history[0].job is not None
    assert body.recent_history[0].job.project == "shelf-detector"
    assert response.json()["recent_history"][0]["created_at"].endswith("Z")
    # Byte for byte what ninja writes for the validated schema object.
    assert response.content.decode() == api.renderer.render(
        HttpRequest(), body.model_dump(), response_status=200
    )


def test_history_pages_newest_first_with_a_cursor_that_ignores_new_entries(
    org: Organization, key: str
) -> None:
    for n in range(7):
        postings.debit(
            org.account,
            n + 1,
            key=f"d{n}",
            operation="image_inference",
            quantity=n + 1,
            job=postings.JobInfo("job-7", project="p"),
        )
    first = call("get", "credits/history?limit=3", key).json()
    assert [e["amount"] for e in first["entries"]] == [-7, -6, -5]
    assert first["entries"][0]["job"]["external_id"] == "job-7"
    assert first["has_more"] is True
    # A debit arrives between pages: the cursor keeps the next page where it was.
    postings.debit(org.account, 100, key="late", operation="image_inference", quantity=100)
    second = call("get", f"credits/history?limit=3&before_id={first['next_before_id']}", key).json()
    assert [e["amount"] for e in second["entries"]] == [-4, -3, -2]
    offset = call("get", "credits/history?limit=2&offset=1", key).json()
    assert [e["amount"] for e in offset["entries"]] == [-7, -6]
    assert offset["window_days"] == 90


def test_history_is_limited_to_the_plans_audit_trail_window(db: None) -> None:
    now = timezone.now()
    free = make_org("free")
    for days_ago in (45, 10):
        postings.post_top_up(
            free.account,
            100,
            key=f"t{days_ago}",
            source=LotSource.PURCHASE,
            operation="credit_pack_standard",
            now=now - dt.timedelta(days=days_ago),
        )
    data = call("get", "credits/history", issue(free)).json()
    assert data["window_days"] == 30
    assert [e["balance_after"] for e in data["entries"]] == [200]
    pro = make_org("professional")
    postings.post_top_up(
        pro.account,
        100,
        key="t",
        source=LotSource.PURCHASE,
        operation="credit_pack_standard",
        now=now - dt.timedelta(days=45),
    )
    assert len(call("get", "credits/history", issue(pro)).json()["entries"]) == 1


def test_balance_history_is_limited_to_the_plans_audit_trail_window(db: None) -> None:
    """Whichever order old and recent entries were posted in, the balance shows only the
    window's, as the history does."""
    now = timezone.now()
    free = make_org("free")
    for days_ago in (45, 10, 50):  # the last posted is the oldest, and has the highest id
        postings.post_top_up(
            free.account,
            100,
            key=f"t{days_ago}",
            source=LotSource.PURCHASE,
            operation="credit_pack_standard",
            now=now - dt.timedelta(days=days_ago),
        )
    history = call("get", "credits/balance", issue(free)).json()["recent_history"]
    assert [e["balance_after"] for e in history] == [200]
    postings.debit(free.account, 10, key="d", operation="image_inference", quantity=10)
    history = call("get", "credits/balance", issue(free)).json()["recent_history"]
    assert [e["amount"] for e in history] == [-10, 100]


def test_estimate_shows_the_total_the_lots_and_whether_a_hold_would_succeed(
    org: Organization, key: str
) -> None:
    data = call("get", "credits/estimate?operation=training_a10g_per_minute&quantity=30", key).json()
    assert data["total_credits"] == 300
    assert data["sufficient"] is True
    assert data["credits_available"] == 5_000
    assert sum(lot["credits"] for lot in data["lots"]) == 300
    too_much = call("get", "credits/estimate?operation=training_h100_per_minute&quantity=100", key)
    assert too_much.json()["sufficient"] is False
    assert entries(org) == 1  # the funding only: an estimate posts nothing


def test_estimate_of_an_unknown_operation_is_422(key: str) -> None:
    response = call("get", "credits/estimate?operation=teleport&quantity=1", key)
    assert response.status_code == 422
    assert error(response)["code"] == "unknown_operation"
    assert error(response)["operation"] == "teleport"


def test_usage_has_one_row_per_day_with_the_end_of_day_balance(org: Organization, key: str) -> None:
    postings.debit(org.account, 40, key="d", operation="image_inference", quantity=40)
    days = call("get", "usage?days=7", key).json()["days"]
    assert len(days) == 7
    today = days[-1]
    assert today["date"] == org.account.local_date(timezone.now()).isoformat()
    assert (today["top_ups"], today["credits_used"], today["balance"]) == (5_000, 40, 4_960)
    assert days[0]["balance"] == 0


def test_pricing_lists_the_price_table(key: str) -> None:
    prices = {p["operation"]: p for p in call("get", "pricing", key).json()["prices"]}
    assert prices["training_a10g_per_minute"]["credits_per_unit"] == 10
    assert prices["sam3_per_minute"]["minimum_credits"] == 3


# --- Postings ---------------------------------------------------------------------------


def test_debit_charges_the_price_and_a_retry_returns_the_same_answer(org: Organization, key: str) -> None:
    body = {"operation": "training_a10g_per_minute", "quantity": 30, "job": JOB}
    first = call("post", "debits", key, body, idempotency_key="run-1-minute-30")
    assert first.status_code == 201
    assert first.json()["amount"] == -300
    assert first.json()["credits_remaining"] == 4_700
    again = call("post", "debits", key, body, idempotency_key="run-1-minute-30")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert entries(org) == 2


def test_debit_without_an_idempotency_key_gets_one(org: Organization, key: str) -> None:
    response = call("post", "debits", key, {"operation": "image_inference", "quantity": 2})
    assert response.status_code == 201
    assert response.json()["idempotency_key"]


def test_same_key_with_another_body_is_a_conflict_naming_the_fields(org: Organization, key: str) -> None:
    call("post", "debits", key, {"operation": "image_inference", "quantity": 2}, idempotency_key="k")
    response = call(
        "post", "debits", key, {"operation": "image_inference", "quantity": 3}, idempotency_key="k"
    )
    assert response.status_code == 409
    assert error(response)["code"] == "idempotency_conflict"
    assert error(response)["fields"] == ["amount", "quantity"]
    assert entries(org) == 2


def test_insufficient_credits_is_402_with_the_upgrade_url_and_stores_nothing(
    org: Organization, key: str
) -> None:
    body = {"operation": "training_h100_per_minute", "quantity": 50}
    response = call("post", "debits", key, body, idempotency_key="big")
    assert response.status_code == 402
    detail = error(response)
    assert detail["code"] == "insufficient_credits"
    assert (detail["required"], detail["remaining"]) == (6_000, 5_000)
    assert detail["upgrade_url"].endswith(f"/orgs/{org.slug}/billing/")
    assert entries(org) == 1
    fund(org, 1_000)
    retried = call("post", "debits", key, body, idempotency_key="big")
    assert retried.status_code == 201
    assert retried.json()["credits_remaining"] == 0


def test_hold_then_settle_charges_the_job_and_frees_the_rest(org: Organization, key: str) -> None:
    hold = call("post", "holds", key, {"operation": "training_a100_per_minute", "quantity": 10, "job": JOB})
    assert hold.status_code == 201
    assert (hold.json()["credits_held"], hold.json()["credits_available"]) == (600, 4_400)
    hold_id = hold.json()["hold_id"]
    settled = call("post", f"holds/{hold_id}/settle", key, {"quantity": 7}, idempotency_key="s")
    assert settled.status_code == 200
    assert settled.json()["amount"] == -420
    assert (settled.json()["credits_held"], settled.json()["credits_remaining"]) == (0, 4_580)
    again = call("post", f"holds/{hold_id}/settle", key, {"quantity": 7}, idempotency_key="s")
    assert again.content == settled.content
    twice = call("post", f"holds/{hold_id}/settle", key, {"amount": 1}, idempotency_key="s2")
    assert twice.status_code == 422
    assert error(twice)["code"] == "hold_not_pending"


def test_hold_by_amount_then_release_frees_it_all(org: Organization, key: str) -> None:
    hold = call("post", "holds", key, {"operation": "sam3_per_minute", "amount": 250}).json()
    released = call("post", f"holds/{hold['hold_id']}/release", key)
    assert released.status_code == 200
    assert (released.json()["credits_held"], released.json()["credits_available"]) == (0, 5_000)
    assert Hold.objects.get(pk=hold["hold_id"]).status == "released"


def test_hold_needs_quantity_or_amount(org: Organization, key: str) -> None:
    response = call("post", "holds", key, {"operation": "sam3_per_minute"})
    assert response.status_code == 422
    assert error(response)["code"] == "validation_error"


def test_hold_beyond_available_credits_is_402(org: Organization, key: str) -> None:
    response = call("post", "holds", key, {"operation": "sam3_per_minute", "amount": 5_001})
    assert response.status_code == 402
    assert not Hold.objects.filter(account=org.account).exists()


def test_refund_returns_credits_to_the_job_up_to_what_it_consumed(org: Organization, key: str) -> None:
    call("post", "debits", key, {"operation": "training_a10g_per_minute", "quantity": 20, "job": JOB})
    refund = call("post", "refunds", key, {"job": "run-1", "amount": 50, "operation": "training_refund_a10g"})
    assert refund.status_code == 201
    assert (refund.json()["amount"], refund.json()["credits_remaining"]) == (50, 4_850)
    too_much = call("post", "refunds", key, {"job": JOB, "amount": 151, "operation": "training_refund_a10g"})
    assert too_much.status_code == 422
    assert "150 credits left to refund" in error(too_much)["message"]


def test_gauges_report_storage_and_deployments(org: Organization, key: str) -> None:
    response = call("put", "gauges", key, {"storage_bytes": 7 * 1024**3, "deployments": 3})
    assert response.status_code == 200
    assert response.json()["deployments_limit"] == 5
    org.refresh_from_db()
    assert (org.storage_bytes, org.deployments) == (7 * 1024**3, 3)


# --- Who may call what ------------------------------------------------------------------

ENDPOINTS = [
    ("get", "credits/balance", None),
    ("get", "credits/history", None),
    ("get", "credits/estimate?operation=image_inference&quantity=1", None),
    ("get", "usage", None),
    ("get", "pricing", None),
    ("post", "debits", {"operation": "image_inference", "quantity": 1, "job": JOB}),
    ("post", "holds", {"operation": "image_inference", "quantity": 1}),
    ("post", "holds/{hold}/settle", {"amount": 1}),
    ("post", "holds/{hold}/release", None),
    ("post", "refunds", {"job": "run-1", "amount": 1, "operation": "image_inference_refund"}),
    ("put", "gauges", {"storage_bytes": 1, "deployments": 1}),
    ("post", "batch", {"postings": [{"kind": "release", "idempotency_key": "b-1", "hold_id": "{hold}"}]}),
]
READS = [e for e in ENDPOINTS if e[0] == "get"]
WRITES = [e for e in ENDPOINTS if e[0] != "get"]


@pytest.fixture
def hold_id(org: Organization) -> int:
    postings.debit(org.account, 5, key="job", operation="image_inference", job=postings.JobInfo("run-1"))
    receipt = postings.reserve(org.account, 10, key="hold", operation="image_inference")
    assert receipt.hold_id is not None
    return receipt.hold_id


def ledger_state(org: Organization) -> tuple[Any, ...]:
    org.refresh_from_db()
    org.account.refresh_from_db()
    return (
        entries(org),
        org.account.balance,
        org.account.held,
        org.storage_bytes,
        list(Hold.objects.filter(account=org.account).values_list("status", flat=True)),
        IdempotencyRecord.objects.filter(account=org.account).count(),
    )


def _with_hold(body: Any, hold_id: int) -> Any:
    """The body with a batch item's ``{hold}`` made the hold's id."""
    if isinstance(body, dict) and "postings" in body:
        return {"postings": [{**item, "hold_id": hold_id} for item in body["postings"]]}
    return body


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_another_organizations_key_cannot_see_or_touch_this_one(
    org: Organization, other_org: Organization, hold_id: int, method: str, path: str, body: Any
) -> None:
    before = ledger_state(org)
    response = call(method, path.format(hold=hold_id), issue(other_org), _with_hold(body, hold_id))
    assert ledger_state(org) == before
    if path == "batch":  # the hold is not the other organization's: that item is a 404
        assert [r["status"] for r in response.json()["results"]] == [404]
    elif path == "credits/balance":
        assert response.json()["credits_remaining"] == 1_000
    elif path == "credits/history":
        assert {e["balance_after"] for e in response.json()["entries"]} == {1_000}
    elif "{hold}" in path:
        assert response.status_code == 404
    elif path == "refunds":
        assert response.status_code == 422  # no such job in the other organization
    else:
        assert response.status_code in {200, 201}


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_a_key_without_the_scope_is_403(
    org: Organization, hold_id: int, method: str, path: str, body: Any
) -> None:
    scope = Scope.USAGE_WRITE if method == "get" else Scope.ACCOUNT_READ
    before = ledger_state(org)
    response = call(method, path.format(hold=hold_id), issue(org, [scope]), _with_hold(body, hold_id))
    assert response.status_code == 403
    assert error(response)["code"] == "insufficient_scope"
    assert ledger_state(org) == before


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_a_revoked_missing_or_wrong_key_is_401(
    org: Organization, hold_id: int, method: str, path: str, body: Any
) -> None:
    raw = issue(org)
    ApiKey.objects.filter(hashed_key=ApiKey.hash(raw)).update(revoked_at=timezone.now())
    before = ledger_state(org)
    for key in (raw, None, "tly_not-a-key"):
        response = call(method, path.format(hold=hold_id), key, _with_hold(body, hold_id))
        assert response.status_code == 401
        assert error(response)["code"] == "invalid_api_key"
    assert ledger_state(org) == before


def test_a_key_revoked_after_many_requests_is_refused_on_its_next(org: Organization) -> None:
    raw = issue(org)
    assert [call("get", "credits/balance", raw).status_code for _ in range(5)] == [200] * 5
    ApiKey.objects.filter(hashed_key=ApiKey.hash(raw)).update(revoked_at=timezone.now())
    assert call("get", "credits/balance", raw).status_code == 401


MALFORMED = [
    ("debits", "{not json"),
    ("debits", json.dumps({"operation": "image_inference"})),
    ("debits", json.dumps({"operation": "image_inference", "quantity": -3})),
    ("debits", json.dumps({"operation": "image_inference", "quantity": "ten"})),
    ("holds", json.dumps({"operation": "image_inference", "quantity": 1, "amount": 1})),
    ("holds/{hold}/settle", json.dumps({"amount": -1})),
    ("holds/{hold}/settle", "[]"),
    ("refunds", json.dumps({"job": "run-1", "amount": 0, "operation": "r"})),
    ("refunds", json.dumps({"job": "run-1\x00", "amount": 1, "operation": "r"})),
]


@pytest.mark.parametrize(("path", "raw"), MALFORMED)
def test_a_malformed_body_is_422_and_changes_nothing(
    org: Organization, key: str, hold_id: int, path: str, raw: str
) -> None:
    before = ledger_state(org)
    response = call("post", path.format(hold=hold_id), key, raw=raw, idempotency_key="same")
    assert response.status_code == 422
    assert error(response)["code"] == "validation_error"
    assert error(response)["message"]
    assert ledger_state(org) == before


def test_malformed_gauges_are_422_and_change_nothing(org: Organization, key: str) -> None:
    response = call("put", "gauges", key, {"storage_bytes": -1})
    assert response.status_code == 422
    org.refresh_from_db()
    assert org.storage_bytes == 0


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    org: Organization, key: str, settings: Settings
) -> None:
    settings.API_RATE_LIMIT = 3
    assert [call("get", "pricing", key).status_code for _ in range(3)] == [200] * 3
    response = call("get", "pricing", key)
    assert response.status_code == 429
    assert error(response)["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= settings.API_RATE_WINDOW
    # Another key of the same organization has its own count.
    assert call("get", "pricing", issue(org)).status_code == 200


def test_a_keys_rate_count_is_one_count_across_threads(
    org: Organization, key: str, settings: Settings
) -> None:
    """A gthread worker's threads (and every worker) add to the same count, or a key could
    exceed its limit."""
    settings.API_RATE_LIMIT = 4
    assert [call("get", "pricing", key).status_code for _ in range(2)] == [200] * 2
    api_key = ApiKey.objects.get(hashed_key=ApiKey.hash(key))
    other = threading.Thread(target=auth.throttle, args=[api_key])
    other.start()
    other.join()
    assert call("get", "pricing", key).status_code == 200
    assert call("get", "pricing", key).status_code == 429


def test_counting_goes_on_when_redis_has_closed_its_connections(
    org: Organization, key: str, settings: Settings
) -> None:
    """A restart of Redis closes every client connection; the count reconnects instead of
    failing the request."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        pytest.skip("counts are in Redis only when REDIS_URL is set")
    settings.API_RATE_LIMIT = 3
    assert call("get", "pricing", key).status_code == 200
    redis = backend._cache.get_client(write=True)
    pool = redis.connection_pool
    ours = {"{}:{}".format(*c._sock.getsockname()) for c in pool._available_connections if c._sock}
    assert ours
    for client in redis.client_list():  # this process's cache connections, as a restart would
        if client["addr"] in ours:
            redis.client_kill_filter(_id=client["id"], skipme=False)
    assert [call("get", "pricing", key).status_code for _ in range(3)] == [200, 200, 429]


def test_using_a_key_records_when_it_was_last_used(org: Organization, key: str) -> None:
    api_key = ApiKey.objects.get(hashed_key=ApiKey.hash(key))
    assert api_key.last_used_at is None
    call("get", "credits/balance", key)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_openapi_schema_is_served(db: None) -> None:
    schema = Client().get("/api/v1/openapi.json").json()
    assert {
        "/api/v1/credits/balance",
        "/api/v1/debits",
        "/api/v1/holds/{hold_id}/settle",
        "/api/v1/gauges",
    } <= set(schema["paths"])


def test_an_idempotency_key_used_for_a_debit_cannot_open_a_hold(org: Organization, key: str) -> None:
    call("post", "debits", key, {"operation": "image_inference", "quantity": 2}, idempotency_key="k")
    response = call(
        "post", "holds", key, {"operation": "image_inference", "quantity": 2}, idempotency_key="k"
    )
    assert response.status_code == 409
    assert error(response)["fields"][0] == "action"
    assert not Hold.objects.filter(account=org.account).exists()


def test_a_refused_key_is_free_for_another_request(org: Organization, key: str) -> None:
    refused = call(
        "post", "debits", key, {"operation": "training_h100_per_minute", "quantity": 100}, idempotency_key="k"
    )
    assert refused.status_code == 402
    smaller = call(
        "post", "debits", key, {"operation": "training_h100_per_minute", "quantity": 1}, idempotency_key="k"
    )
    assert smaller.status_code == 201
    assert smaller.json()["amount"] == -120


def test_a_hold_expires_after_its_ttl(org: Organization, key: str) -> None:
    hold = call(
        "post", "holds", key, {"operation": "image_inference", "quantity": 5, "ttl_seconds": 120}
    ).json()
    stored = Hold.objects.get(pk=hold["hold_id"])
    assert (stored.expires_at - stored.created_at).total_seconds() == 120


def test_a_method_an_endpoint_does_not_take_is_405_in_the_error_shape(key: str) -> None:
    response = call("delete", "credits/balance", key)
    assert response.status_code == 405
    assert error(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"


def test_an_unknown_endpoint_is_404_in_the_error_shape(key: str) -> None:
    response = call("get", "credits/balances", key)
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"
