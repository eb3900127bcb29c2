"""Every API failure as ``{"error": {"code", "message", ...}}`` with its HTTP status."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from ledger.postings import IdempotencyConflict, InsufficientCredits, InvalidPosting, UnknownOperation


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


def error_response(
    api: NinjaAPI, request: HttpRequest, status: int, code: str, message: str, **extra: Any
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return api.create_response(request, body, status=status)


def json_not_allowed(api: NinjaAPI, view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """``view``, with ninja's plain-text 405 (a method the path does not take) answered in
    the error shape instead, keeping its ``Allow`` header."""

    @functools.wraps(view)  # keeps ninja's csrf_exempt mark
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code != 405 or response.get("Content-Type", "").startswith("application/json"):
            return response
        allowed = response.get("Allow", "")
        answer = error_response(api, request, 405, "method_not_allowed",
                                f"{request.method} is not allowed here; use {allowed}.")
        answer["Allow"] = allowed
        return answer

    return wrapped


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
            api, request, 401, "invalid_api_key",
            "A valid API key is required: send Authorization: Bearer <key>.",
        )
        response["WWW-Authenticate"] = 'Bearer realm="tally"'
        return response

    @api.exception_handler(ValidationError)
    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        # Pydantic's error context can hold exception objects; keep what a client can read.
        errors = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in exc.errors
        ]
        first = errors[0] if errors else {"loc": [], "msg": "Invalid request."}
        where = ".".join(p for p in first["loc"] if p not in {"body", "query", "path", "header"})
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(api, request, 422, "validation_error", message, errors=errors)

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:  # ninja's "Cannot parse request body": a malformed body
            return error_response(api, request, 422, "validation_error",
                                  "The request body is not valid JSON.", errors=[])
        return error_response(api, request, exc.status_code, "http_error", str(exc))

    @api.exception_handler(Http404)
    def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(api, request, 404, "not_found", "Not found.")

    @api.exception_handler(InsufficientCredits)
    def insufficient(request: HttpRequest, exc: InsufficientCredits) -> HttpResponse:
        return error_response(api, request, 402, exc.code, str(exc), required=exc.required,
                              remaining=exc.remaining, upgrade_url=exc.upgrade_url)

    @api.exception_handler(IdempotencyConflict)
    def conflict(request: HttpRequest, exc: IdempotencyConflict) -> HttpResponse:
        return error_response(api, request, 409, exc.code, str(exc), fields=exc.fields)

    @api.exception_handler(UnknownOperation)
    def unknown_operation(request: HttpRequest, exc: UnknownOperation) -> HttpResponse:
        return error_response(api, request, 422, exc.code, str(exc), operation=exc.operation)

    @api.exception_handler(InvalidPosting)
    def refused(request: HttpRequest, exc: InvalidPosting) -> HttpResponse:
        return error_response(api, request, 422, exc.code, str(exc))
