"""Sending an event to an endpoint: the URL rules, the signed POST, the retries.

Each attempt runs under the delivery's row lock, taken with SKIP LOCKED: however many
tasks a retry, the sweep or Redis's redelivery start for one delivery, one sends it at a
time, and one that finds it delivered (or not due) does nothing. The attempt's outcome is
saved in the same transaction, so a worker killed mid-attempt leaves the delivery pending
as it was, and it is sent once more (receivers drop the repeat by its ``webhook-id``).

Only ``http(s)`` URLs, and only to public addresses unless ``WEBHOOKS_ALLOW_PRIVATE``: an
endpoint's host is checked when it is saved, and the address each connection actually
reached is checked again before a byte is sent (a host whose name later resolves to a
private address, DNS rebinding, is refused there). Redirects are not followed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from billing.alerts import manager_emails
from billing.watch import update_notify
from webhooks.models import RESPONSE_BODY_LIMIT, Delivery, DeliveryStatus, Endpoint, Event

log = logging.getLogger(__name__)


class RefusedURL(Exception):
    """A URL webhooks may not be sent to."""


# --- Where webhooks may go ----------------------------------------------------------------


def address_allowed(address: str) -> bool:
    """Whether an IP address is public: not loopback, private, link-local (the cloud
    metadata services' 169.254.169.254), shared, reserved or multicast."""
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    return ip.is_global and not ip.is_multicast


def validate_url(url: str) -> None:
    """Refuse a URL that is not http(s), or whose host resolves to an address that is not
    public (``address_allowed``)."""
    parts = _web_url(url)
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise RefusedURL(f"{parts.hostname} does not resolve to an address.") from None
    for info in infos:
        address = str(info[4][0])
        if not address_allowed(address):
            raise RefusedURL(
                f"{parts.hostname} is {address}, a loopback, private, link-local or reserved "
                "address: webhooks go to public addresses only."
            )


def _web_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedURL("Use an http:// or https:// URL with a host.")
    return parts


def _checked(sock: socket.socket) -> socket.socket:
    address = str(sock.getpeername()[0])
    if not address_allowed(address):
        sock.close()
        raise RefusedURL(f"Refused to connect to {address}: not a public address.")
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn())


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked(super()._new_conn())


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


# --- One attempt --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: int | None = None
    body: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


def signed_headers(endpoint: Endpoint, event: Event, body: bytes, now: dt.datetime) -> dict[str, str]:
    """The Standard Webhooks headers: one ``v1`` signature per secret in use."""
    signatures = [
        Webhook(secret).sign(event.message_id, now, body) for secret in endpoint.signing_secrets(now)
    ]
    return {
        "content-type": "application/json",
        "user-agent": "Tally-Webhooks/1",
        "webhook-id": event.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def send(endpoint: Endpoint, event: Event, now: dt.datetime) -> Outcome:
    """POST the event to the endpoint once; what came back (at most 1 KiB of the body)."""
    body = event.body()
    try:
        _web_url(endpoint.url)
        manager = urllib3.PoolManager(num_pools=1, retries=False)
        manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        with manager:
            response = manager.request(
                "POST",
                endpoint.url,
                body=body,
                headers=signed_headers(endpoint, event, body, now),
                timeout=urllib3.Timeout(total=settings.WEBHOOKS_TIMEOUT),
                redirect=False,
                preload_content=False,
            )
            try:
                excerpt = response.read(RESPONSE_BODY_LIMIT)[:RESPONSE_BODY_LIMIT]
            except urllib3.exceptions.HTTPError:
                excerpt = b""
            finally:
                response.close()
    except RefusedURL as exc:
        return Outcome(error=str(exc))
    except urllib3.exceptions.TimeoutError:
        return Outcome(error=f"No answer within {settings.WEBHOOKS_TIMEOUT:g} seconds.")
    except urllib3.exceptions.NewConnectionError as exc:
        return Outcome(error=f"Could not connect: {exc.__cause__ or exc}"[:300])
    except urllib3.exceptions.HTTPError as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:300])
    return Outcome(code=response.status, body=excerpt.decode("utf-8", errors="replace"))


def attempt(delivery_id: int, now: dt.datetime | None = None) -> str:
    """Send a pending delivery that is due, record the outcome and schedule the next try
    (or give up after the last: the delivery failed, and an endpoint that has not taken a
    single delivery since is disabled and its managers emailed). What happened, in words."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event", "endpoint__organization")
            .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
            .first()
        )
        if delivery is None:
            return "not pending, or being sent"
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return "not due"
        if not delivery.endpoint.enabled:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            delivery.error = "The endpoint is disabled."
            delivery.save(update_fields=["status", "next_attempt_at", "error"])
            return "endpoint disabled"
        outcome = send(delivery.endpoint, delivery.event, now)
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.response_code, delivery.response_body, delivery.error = (
            outcome.code,
            outcome.body,
            outcome.error,
        )
        delays = settings.WEBHOOKS_RETRY_DELAYS
        if outcome.ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                DeliveryStatus.SUCCEEDED,
                now,
                None,
            )
        elif delivery.attempts <= len(delays):
            delay = delays[delivery.attempts - 1]
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
            transaction.on_commit(functools.partial(_enqueue, delivery.pk, delay))
        else:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            _disable_if_dead(delivery, now)
        delivery.save()
    return f"{delivery.status} after attempt {delivery.attempts}"


def _disable_if_dead(delivery: Delivery, now: dt.datetime) -> None:
    """A delivery failed every attempt (three days of them): if no delivery to its endpoint
    has succeeded since it was made, the endpoint is dead. Disable it and tell the managers."""
    endpoint = delivery.endpoint
    if Delivery.objects.filter(
        endpoint=endpoint, status=DeliveryStatus.SUCCEEDED, delivered_at__gte=delivery.created_at
    ).exists():
        return
    reason = (
        f"Disabled on {now:%Y-%m-%d %H:%M} UTC: every delivery failed "
        f"since {delivery.created_at:%Y-%m-%d %H:%M} UTC."
    )
    if Endpoint.objects.filter(pk=endpoint.pk, enabled=True).update(enabled=False, disabled_reason=reason):
        update_notify(endpoint.organization_id)
        transaction.on_commit(functools.partial(send_disabled_email, endpoint.pk, delivery.pk))


def send_disabled_email(endpoint_id: int, delivery_id: int) -> bool:
    endpoint = Endpoint.objects.select_related("organization").get(pk=endpoint_id)
    delivery = Delivery.objects.get(pk=delivery_id)
    org = endpoint.organization
    recipients = manager_emails(org)
    if not recipients:
        return False
    context: dict[str, Any] = {
        "org": org,
        "endpoint": endpoint,
        "delivery": delivery,
        "endpoint_url": settings.SITE_URL.rstrip("/")
        + reverse("webhook_endpoint", args=[org.slug, endpoint.pk]),
    }
    message = EmailMultiAlternatives(
        subject=render_to_string("emails/webhook_disabled_subject.txt", context).strip(),
        body=render_to_string("emails/webhook_disabled.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string("emails/webhook_disabled.html", context), "text/html")
    message.send()
    return True


def _enqueue(delivery_id: int, countdown: float = 0) -> None:
    from webhooks.tasks import deliver

    deliver.apply_async((delivery_id,), countdown=countdown)


def enqueue_on_commit(delivery_ids: list[int]) -> None:
    """Send the deliveries once the transaction that stored them commits (never for a
    rolled-back one)."""
    for delivery_id in delivery_ids:
        transaction.on_commit(functools.partial(_enqueue, delivery_id))


def due_for_retry(older_than: dt.timedelta, now: dt.datetime | None = None, limit: int = 1000) -> list[int]:
    """Pending deliveries due for longer than ``older_than``: their task was lost (a worker
    killed, a broker restart) or is stuck behind a queue."""
    moment = (now or timezone.now()) - older_than
    return list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=moment)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
