from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness for load balancers, and the bench's trivial-view baseline."""
    return HttpResponse("ok", content_type="text/plain")
