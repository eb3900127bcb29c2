"""Signals the ledger sends; other apps listen without the ledger knowing them."""

from django.dispatch import Signal

# Sent inside the posting's transaction after the account's credits changed, with
# ``account`` (its balance and held as now) and ``available_before`` (available credits
# before the posting). Receivers that act on the outside world defer to on_commit, so a
# rolled-back posting sends nothing.
credits_changed = Signal()
