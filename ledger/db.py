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
from collections.abc import Iterator
from typing import Any

from django.db import connection
from django.db.backends.utils import CursorWrapper


@contextlib.contextmanager
def prepared_cursors(count: int) -> Iterator[list[CursorWrapper]]:
    """``count`` such cursors: several, since in a pipeline each keeps its own result."""
    with contextlib.ExitStack() as stack:
        if connection.vendor != "postgresql":
            yield [stack.enter_context(connection.cursor()) for _ in range(count)]
            return
        from django.db.backends.postgresql.base import ServerBindingCursor

        server_binding: Any = ServerBindingCursor  # psycopg's Cursor, unknown to the stubs
        # What connection.cursor() does, with the server-binding class and its checks made
        # once: the same error wrapping, execute wrappers and (under assertNumQueries) log.
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        connection.validate_thread_sharing()
        wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
        with connection.wrap_database_errors:
            raw = [server_binding(connection.connection) for _ in range(count)]
        yield [stack.enter_context(wrap(cursor)) for cursor in raw]


@contextlib.contextmanager
def prepared_cursor() -> Iterator[CursorWrapper]:
    with prepared_cursors(1) as (cursor,):
        yield cursor
