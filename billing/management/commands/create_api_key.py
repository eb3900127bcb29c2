from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing.models import ApiKey, Organization, Scope
from team import audit
from team.models import Action


class Command(BaseCommand):
    help = "Create an API key for an organization and print it once (only its hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        parser.add_argument(
            "--scopes", required=True, help=f"Comma-separated, among {', '.join(Scope.values)}."
        )
        parser.add_argument("--name", default="job-runner")

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organization {options['org']!r}.")
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            with transaction.atomic():
                key, raw = ApiKey.issue(org, name=options["name"], scopes=scopes)
                audit.record(
                    "create_api_key command",
                    org,
                    Action.API_KEY_CREATED,
                    target=str(key),
                    detail=", ".join(key.scopes),
                )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stderr.write(
            f"API key for {org.slug} ({', '.join(sorted(set(scopes)))}); it is shown only this once:"
        )
        self.stdout.write(raw)
