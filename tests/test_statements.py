"""Closed months never change: statements are append-only at the database, check_ledger
verifies them against the entries, and a change of time zone waits for the next month."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.db import DatabaseError, connection, transaction

from billing import closing
from billing.models import Organization
from ledger import postings
from ledger.checks import account_breaks
from ledger.models import Entry, Statement, StatementDay
from ledger.periods import add_months, month_start
from tests.close_helpers import backdate, post_month
from tests.factories import make_org

pytestmark = pytest.mark.django_db

NOVEMBER = dt.date(2026, 11, 1)
DECEMBER = dt.date(2026, 12, 1)
UTC = zoneinfo.ZoneInfo("UTC")


def _closed_november(time_zone: str = "UTC") -> Organization:
    org = make_org("standard", time_zone=time_zone)
    backdate(org, month_start(NOVEMBER, org.tzinfo))
    post_month(org, NOVEMBER)
    closing.close_organization_month(org, NOVEMBER, now=month_start(DECEMBER, org.tzinfo))
    return org


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_statement SET closing_balance = closing_balance + 1 WHERE account_id = %s",
        "DELETE FROM ledger_statement WHERE account_id = %s",
        "UPDATE ledger_statementday SET debits = 0 WHERE statement_id IN "
        "(SELECT id FROM ledger_statement WHERE account_id = %s)",
        "DELETE FROM ledger_statementday WHERE statement_id IN "
        "(SELECT id FROM ledger_statement WHERE account_id = %s)",
    ],
)
def test_the_database_refuses_to_change_a_statement(statement: str) -> None:
    org = _closed_november()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [org.account_id])
    assert account_breaks(org.account) == []


def _tampered(org: Organization, sql: str) -> list[str]:
    """What check_ledger says after ``sql`` changed a statement past its trigger (as only a
    superuser could)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off
        cursor.execute(sql, [org.account_id])
        cursor.execute("SET LOCAL session_replication_role = origin")
    org.account.refresh_from_db()
    return account_breaks(org.account)


def test_check_ledger_finds_a_statement_that_no_longer_matches_the_entries() -> None:
    org = _closed_november()
    breaks = _tampered(
        org,
        "UPDATE ledger_statement SET debits = debits - 100, closing_balance = "
        "closing_balance + 100 WHERE account_id = %s",
    )
    assert any("statement 2026-11: figures" in line for line in breaks), breaks


def test_check_ledger_finds_a_missing_statement_day() -> None:
    org = _closed_november()
    breaks = _tampered(
        org,
        "DELETE FROM ledger_statementday WHERE id = (SELECT min(d.id) FROM "
        "ledger_statementday d JOIN ledger_statement s ON s.id = d.statement_id "
        "WHERE s.account_id = %s)",
    )
    assert any("statement 2026-11: days" in line and "differ from the entries" in line for line in breaks)


def test_check_ledger_finds_a_broken_chain_of_months() -> None:
    org = _closed_november()
    closing.close_organization_month(org, DECEMBER, now=month_start(add_months(DECEMBER, 1), org.tzinfo))
    breaks = _tampered(
        org,
        "UPDATE ledger_statement SET brought_forward = brought_forward + 5, "
        "closing_balance = closing_balance + 5 WHERE account_id = %s AND period = '2026-12-01'",
    )
    assert any("statement 2026-12: brought forward" in line for line in breaks), breaks


def test_usage_reported_after_its_month_closed_lands_in_the_open_month() -> None:
    org = _closed_november()
    late = month_start(DECEMBER, UTC) - dt.timedelta(hours=2)  # a job that ran on Nov 30
    postings.debit(org.account, 10, key="late", operation="op", now=late)
    assert Entry.objects.get(account=org.account, operation="op").local_date == DECEMBER
    statement = Statement.objects.get(account=org.account, period=NOVEMBER)
    closing.close_organization_month(org, DECEMBER, now=month_start(add_months(DECEMBER, 1), UTC))
    assert Statement.objects.get(pk=statement.pk).closing_balance == statement.closing_balance
    assert account_breaks(org.account) == []


def test_a_time_zone_change_waits_for_the_next_month() -> None:
    """Pacific/Pago_Pago is UTC-11: changed on Dec 1 at 00:30 UTC, a debit would fall on
    Nov 30 there, a month already closed. It stays in December, and the new zone counts
    from January."""
    org = _closed_november()
    org.time_zone = "Pacific/Pago_Pago"
    org.save()
    org.account.refresh_from_db()
    assert (org.account.time_zone, org.account.next_time_zone) == ("UTC", "Pacific/Pago_Pago")
    moment = month_start(DECEMBER, UTC) + dt.timedelta(minutes=30)
    postings.debit(org.account, 10, key="after-change", operation="op", now=moment)
    assert Entry.objects.get(account=org.account, operation="op").local_date == DECEMBER
    january = add_months(DECEMBER, 1)
    closed = closing.close_organization_month(org, DECEMBER, now=month_start(january, UTC))
    assert closed.statement.debits >= 10
    org.account.refresh_from_db()
    assert (org.account.time_zone, org.account.next_time_zone) == ("Pacific/Pago_Pago", "")
    pago = zoneinfo.ZoneInfo("Pacific/Pago_Pago")
    # Jan 1, 05:00 UTC is still Dec 31 in Pago Pago: dated into January, never the closed December.
    postings.debit(
        org.account, 5, key="gap", operation="op", now=month_start(january, UTC) + dt.timedelta(hours=5)
    )
    assert Entry.objects.filter(account=org.account, operation="op").order_by("-id")[0].local_date == january
    # January closes at the end of January in Pago Pago, and every statement still checks.
    closing.close_organization_month(org, january, now=month_start(add_months(january, 1), pago))
    assert StatementDay.objects.filter(statement__account=org.account).exists()
    assert account_breaks(org.account) == []


def test_an_organization_that_has_posted_nothing_changes_zone_at_once() -> None:
    org = make_org("free")
    org.time_zone = "Asia/Tokyo"
    org.save()
    org.account.refresh_from_db()
    assert (org.account.time_zone, org.account.next_time_zone) == ("Asia/Tokyo", "")
