"""The JSON API at /api/v1/ for the platform's job runner; the organization is the key's."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI, Router
from ninja.parser import Parser

from billing.api import batch, budgets, errors, postings, reads


def _each_field_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        repeated = [name for name, count in Counter(name for name, _ in pairs).items() if count > 1]
        raise ValueError(f"{', '.join(repeated)}: given more than once")
    return fields


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class StrictJSON(Parser):
    """Bodies as JSON (RFC 8259) has them: UTF-8, no NaN or Infinity, each field once. A
    failure here is a 422 (errors.register), never a guess at what was meant."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json.loads(
            request.body.decode(), object_pairs_hook=_each_field_once, parse_constant=_no_constant
        )


api = NinjaAPI(
    title="Tally API",
    version="1",
    description="Credits for the platform's job runner. Authenticate with "
    "`Authorization: Bearer <key>`; `account:read` for reads, `usage:write` for postings, "
    "`budgets:write` to set budgets.",
    urls_namespace="api_v1",
    parser=StrictJSON(),
)
errors.register(api)
api.add_router("", reads.router)
api.add_router("", postings.router)
api.add_router("", batch.router)
api.add_router("", budgets.router)

fallback = Router()


@fallback.api_operation(
    ["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:path}", auth=None, include_in_schema=False
)
def unknown_endpoint(request: HttpRequest, path: str) -> None:
    """Mounted last: any other path under /api/v1/ is a 404 in the API's error shape."""
    raise errors.NotFound(f"No endpoint /api/v1/{path}; see /api/v1/openapi.json.")


api.add_router("", fallback)


def urls() -> tuple[list[Any], str, str]:
    """The API's URL patterns, each refusing a body it cannot read and answering a method it
    does not take in the error shape."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        assert pattern.callback is not None  # ninja's patterns each have a view
        pattern.callback = errors.in_error_shape(api, pattern.callback)
    return patterns, app_name, namespace
