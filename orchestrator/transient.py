"""Which database failures a retry of the same transaction can cure: the database is unreachable
or restarting, the transaction was a deadlock victim, SQLite was busy."""

from __future__ import annotations

import sqlalchemy as sa

# SQLSTATEs worth retrying: serialization failure, deadlock; and by class: 08 connection
# exception, 53 insufficient resources, 57P shutdown / not yet accepting connections.
_TRANSIENT_SQLSTATES = {"40001", "40P01"}
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")


def is_transient(exc: BaseException) -> bool:
    """True for failures that retrying the same transaction later can cure: the database is
    unreachable or restarting, a deadlock victim, SQLite busy."""
    if isinstance(exc, (OSError, ConnectionError, sa.exc.InterfaceError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate is not None:
            code = str(sqlstate)
            return code in _TRANSIENT_SQLSTATES or code.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        text = str(exc.orig)
        return "connection" in text.lower() or "deadlock" in text
    return False
