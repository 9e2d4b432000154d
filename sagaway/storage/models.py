"""The declarative Base and column types every part's tables are declared with.

Each part declares its own tables on `Base` next to its code (`orchestrator/models.py`,
`sagaway/outbox/models.py`, `gateway/models.py`...); `Base.metadata` is what Alembic compares
against once the composition root has imported them all (`sagaway.cli.schema`). Hot paths use
each module's Core `Table` handles rather than the ORM.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

# JSONB on PostgreSQL (indexable, compact); plain JSON text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id is INTEGER there.
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that stores UTC and always returns aware UTC datetimes.

    PostgreSQL keeps the zone itself; SQLite stores text without one, so values are turned to
    UTC before they are written (text order is then time order, which timers rely on) and read
    back as UTC. A naive datetime is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Timestamps are always stored in UTC.
Timestamp = UtcDateTime()


def sqlite_timestamp_text(value: datetime) -> str:
    """The text a `Timestamp` is stored as on SQLite (SQLAlchemy's DATETIME format, in UTC), for
    statements run on the sqlite3 connection itself (sagaway/sqlite/direct.py)."""
    utc = value.astimezone(UTC) if value.tzinfo is not None else value
    return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def from_sqlite_timestamp_text(text: str) -> datetime:
    """A `Timestamp` read from SQLite as text, aware UTC as `UtcDateTime` returns it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; constraint names follow NAMING_CONVENTION so migrations can name them."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
