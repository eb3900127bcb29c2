"""schemathesis over /api/v1/openapi.json: whatever it sends, no 5xx and no response that
breaks the published schema."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks

from billing import client as tally_client
from billing.api import schemas
from billing.models import ApiKey, Organization, Scope
from billing.wsgi import application
from ledger import postings

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def keep_test_connection() -> Iterator[None]:
    """The real WSGI handler closes the connection after each request, which would end the
    test's transaction; Django's own test client unhooks the same signal."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(org: Organization, keep_test_connection: None) -> dict[str, str]:
    postings.debit(org.account, 5, key="seed", operation="image_inference", job=postings.JobInfo("run-1"))
    postings.reserve(org.account, 10, key="seed-hold", operation="image_inference")
    _, raw = ApiKey.issue(org, name="fuzz", scopes=[Scope.ACCOUNT_READ, Scope.USAGE_WRITE])
    return {"Authorization": f"Bearer {raw}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case: Case[Any], bearer: dict[str, str]) -> None:
    case.call_and_validate(headers=bearer, checks=CHECKS)


def test_api_docs_load_swagger_from_our_own_static_files(client: Client) -> None:
    """The docs page works on a network that reaches only this server."""
    page = client.get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize(
    ("client_type", "schema"),
    [
        ("CreditBalance", "BalanceOut"),
        ("Entry", "EntryOut"),
        ("Job", "JobOut"),
        ("Estimate", "EstimateOut"),
        ("LotPlan", "LotOut"),
        ("UsageDay", "UsageDayOut"),
    ],
)
def test_the_python_client_reads_every_field_the_api_publishes(client_type: str, schema: str) -> None:
    """The client stays free of server imports, so its types are written out again; this
    keeps the two copies from drifting apart."""
    fields = {field.name for field in dataclasses.fields(getattr(tally_client, client_type))}
    assert fields == set(getattr(schemas, schema).model_fields)
