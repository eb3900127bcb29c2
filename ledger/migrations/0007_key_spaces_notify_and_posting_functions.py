"""Idempotency keys get a key space (clients' keys never meet Tally's own), accounts a
``notify`` flag set by listeners, and the posting functions are installed from
ledger/sql/. Keys recorded before this are counted as Tally's own, so no internal posting
made already can be posted a second time."""

from django.db import migrations, models


def install_functions(apps, schema_editor):
    from ledger import functions

    functions.install(schema_editor.connection)


def drop_functions(apps, schema_editor):
    schema_editor.execute("DROP SCHEMA IF EXISTS ledger CASCADE")


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0006_job_account_index_in_unique"),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="notify",
            field=models.BooleanField(
                default=False,
                help_text="Send credits_changed after each posting (set while a listener, such as a "
                "low-credit alert, needs to hear of this account's changes).",
            ),
        ),
        migrations.RemoveConstraint(model_name="idempotencyrecord", name="idempotency_unique_key"),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="key_space",
            field=models.CharField(
                choices=[("client", "Client"), ("tally", "Tally")], default="tally", max_length=8
            ),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="idempotencyrecord",
            constraint=models.UniqueConstraint(
                fields=("account", "key_space", "key"), name="idempotency_unique_key"
            ),
        ),
        migrations.RunPython(install_functions, drop_functions),
    ]
