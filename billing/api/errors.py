"""Every API failure as ``{"error": {"code", "message", ...}}`` with its HTTP status."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from ledger.postings import (
    BudgetExceeded,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    UnknownOperation,
)


class ApiError(Exception):
    """A refusal the API itself makes (not the ledger's)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MissingScope(ApiError):
    status = 403
    code = "insufficient_scope"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


# DESIGN.md: a body over 1 MiB is refused. Below Django's DATA_UPLOAD_MAX_MEMORY_SIZE, so a
# large body is refused here by its Content-Length, before anything reads it.
MAX_BODY_BYTES = 1024 * 1024


def unreadable_body(request: HttpRequest) -> ApiError | None:
    """Why the request's body is not input the API takes, judged by its headers alone: a
    body over 1 MiB, or one not sent as JSON (``Content-Type: application/json``, UTF-8)."""
    try:
        size = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0  # as Django reads it: no body
    if size > MAX_BODY_BYTES:
        return PayloadTooLarge(f"The body is {size} bytes; the API takes at most {MAX_BODY_BYTES} (1 MiB).")
    charset = (request.content_params or {}).get("charset", "utf-8").lower()
    if size > 0 and (request.content_type != "application/json" or charset not in {"utf-8", "utf8"}):
        return UnsupportedMediaType("Send the body as JSON, with Content-Type: application/json.")
    return None


def error_response(
    api: NinjaAPI, request: HttpRequest, status: int, code: str, message: str, **extra: Any
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return api.create_response(request, body, status=status)


def in_error_shape(api: NinjaAPI, view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """``view``, refusing a body it must not read (413, 415) before it runs, and with
    ninja's plain-text 405 (a method the path does not take) answered in the error shape
    instead, keeping its ``Allow`` header."""

    @functools.wraps(view)  # keeps ninja's csrf_exempt mark
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        refusal = unreadable_body(request)
        if refusal is not None:
            return error_response(api, request, refusal.status, refusal.code, refusal.message)
        response = view(request, *args, **kwargs)
        if response.status_code != 405 or response.get("Content-Type", "").startswith("application/json"):
            return response
        allowed = response.get("Allow", "")
        answer = error_response(
            api, request, 405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}."
        )
        answer["Allow"] = allowed
        return answer

    return wrapped


def validation_refusal(errors: Sequence[Any]) -> tuple[int, dict[str, Any]]:
    """422 and the error body for pydantic's (or ninja's) validation ``errors``: the first
    named in the message, every one listed as ``loc``, ``msg`` and ``type``."""
    # Pydantic's error context can hold exception objects; keep what a client can read.
    listed = [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    first = listed[0] if listed else {"loc": [], "msg": "Invalid request."}
    where = ".".join(
        p
        for p in first["loc"]
        if p not in {"body", "query", "path", "header", "postings"} and not p.isdigit()
    )
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return 422, {"code": "validation_error", "message": message, "errors": listed}


def ledger_refusal(exc: LedgerError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error body for a posting the ledger refused."""
    detail: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    match exc:
        case InsufficientCredits():
            return 402, {
                **detail,
                "required": exc.required,
                "remaining": exc.remaining,
                "upgrade_url": exc.upgrade_url,
            }
        case BudgetExceeded():
            return 402, {**detail, "required": exc.required, "budget": exc.budget}
        case IdempotencyConflict():
            return 409, {**detail, "fields": exc.fields}
        case UnknownOperation():
            return 422, {**detail, "operation": exc.operation}
        case HoldNotFound():
            return 404, detail
        case _:
            return 422, detail


def register(api: NinjaAPI) -> None:
    """Map each failure to its status and error body."""

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = error_response(api, request, exc.status, exc.code, exc.message, **exc.extra)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = error_response(
            api,
            request,
            401,
            "invalid_api_key",
            "A valid API key is required: send Authorization: Bearer <key>.",
        )
        response["WWW-Authenticate"] = 'Bearer realm="tally"'
        return response

    @api.exception_handler(ValidationError)
    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        status, detail = validation_refusal(exc.errors)
        return api.create_response(request, {"error": detail}, status=status)

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:  # ninja's "Cannot parse request body": a malformed body
            why = f": {exc.__cause__}" if isinstance(exc.__cause__, ValueError) else "."
            return error_response(
                api, request, 422, "validation_error", f"The request body is not valid JSON{why}", errors=[]
            )
        return error_response(api, request, exc.status_code, "http_error", str(exc))

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(api, request, 404, "not_found", "Not found.")

    @api.exception_handler(LedgerError)
    def refused(request: HttpRequest, exc: LedgerError) -> HttpResponse:
        status, detail = ledger_refusal(exc)
        return api.create_response(request, {"error": detail}, status=status)
