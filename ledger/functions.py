"""The posting functions' source (``ledger/sql/*.sql``) and its installation.

The functions live in the database schema ``ledger``. Installing drops that schema and
creates every function again from the files, in one transaction, so a database never
holds a mix of old and new functions. A migration installs them, and so does every
``migrate`` afterwards (``ledger.apps``), so the database follows the files.
"""

from __future__ import annotations

from pathlib import Path

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

SQL_DIR = Path(__file__).resolve().parent / "sql"
# In dependency order: the shared steps, the posting functions, the batch.
FILES = ["steps.sql", "postings.sql", "batch.sql"]
SCHEMA = "ledger"

_FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid), p.prosrc
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %s ORDER BY 1, 2
"""


def source() -> str:
    return "\n".join((SQL_DIR / name).read_text() for name in FILES)


def install(connection: BaseDatabaseWrapper) -> None:
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cursor.execute(source())


def differences(connection: BaseDatabaseWrapper) -> list[str]:
    """How the functions in the database differ from those the files define: each is
    installed afresh beside the installed ones, compared, and rolled back."""
    scratch = f"{SCHEMA}_installed"
    with connection.cursor() as cursor:
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute(_FUNCTIONS, [SCHEMA])
                installed = {row[:2]: row[2:] for row in cursor.fetchall()}
                cursor.execute(f"ALTER SCHEMA {SCHEMA} RENAME TO {scratch}")
                cursor.execute(source())
                cursor.execute(_FUNCTIONS, [SCHEMA])
                files = {row[:2]: row[2:] for row in cursor.fetchall()}
                raise _RollBack
        except _RollBack:
            pass
    found = []
    for name, args in sorted(installed.keys() | files.keys()):
        where = f"{SCHEMA}.{name}({args})"
        if (name, args) not in files:
            found.append(f"{where} is in the database but in no file")
        elif (name, args) not in installed:
            found.append(f"{where} is in the files but not in the database")
        elif installed[name, args] != files[name, args]:
            found.append(f"{where} differs from its file")
    return found


class _RollBack(Exception):
    pass
