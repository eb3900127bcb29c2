"""One meaning for every number: daily rollups, statements and their days keep the parts
of top-ups (by source) and of credits used (debits, refunds, expired, negative
adjustments), rebuilt here from the entries. Statements and their days become append-only
at the database. Accounts learn the first open day (no entry is dated into a closed month)
and a time zone waiting for the next month."""

from django.db import migrations, models
import django.db.models.deletion

PARTS = ["top_ups_subscription", "top_ups_purchase", "top_ups_promotional", "top_ups_adjustment",
         "debits", "refunds", "expired", "adjustments"]

# Each day's parts from its entries, a top-up by its lot's source.
DAY_FIGURES = """
SELECT e.account_id, e.local_date,
       coalesce(sum(e.amount) FILTER (WHERE e.kind = 'top_up' AND l.source = 'subscription'), 0),
       coalesce(sum(e.amount) FILTER (WHERE e.kind = 'top_up' AND l.source = 'purchase'), 0),
       coalesce(sum(e.amount) FILTER (WHERE e.kind = 'top_up' AND l.source = 'promotional'), 0),
       coalesce(sum(e.amount) FILTER (WHERE (e.kind = 'top_up' AND l.source = 'adjustment')
                                         OR (e.kind = 'adjustment' AND e.amount > 0)), 0),
       coalesce(-sum(e.amount) FILTER (WHERE e.kind = 'debit'), 0),
       coalesce(sum(e.amount) FILTER (WHERE e.kind = 'refund'), 0),
       coalesce(-sum(e.amount) FILTER (WHERE e.kind = 'expiry'), 0),
       coalesce(-sum(e.amount) FILTER (WHERE e.kind = 'adjustment' AND e.amount < 0), 0),
       (array_agg(e.balance_after ORDER BY e.id DESC))[1]
  FROM ledger_entry e LEFT JOIN ledger_lot l ON l.entry_id = e.id
 GROUP BY e.account_id, e.local_date
"""
COLUMNS = ", ".join(PARTS)
REBUILD = f"""
DELETE FROM ledger_dailyrollup;
INSERT INTO ledger_dailyrollup (account_id, date, {COLUMNS}, balance) {DAY_FIGURES};
DELETE FROM ledger_statementday;
INSERT INTO ledger_statementday (statement_id, date, {COLUMNS}, balance)
SELECT s.id, r.date, {", ".join("r." + p for p in PARTS)}, r.balance
  FROM ledger_statement s JOIN ledger_dailyrollup r ON r.account_id = s.account_id
 WHERE r.date >= s.period AND r.date < s.period + interval '1 month';
UPDATE ledger_statement s SET {", ".join(f"{p} = d.{p}" for p in PARTS)}
  FROM (SELECT statement_id, {", ".join(f"sum({p}) AS {p}" for p in PARTS)}
          FROM ledger_statementday GROUP BY statement_id) d
 WHERE d.statement_id = s.id;
UPDATE ledger_account a SET open_from = (s.period + interval '1 month')::date
  FROM (SELECT account_id, max(period) AS period FROM ledger_statement GROUP BY account_id) s
 WHERE s.account_id = a.id;
"""

APPEND_ONLY = """
CREATE FUNCTION ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_statement_append_only BEFORE UPDATE OR DELETE ON ledger_statement
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_statementday_append_only BEFORE UPDATE OR DELETE ON ledger_statementday
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER ledger_statement_append_only ON ledger_statement;
DROP TRIGGER ledger_statementday_append_only ON ledger_statementday;
DROP FUNCTION ledger_append_only();
"""


NEW_PARTS = ["top_ups_subscription", "top_ups_purchase", "top_ups_promotional", "top_ups_adjustment",
             "adjustments"]


class Migration(migrations.Migration):

    dependencies = [("ledger", "0007_key_spaces_notify_and_posting_functions")]

    operations = [
        migrations.AddField(
            model_name="account", name="next_time_zone",
            field=models.CharField(blank=True, max_length=64,
                                   help_text="A new time zone, in force from the month after the current one closes."),
        ),
        migrations.AddField(
            model_name="account", name="open_from",
            field=models.DateField(blank=True, null=True,
                                   help_text="The first day of the first month without a statement; no entry is dated before it."),
        ),
        migrations.AlterField(
            model_name="account", name="time_zone",
            field=models.CharField(default="UTC", help_text="The zone days and months are in.", max_length=64),
        ),
        migrations.RenameField(model_name="dailyrollup", old_name="credits_used", new_name="debits"),
        migrations.RemoveField(model_name="dailyrollup", name="top_ups"),
        migrations.RenameField(model_name="statementday", old_name="credits_used", new_name="debits"),
        migrations.RemoveField(model_name="statementday", name="top_ups"),
        migrations.RenameField(model_name="statement", old_name="consumed", new_name="debits"),
        migrations.RenameField(model_name="statement", old_name="refunded", new_name="refunds"),
        migrations.RemoveField(model_name="statement", name="purchased"),
        *[
            migrations.AddField(model_name=model, name=name, field=models.BigIntegerField(default=0))
            for model in ("dailyrollup", "statementday", "statement")
            for name in NEW_PARTS
        ],
        *[
            migrations.AlterField(model_name=model, name=name, field=models.BigIntegerField(default=0))
            for model in ("dailyrollup", "statementday", "statement")
            for name in ("debits", "refunds", "expired")
        ],
        *[
            migrations.AlterField(model_name=model, name=name,
                                  field=models.BigIntegerField(default=0, help_text=text))
            for model in ("dailyrollup", "statementday", "statement")
            for name, text in (("top_ups_adjustment", "Positive adjustments."),
                               ("adjustments", "Negative adjustments, as a positive figure."))
        ],
        migrations.AlterField(
            model_name="statementday", name="statement",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="days",
                                    to="ledger.statement"),
        ),
        migrations.RunSQL(REBUILD, migrations.RunSQL.noop),
        migrations.RunSQL(APPEND_ONLY, DROP_APPEND_ONLY),
    ]
