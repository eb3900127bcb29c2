from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ledger.checks import ledger_breaks
from ledger.models import Account


class Command(BaseCommand):
    help = "Verify every account's ledger invariants; exit non-zero naming every break."

    def handle(self, *args: Any, **options: Any) -> None:
        breaks = ledger_breaks()
        for line in breaks:
            self.stderr.write(line)
        if breaks:
            raise CommandError(f"{len(breaks)} ledger break(s) found.")
        self.stdout.write(f"Ledger clean: {Account.objects.count()} account(s) checked.")
