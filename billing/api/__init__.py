"""The JSON API at /api/v1/ for the platform's job runner; the organization is the key's."""

from __future__ import annotations

from ninja import NinjaAPI

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
