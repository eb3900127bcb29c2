from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Connect the receivers: low-credit alerts, the ledger's notices, auto top-up.
        from billing import alerts, auto_top_up, notices  # noqa: F401
