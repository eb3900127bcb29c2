"""Bearer API keys: looked up by hash, checked for scope, rate limited per key."""

from __future__ import annotations

import datetime as dt
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Model
from django.db.models.expressions import Col
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from billing.api.errors import MissingScope, RateLimited
from billing.models import ApiKey, Organization, Plan, Scope, Subscription
from ledger.db import prepared_cursor
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
            raise MissingScope(f"This key lacks the {self.scope} scope.",
                               required_scope=str(self.scope))
        touch(key)
        return key


def organization(request: HttpRequest) -> Organization:
    """The organization whose key authenticated this request."""
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return key.organization


# Every request runs this lookup, so it is one hand-written indexed query (the ORM spends
# longer compiling a five-table select_related than PostgreSQL spends answering it), and a
# prepared one (PostgreSQL spends longer planning the join than running it); the rows
# become ordinary model instances with their relations already cached.
_JOINED: list[tuple[type[Model], str]] = [
    (ApiKey, "k"), (Organization, "o"), (Account, "a"), (Subscription, "s"), (Plan, "p"),
]


@functools.cache
def _lookup_sql() -> str:
    q = connection.ops.quote_name
    columns = ", ".join(
        f"{alias}.{q(cast(str, field.column))}"
        for model, alias in _JOINED for field in model._meta.concrete_fields
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


@functools.cache
def _converters() -> list[tuple[int, Col, list[Callable[..., Any]]]]:
    """The columns the ORM would convert (SQLite hands back text JSON, naive times), by
    position, with their converters; the rest are used as they come."""
    columns = []
    fields = [(alias, field) for model, alias in _JOINED for field in model._meta.concrete_fields]
    for index, (alias, field) in enumerate(fields):
        col = field.get_col(alias)
        functions = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
        if functions:
            columns.append((index, col, functions))
    return columns


@functools.cache
def _attnames() -> list[list[str]]:
    return [[field.attname for field in model._meta.concrete_fields] for model, _ in _JOINED]


def find_active_key(hashed_key: str) -> ApiKey | None:
    """The unrevoked key with this hash, its organization, account, subscription and plan."""
    with prepared_cursor() as cursor:
        cursor.execute(_lookup_sql(), [hashed_key])
        found = cursor.fetchone()
    if found is None:
        return None
    row = list(found)
    for index, col, functions in _converters():
        for function in functions:
            row[index] = function(row[index], col, connection)
    built: dict[type[Model], Model | None] = {}
    start = 0
    for (model, _), attnames in zip(_JOINED, _attnames(), strict=True):
        values = row[start : start + len(attnames)]
        start += len(attnames)
        built[model] = None if values[0] is None else model.from_db(DEFAULT_DB_ALIAS, attnames, values)
    key, org = cast(ApiKey, built[ApiKey]), cast(Organization, built[Organization])
    key.organization = org
    org.account = cast(Account, built[Account])
    subscription = cast(Subscription | None, built[Subscription])
    if subscription is not None:
        subscription.plan = cast(Plan, built[Plan])
        org.subscription = subscription
    return key


def throttle(key: ApiKey) -> None:
    """A fixed window per key, counted in the shared cache so every worker sees one count."""
    limit, window = settings.API_RATE_LIMIT, settings.API_RATE_WINDOW
    if limit <= 0:
        return
    now = time.time()
    slot = int(now // window)
    count = count_request(f"api-rate:{key.hashed_key[:24]}:{slot}", timeout=window + 1)
    if count > limit:
        retry_after = max(math.ceil((slot + 1) * window - now), 1)
        raise RateLimited(
            f"More than {limit} requests in {window} seconds; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)}, retry_after=retry_after,
        )


def count_request(name: str, timeout: int) -> int:
    """Add one to the count called ``name`` in the cache and return the new count."""
    counter = _redis_counter()
    if counter is not None:
        return counter(name, timeout)
    try:
        return cache.incr(name)
    except ValueError:  # the window's first request
        return 1 if cache.add(name, 1, timeout=timeout) else cache.incr(name)


# The count and its expiry in one atomic round trip (Django's cache.incr takes two, EXISTS
# then INCRBY, and a first request a third); a plain integer, as the cache stores one.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@functools.cache
def _redis_counter() -> Callable[[str, int], int] | None:
    """Counting on the default cache's Redis, each thread on a connection of its own taken
    once from the cache's pool (taking one from the pool and giving it back costs more than
    the count, as do the cache's own per-call clients); None for an in-process cache."""
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    pool = cast(Redis, cast(Any, backend)._cache.get_client(write=True)).connection_pool
    per_thread = threading.local()

    def count(name: str, timeout: int) -> int:
        if not hasattr(per_thread, "script"):  # the connection goes back to the pool when its thread ends
            client = Redis(connection_pool=pool, single_connection_client=True)
            per_thread.connection, per_thread.script = client.connection, client.register_script(_COUNT)
        connection = per_thread.connection
        try:
            connection.can_read()  # as the pool checks a connection before lending it
        except RedisConnectionError:  # Redis closed it (a restart): send on a new one
            connection.disconnect()
        # make_key, not make_and_validate_key: the names are ours, and the check walks them.
        return int(per_thread.script(keys=[backend.make_key(name)], args=[timeout]))

    return count


def touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


READ = ApiKeyAuth(Scope.ACCOUNT_READ)
WRITE = ApiKeyAuth(Scope.USAGE_WRITE)
