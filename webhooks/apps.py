from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # Register the handlers of the ledger's notices and the need for them.
        from webhooks import handlers  # noqa: F401
