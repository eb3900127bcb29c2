"""Bearer API keys: looked up by hash, checked for scope, rate limited per key."""

from __future__ import annotations

import datetime as dt
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from billing.api.errors import MissingScope, RateLimited
from billing.models import ApiKey, Scope

# last_used_at is written at most this often per key, so reads do not all become writes.
TOUCH_EVERY = dt.timedelta(seconds=30)


class ApiKeyAuth(HttpBearer):
    """Accepts an active key that carries ``scope``; ``request.auth`` is the ApiKey."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = (
            ApiKey.objects.active()
            .select_related("organization__account", "organization__subscription__plan")
            .filter(hashed_key=ApiKey.hash(token))
            .first()
        )
        if key is None:
            return None  # ninja answers 401
        throttle(key)
        if self.scope not in key.scopes:
            raise MissingScope(f"This key lacks the {self.scope} scope.",
                               required_scope=str(self.scope))
        touch(key)
        return key


def throttle(key: ApiKey) -> None:
    """A fixed window per key, counted in the shared cache so every worker sees one count."""
    limit, window = settings.API_RATE_LIMIT, settings.API_RATE_WINDOW
    if limit <= 0:
        return
    now = time.time()
    slot = int(now // window)
    name = f"api-rate:{key.hashed_key[:24]}:{slot}"
    try:
        count = cache.incr(name)
    except ValueError:  # the window's first request
        count = 1 if cache.add(name, 1, timeout=window + 1) else cache.incr(name)
    if count > limit:
        retry_after = max(math.ceil((slot + 1) * window - now), 1)
        raise RateLimited(
            f"More than {limit} requests in {window} seconds; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)}, retry_after=retry_after,
        )


def touch(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


READ = ApiKeyAuth(Scope.ACCOUNT_READ)
WRITE = ApiKeyAuth(Scope.USAGE_WRITE)
