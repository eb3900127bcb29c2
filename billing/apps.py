from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Connect the receivers: low-credit alerts, and the ledger's notices.
        from billing import alerts, notices  # noqa: F401
