from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing import closing
from billing.models import Organization
from ledger.periods import current_period, parse_period


class Command(BaseCommand):
    help = (
        "Close ended months without a worker: expire lots, freeze statements, issue invoices "
        "and grant the next month's credits. Months missed before are closed first, in order."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", help="Close up to this month (YYYY-MM); default: every ended month.")
        parser.add_argument("--org", help="Only this organization's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            through = parse_period(options["month"]) if options["month"] else None
        except ValueError as error:
            raise CommandError(str(error)) from error
        orgs = Organization.objects.select_related("account", "subscription__plan").order_by("slug")
        if options["org"]:
            orgs = orgs.filter(slug=options["org"])
            if not orgs:
                raise CommandError(f"No organization {options['org']!r}.")
        for org in orgs:
            if through is not None and through >= current_period(now, org.tzinfo):
                raise CommandError(
                    f"{through:%Y-%m} has not ended yet for {org.slug} ({org.account.time_zone})."
                )
            results = closing.close_organization(org, now, through=through)
            for result in results:
                statement = result.statement
                self.stdout.write(
                    f"{org.slug} {result.period:%Y-%m}: closed, closing balance "
                    f"{statement.closing_balance:,}, invoice {result.invoice}"
                )
            if not results:
                month = f" {through:%Y-%m}" if through is not None else ""
                self.stdout.write(f"{org.slug}{month}: nothing to close")
