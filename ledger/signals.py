"""Signals the ledger sends; other apps listen without the ledger knowing them."""

from django.dispatch import Signal

# Sent once a posting that changed the account's credits has committed, with ``account``
# (its balance and held as now) and ``available_before`` (available credits before the
# posting); a rolled-back posting sends nothing.
credits_changed = Signal()
