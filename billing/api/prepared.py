"""A cursor for the API's hand-written per-request queries that PostgreSQL plans once.

Planning the key lookup's five-table join costs PostgreSQL several times what running it
does, and every request runs that lookup. Django's cursors bind parameters on the client,
so their statements can never be prepared; this one binds them on the server, and psycopg
prepares a statement once the connection has run it ``prepare_threshold`` times (settings:
``DB_PREPARE_THRESHOLD``). Results are never cached, only plans: a revoked key is refused on
its very next request. On SQLite, or with the threshold off, it is Django's own cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.utils import CursorWrapper


@contextmanager
def cursor() -> Iterator[CursorWrapper]:
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or not db.settings_dict["OPTIONS"].get("prepare_threshold"):
        with db.cursor() as django_cursor:
            yield django_cursor
        return
    from django.db.backends.postgresql.base import ServerBindingCursor

    server_binding: Any = ServerBindingCursor  # psycopg's Cursor, which the stubs do not know
    # What db.cursor() does, with the server-binding cursor class: the same health check,
    # error wrapping, execute wrappers and (under assertNumQueries) query log.
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    with db.wrap_database_errors:
        raw = server_binding(db.connection)
    wrapped = db.make_debug_cursor(raw) if db.queries_logged else db.make_cursor(raw)
    with wrapped as server_cursor:
        yield server_cursor
