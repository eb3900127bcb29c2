"""Whether the ledger tells Tally of an organization's postings: ``Account.notify``.

Most organizations need nothing of the kind, so the ledger keeps a notice of each posting
(and sends ``credits_changed``) only for accounts whose ``notify`` flag is on. Each
listener registers what makes it need them (low-credit alerts: a threshold; outgoing
webhooks: an enabled endpoint), and ``update_notify`` sets the flag from all of them
whenever one of those changes.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.models import Account

Need = Callable[[int], bool]
_NEEDS: list[Need] = []


def needs_postings(need: Need) -> Need:
    """Register ``need(organization_id)``: whether the organization needs its postings noticed."""
    _NEEDS.append(need)
    return need


def update_notify(organization_id: int) -> None:
    """Turn the organization's ``notify`` flag on while any listener needs it, off otherwise."""
    from billing.models import Organization

    account_id = Organization.objects.filter(pk=organization_id).values_list("account_id", flat=True).first()
    if account_id is not None:
        notify = any(need(organization_id) for need in _NEEDS)
        Account.objects.filter(pk=account_id).exclude(notify=notify).update(notify=notify)
