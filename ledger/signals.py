"""Signals the ledger sends; other apps listen without the ledger knowing them."""

from django.dispatch import Signal

# Sent once a posting that changed an account's credits has committed, with ``account``
# (as it is now); a rolled-back posting or a replay sends nothing. Sent only for accounts
# whose ``notify`` flag a listener has set, so the others cost nothing.
credits_changed = Signal()
