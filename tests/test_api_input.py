"""Input the API refuses: unknown fields, numbers sent as text, floats or booleans, a `job`
that is not an object with an external_id, bodies that are not JSON or too large. Each is
refused in the error shape and changes nothing. Also a NUL byte in a checkout page's URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import Organization
from ledger import postings
from ledger.models import Job
from tests.test_api import JOB, call, error, issue, ledger_state

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture
def key(org: Organization) -> str:
    return issue(org)


@pytest.fixture
def hold_id(org: Organization) -> int:
    postings.debit(org.account, 5, key="job", operation="image_inference", job=postings.JobInfo("run-1"))
    receipt = postings.reserve(org.account, 10, key="hold", operation="image_inference")
    assert receipt.hold_id is not None
    return receipt.hold_id


def send(path: str, key: str, raw: bytes | str, content_type: str | None) -> Any:
    """A POST whose body and Content-Type are exactly these (None: no Content-Type at all)."""
    return Client().generic(
        "POST", f"/api/v1/{path}", raw, content_type or "", headers={"Authorization": f"Bearer {key}"}
    )


def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert error(response)["code"] == code
    assert error(response)["message"]


DEBIT = {"operation": "image_inference", "quantity": 10}
VALID = [
    ("post", "debits", DEBIT),
    ("post", "holds", {"operation": "image_inference", "quantity": 1}),
    ("post", "holds/{hold}/settle", {"amount": 1}),
    ("post", "refunds", {"job": "run-1", "amount": 1, "operation": "image_inference_refund"}),
    ("put", "gauges", {"storage_bytes": 1, "deployments": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), VALID)
def test_an_unknown_field_is_422_and_changes_nothing(
    org: Organization, key: str, hold_id: int, method: str, path: str, body: dict[str, Any]
) -> None:
    before = ledger_state(org)
    response = call(method, path.format(hold=hold_id), key, {**body, "quantiy": 5})
    assert_refused(response, 422, "validation_error")
    assert "quantiy" in error(response)["message"]
    assert ledger_state(org) == before


def test_an_unknown_field_inside_the_job_is_422(org: Organization, key: str) -> None:
    before = ledger_state(org)
    response = call("post", "debits", key, {**DEBIT, "job": {**JOB, "team": "vision"}})
    assert_refused(response, 422, "validation_error")
    assert ledger_state(org) == before


WRONG_TYPES = [
    ("debits", {"operation": "image_inference", "quantity": "10"}),
    ("debits", {"operation": "image_inference", "quantity": 1.0}),
    ("debits", {"operation": "image_inference", "quantity": True}),
    ("debits", {"operation": 7, "quantity": 1}),
    ("holds", {"operation": "image_inference", "amount": "250"}),
    ("holds", {"operation": "image_inference", "amount": 250.0}),
    ("holds", {"operation": "image_inference", "quantity": 1, "ttl_seconds": "120"}),
    ("holds/{hold}/settle", {"amount": "1"}),
    ("holds/{hold}/settle", {"quantity": True}),
    ("refunds", {"job": "run-1", "amount": "1", "operation": "image_inference_refund"}),
    ("refunds", {"job": "run-1", "amount": 1.0, "operation": "image_inference_refund"}),
]


@pytest.mark.parametrize(("path", "body"), WRONG_TYPES)
def test_a_number_sent_as_text_a_float_or_a_boolean_is_422(
    org: Organization, key: str, hold_id: int, path: str, body: dict[str, Any]
) -> None:
    before = ledger_state(org)
    response = call("post", path.format(hold=hold_id), key, body)
    assert_refused(response, 422, "validation_error")
    assert ledger_state(org) == before


@pytest.mark.parametrize("body", [{"storage_bytes": "1"}, {"deployments": 2.0}, {"deployments": False}])
def test_gauges_sent_as_text_a_float_or_a_boolean_are_422(
    org: Organization, key: str, body: dict[str, Any]
) -> None:
    response = call("put", "gauges", key, body)
    assert_refused(response, 422, "validation_error")
    org.refresh_from_db()
    assert (org.storage_bytes, org.deployments) == (0, 0)


NOT_A_JOB = [{}, "text", [], 0, {"external_id": ""}, {"name": "yolox"}, {"external_id": 42}]


@pytest.mark.parametrize("path", ["debits", "holds"])
@pytest.mark.parametrize("job", NOT_A_JOB, ids=repr)
def test_a_job_that_is_not_an_object_with_an_external_id_is_422(
    org: Organization, key: str, path: str, job: Any
) -> None:
    before = ledger_state(org)
    response = call("post", path, key, {**DEBIT, "job": job})
    assert_refused(response, 422, "validation_error")
    assert "job" in error(response)["message"]
    assert ledger_state(org) == before
    assert not Job.objects.filter(account=org.account).exists()


@pytest.mark.parametrize(
    "job", ["run-1\x00", "", 0, [], {}, {"external_id": ""}, {**JOB, "team": "x"}], ids=repr
)
def test_a_refund_naming_an_invalid_job_is_422_and_refunds_nothing(
    org: Organization, key: str, job: Any
) -> None:
    """The job is its external_id or the job object; anything else is refused as input,
    naming the job, and is never looked up as some job (once, one with an empty id)."""
    call("post", "debits", key, {**DEBIT, "job": JOB})
    before = ledger_state(org)
    response = call("post", "refunds", key, {"job": job, "amount": 5, "operation": "image_inference_refund"})
    assert_refused(response, 422, "validation_error")
    assert error(response)["errors"][0]["loc"][:3] == ["body", "body", "job"]
    assert ledger_state(org) == before


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/json; charset=latin-1",
    ],
)
def test_a_body_not_sent_as_json_is_415_and_changes_nothing(
    org: Organization, key: str, content_type: str | None
) -> None:
    before = ledger_state(org)
    response = send("debits", key, json.dumps(DEBIT), content_type)
    assert_refused(response, 415, "unsupported_media_type")
    assert ledger_state(org) == before


def test_json_with_a_charset_parameter_is_taken(org: Organization, key: str) -> None:
    response = send("debits", key, json.dumps(DEBIT), "application/json; charset=utf-8")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "raw",
    [
        '{"operation": "image_inference", "quantity": NaN}',
        '{"operation": "image_inference", "quantity": 1, "quantity": 100}',
    ],
)
def test_json_with_nan_or_a_field_given_twice_is_422(org: Organization, key: str, raw: str) -> None:
    before = ledger_state(org)
    response = send("debits", key, raw, "application/json")
    assert_refused(response, 422, "validation_error")
    assert ledger_state(org) == before


@pytest.mark.parametrize("size", [MiB + 1, 3 * MiB])
def test_a_body_over_one_mebibyte_is_413_in_the_error_shape(org: Organization, key: str, size: int) -> None:
    before = ledger_state(org)
    padded = json.dumps(DEBIT)[:-1] + " " * (size - len(json.dumps(DEBIT))) + "}"
    assert len(padded) == size and json.loads(padded) == DEBIT  # a valid debit, only too large
    response = send("debits", key, padded, "application/json")
    assert_refused(response, 413, "payload_too_large")
    assert ledger_state(org) == before


def test_a_body_of_just_under_one_mebibyte_is_taken(org: Organization, key: str) -> None:
    padded = json.dumps(DEBIT)[:-1] + " " * (MiB - len(json.dumps(DEBIT))) + "}"
    assert len(padded) == MiB
    assert send("debits", key, padded, "application/json").status_code == 201


# --- Pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["checkout", "invoice"])
def test_a_nul_byte_in_a_billing_url_is_404_not_a_server_error(
    manager_client: Client, org: Organization, name: str
) -> None:
    url = reverse(name, args=[org.slug, "x"]).replace("/x/", "/%00/")
    response = manager_client.get(url)
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["checkout_pay", "checkout_cancel"])
def test_a_nul_byte_in_a_checkout_action_is_404(manager_client: Client, org: Organization, name: str) -> None:
    url = reverse(name, args=[org.slug, "x"]).replace("/x/", "/%00/")
    assert manager_client.post(url).status_code == 404
