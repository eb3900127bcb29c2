from typing import Any

from django.core.management.base import BaseCommand

from billing import demo


class Command(BaseCommand):
    help = "Load the demo organizations, logins, prices and three months of usage (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        demo.seed(log=self.stdout.write)
        self.stdout.write(f"\nDemo logins (password: {demo.DEMO_PASSWORD}):")
        for username, what in demo.logins():
            self.stdout.write(f"  {username:<26} {what}")
