"""Signals the ledger sends; other apps listen without the ledger knowing them."""

from django.dispatch import Signal

# Sent once a posting that changed the account's credits has committed, with ``account``
# (its balance and held as now) and ``available_before`` (available credits before the
# posting); a rolled-back posting sends nothing. Sent only for accounts a listener watches
# (see ``watch``).
credits_changed = Signal()

_watched_when: list[str] = []


def watch(condition: str) -> None:
    """Have ``credits_changed`` sent for the accounts where ``condition`` holds: an SQL
    boolean expression over the account's row (table ``ledger_account``). The posting asks
    it in the statement that locks the account, so a listener interested in few accounts
    costs the others nothing, not even a query."""
    if condition not in _watched_when:
        _watched_when.append(condition)


def watched_sql() -> str:
    """Whether any listener watches the account, as one SQL expression."""
    return " OR ".join(f"({condition})" for condition in _watched_when) or "FALSE"
