"""`check_ledger` is clean after the demo and names every break it finds."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing.models import Organization
from ledger.models import Account, DailyRollup, Entry, Lot
from tests.ledger_helpers import new_account

pytestmark = pytest.mark.django_db


def test_seed_demo_is_clean_and_running_it_twice_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo-standard-manager" in out and "demo-password" in out
    assert set(Organization.objects.values_list("slug", flat=True)) >= {
        "demo-free",
        "demo-standard",
        "demo-pro",
        "demo-enterprise",
    }
    balances = list(Account.objects.order_by("id").values_list("balance", "held"))
    counts = (Entry.objects.count(), Lot.objects.count(), balances)
    call_command("check_ledger")
    assert "Ledger clean" in capsys.readouterr().out
    call_command("seed_demo")
    balances = list(Account.objects.order_by("id").values_list("balance", "held"))
    assert (Entry.objects.count(), Lot.objects.count(), balances) == counts


@pytest.mark.ledger
def test_check_ledger_names_every_break() -> None:
    account = new_account(100)
    Account.objects.filter(pk=account.pk).update(balance=90, held=5)
    DailyRollup.objects.filter(account=account).update(debits=7)
    Lot.objects.filter(account=account).update(remaining=80)
    with connection.cursor() as cursor:  # a row slipped in past the posting functions
        cursor.execute(
            "INSERT INTO ledger_entry (account_id, kind, operation, amount, balance_after, "
            "refund_of_expired, memo, created_at, local_date) "
            "SELECT account_id, 'debit', 'rogue', -10, 95, 0, '', created_at, local_date "
            "FROM ledger_entry WHERE account_id = %s",
            [account.pk],
        )
    with pytest.raises(CommandError, match="break"):
        call_command("check_ledger")
    from ledger.checks import account_breaks

    text = "\n".join(account_breaks(Account.objects.get(pk=account.pk)))
    assert "balance_after 95 != previous 100 + amount -10" in text
    assert "balance 90 != last balance_after 95" in text
    assert "sum of lots' remaining 80" in text
    assert "held 5 != sum of pending holds 0" in text
    assert "daily rollup" in text
