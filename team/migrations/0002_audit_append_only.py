"""Audit records are append-only at the database: a trigger refuses every UPDATE, and
every DELETE of a record still inside its organization's audit window (the plan's
``audit_window_days``). ``team_audit_expired`` is that rule, used by the trigger and by the
daily prune (``team.audit.prune``) alike; an organization without a plan keeps its
records. TRUNCATE stays an operator's tool (the test runner empties tables with it)."""

from django.db import migrations

CREATE = """
CREATE FUNCTION team_audit_expired(org_id bigint, created timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT created < now() - make_interval(days => p.audit_window_days)
          FROM billing_subscription s JOIN billing_plan p ON p.id = s.plan_id
         WHERE s.organization_id = org_id
    ), false)
$$;

CREATE FUNCTION team_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND team_audit_expired(OLD.organization_id, OLD.created_at) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % refused on team_auditrecord', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER team_auditrecord_append_only
    BEFORE UPDATE OR DELETE ON team_auditrecord
    FOR EACH ROW EXECUTE FUNCTION team_audit_append_only();
"""

DROP = """
DROP TRIGGER team_auditrecord_append_only ON team_auditrecord;
DROP FUNCTION team_audit_append_only();
DROP FUNCTION team_audit_expired(bigint, timestamptz);
"""


class Migration(migrations.Migration):
    dependencies = [("team", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
