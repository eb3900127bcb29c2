from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Credit ledger"

    def ready(self) -> None:
        post_migrate.connect(_install_functions, sender=self)


def _install_functions(sender: Any, using: str, plan: list[Any] | None = None, **kwargs: Any) -> None:
    """Every migrate brings the posting functions in step with ledger/sql/ (a migration
    installs them first; this keeps them current when only a file changed)."""
    from ledger import functions

    functions.install(connections[using])
