"""Cursors whose statements PostgreSQL parses and plans once per connection.

Django's own cursors bind parameters on the client, so PostgreSQL parses and plans every
statement afresh; for short statements run constantly (a posting's, the API's key lookup)
that costs more than running them, and a posting pays it while its account is locked.
These cursors bind on the server, and psycopg prepares a statement once the connection has
run it ``prepare_threshold`` times (settings: ``DB_PREPARE_THRESHOLD``). Only plans are
kept, never results. On other databases they are Django's own cursors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper


class Cursor(Protocol):
    """What callers use of a cursor: Django's wrapper or psycopg's own."""

    def execute(self, sql: str, params: Sequence[Any] | None = ...) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


def unobserved(connection: BaseDatabaseWrapper) -> bool:
    """Whether nothing logs this connection's queries (DEBUG, assertNumQueries) or wraps
    them (``connection.execute_wrapper``), so psycopg may be used without Django's layer
    around each statement, which costs more than a short statement's round trip."""
    return not connection.queries_logged and not connection.execute_wrappers


@contextlib.contextmanager
def prepared_cursors(count: int) -> Iterator[list[Cursor]]:
    """``count`` such cursors: several, since in a pipeline each keeps its own result."""
    connection = connections[DEFAULT_DB_ALIAS]  # once: each use of the proxy looks it up
    if connection.vendor != "postgresql":
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(connection.cursor()) for _ in range(count)]
        return
    # What connection.cursor() does, with the server-binding class and its checks made once.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    if unobserved(connection):
        # psycopg's cursors as they are, errors translated as Django's would be, and kept
        # for the connection's next statements: making one costs about as much as a
        # prepared statement's round trip.
        kept = _kept_cursors(connection)
        cursors = [kept.pop() if kept else _server_binding(connection) for _ in range(count)]
        try:
            with connection.wrap_database_errors:
                yield cursors
        finally:
            kept.extend(cursors)
        return
    # The same error wrapping, execute wrappers and (under assertNumQueries) log.
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with contextlib.ExitStack() as stack:
        with connection.wrap_database_errors:
            raw = [stack.enter_context(_server_binding(connection)) for _ in range(count)]
        yield [wrap(cursor) for cursor in raw]


def _server_binding(connection: BaseDatabaseWrapper) -> Any:
    """A new psycopg cursor binding parameters on the server (unknown to the stubs)."""
    from django.db.backends.postgresql.base import ServerBindingCursor

    server_binding: Any = ServerBindingCursor  # psycopg's Cursor, unknown to the stubs
    return server_binding(connection.connection)


def _kept_cursors(connection: BaseDatabaseWrapper) -> list[Any]:
    """The idle cursors kept for this database connection (none for a new one). A cursor's
    next execute discards its previous result; cursors in use are not in the list, so
    nested use makes fresh ones."""
    kept: tuple[Any, list[Any]] | None = getattr(connection, "_kept_cursors", None)
    if kept is None or kept[0] is not connection.connection:
        kept = (connection.connection, [])
        connection._kept_cursors = kept  # type: ignore[attr-defined]
    return kept[1]


@contextlib.contextmanager
def prepared_cursor() -> Iterator[Cursor]:
    with prepared_cursors(1) as (cursor,):
        yield cursor
