"""The JSON API at /api/v1/ for the platform's job runner; the organization is the key's."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI, Router

from billing.api import errors, postings, reads

api = NinjaAPI(
    title="Tally API",
    version="1",
    description="Credits for the platform's job runner. Authenticate with "
    "`Authorization: Bearer <key>`; `account:read` for reads, `usage:write` for postings.",
    urls_namespace="api_v1",
)
errors.register(api)
api.add_router("", reads.router)
api.add_router("", postings.router)

fallback = Router()


@fallback.api_operation(["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:path}", auth=None,
                        include_in_schema=False)
def unknown_endpoint(request: HttpRequest, path: str) -> None:
    """Mounted last: any other path under /api/v1/ is a 404 in the API's error shape."""
    raise errors.NotFound(f"No endpoint /api/v1/{path}; see /api/v1/openapi.json.")


api.add_router("", fallback)


def urls() -> tuple[list[Any], str, str]:
    """The API's URL patterns, each answering a method it does not take in the error shape."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        assert pattern.callback is not None  # ninja's patterns each have a view
        pattern.callback = errors.json_not_allowed(api, pattern.callback)
    return patterns, app_name, namespace
