"""Bearer API keys: looked up by hash, checked for scope, rate limited per key."""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Field, Model
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from billing.api.errors import MissingScope, RateLimited
from billing.models import ApiKey, Organization, Plan, Scope, Subscription
from ledger.models import Account

# last_used_at is written at most this often per key, so reads do not all become writes.
TOUCH_EVERY = dt.timedelta(seconds=30)


class ApiKeyAuth(HttpBearer):
    """Accepts an active key that carries ``scope``; ``request.auth`` is the ApiKey."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = find_active_key(ApiKey.hash(token))
        if key is None:
            return None  # ninja answers 401
        throttle(key)
        if self.scope not in key.scopes:
            raise MissingScope(f"This key lacks the {self.scope} scope.", required_scope=str(self.scope))
        touch(key)
        return key


def organization(request: HttpRequest) -> Organization:
    """The organization whose key authenticated this request."""
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return key.organization


def key_name(request: HttpRequest) -> str:
    """The name of the key that authenticated this request: its postings count against
    the organization's ``api_key`` budget of that name."""
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return key.name


# Every request runs this lookup, so it is one hand-written statement through Django's own
# cursor: building and compiling the same five-table select_related in the ORM, and its
# instances, cost the server more than the rest of a balance read (on the API bench, 2x the
# CPU per GET credits/balance, and 1.5x per POST debits). The row becomes ordinary model
# instances, made as the ORM makes them (Model.from_db), their relations already cached.
_JOINED: list[tuple[type[Model], str]] = [
    (ApiKey, "k"),
    (Organization, "o"),
    (Account, "a"),
    (Subscription, "s"),
    (Plan, "p"),
]


@functools.cache
def _lookup_sql() -> str:
    q = connection.ops.quote_name
    columns = ", ".join(
        f"{alias}.{q(cast(str, field.column))}"
        for model, alias in _JOINED
        for field in model._meta.concrete_fields
    )
    table = {alias: q(model._meta.db_table) for model, alias in _JOINED}
    return (
        f"SELECT {columns} FROM {table['k']} k"
        f" JOIN {table['o']} o ON o.id = k.organization_id"
        f" JOIN {table['a']} a ON a.id = o.account_id"
        f" LEFT JOIN {table['s']} s ON s.organization_id = o.id"
        f" LEFT JOIN {table['p']} p ON p.id = s.plan_id"
        f" WHERE k.hashed_key = %s AND k.revoked_at IS NULL"
    )


def find_active_key(hashed_key: str) -> ApiKey | None:
    """The unrevoked key with this hash, its organization, account, subscription and plan."""
    with connection.cursor() as cursor:
        cursor.execute(_lookup_sql(), [hashed_key])
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    built: dict[type[Model], Any] = {}
    for model, _ in _JOINED:
        fields = model._meta.concrete_fields
        loaded = [_from_db(field, next(values)) for field in fields]
        attnames = [field.attname for field in fields]
        built[model] = None if loaded[0] is None else model.from_db(DEFAULT_DB_ALIAS, attnames, loaded)
    key, org, subscription = built[ApiKey], built[Organization], built[Subscription]
    key.organization = org
    org.account = built[Account]
    if subscription is not None:
        subscription.plan = built[Plan]
        org.subscription = subscription
    return cast(ApiKey, key)


@functools.cache
def _converter(field: Field[Any, Any]) -> Callable[[Any], Any] | None:
    """How the ORM turns this column's value into the field's (a JSON column's text is
    decoded); None for most columns, used as they come."""
    col = field.get_col(field.model._meta.db_table)
    functions = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
    if not functions:
        return None

    def convert(value: Any) -> Any:
        for function in functions:
            value = function(value, col, connection)
        return value

    return convert


def _from_db(field: Field[Any, Any], value: Any) -> Any:
    convert = _converter(field)
    return value if convert is None else convert(value)


def throttle(key: ApiKey) -> None:
    """A fixed window per key, counted in the shared cache so every worker sees one count."""
    limit, window = settings.API_RATE_LIMIT, settings.API_RATE_WINDOW
    if limit <= 0:
        return
    now = time.time()
    slot = int(now // window)
    # The count outlives its window, so it cannot expire under a request still counting in it.
    count = count_request(f"api-rate:{key.hashed_key[:24]}:{slot}", timeout=2 * window)
    if count > limit:
        retry_after = max(math.ceil((slot + 1) * window - now), 1)
        raise RateLimited(
            f"More than {limit} requests in {window} seconds; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )


def count_request(name: str, timeout: int) -> int:
    """Add one to the count called ``name`` in the cache and return the new count."""
    try:
        return cache.incr(name)
    except ValueError:  # the window's first request (or its count just expired)
        return 1 if cache.add(name, 1, timeout=timeout) else cache.incr(name)


def touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


READ = ApiKeyAuth(Scope.ACCOUNT_READ)
WRITE = ApiKeyAuth(Scope.USAGE_WRITE)
BUDGETS = ApiKeyAuth(Scope.BUDGETS_WRITE)
