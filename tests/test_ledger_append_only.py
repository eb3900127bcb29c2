"""Entries are append-only: the ORM refuses edits everywhere, PostgreSQL refuses them too."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from ledger.models import Entry
from tests.ledger_helpers import new_account

pytestmark = [pytest.mark.ledger, pytest.mark.django_db]


def test_the_orm_refuses_to_edit_or_delete_entries() -> None:
    account = new_account(100)
    entry = Entry.objects.get(account=account)
    entry.amount = 1_000_000
    with pytest.raises(TypeError, match="append-only"):
        entry.save()
    with pytest.raises(TypeError, match="append-only"):
        entry.delete()
    with pytest.raises(TypeError, match="append-only"):
        Entry.objects.filter(account=account).update(amount=5)
    with pytest.raises(TypeError, match="append-only"):
        Entry.objects.filter(account=account).delete()
    assert Entry.objects.get(account=account).amount == 100


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET amount = 999999 WHERE account_id = %s",
        "DELETE FROM ledger_entry WHERE account_id = %s",
    ],
)
def test_update_and_delete_fail_at_the_database(statement: str) -> None:
    from django.db.utils import DatabaseError

    account = new_account(100)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [account.pk])
    assert Entry.objects.get(account=account).amount == 100
