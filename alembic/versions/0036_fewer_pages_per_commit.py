"""Fewer b-trees written per commit: `outbox (key)` is dropped (the saga page looks only for the
saga's unpublished messages, through `outbox (published_at, id)`), and on SQLite
`saga_search_keys` becomes a WITHOUT ROWID table: its small rows live in the primary key's
b-tree instead of a rowid table plus an index beside it (docs/benchmarks.md, "Round twelve").
`inbox` stays a rowid table: a participant's inbox row holds its reply, and such rows inserted
at random places in a WITHOUT ROWID b-tree cost ~40 % more than appended to a rowid table.

PostgreSQL has no rowid tables; there only the index goes.

Revision ID: 0036_fewer_pages_per_commit
Revises: 0035_operator_audit
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0036_fewer_pages_per_commit"
down_revision: str | Sequence[str] | None = "0035_operator_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each table with the indexes to build again after it is copied (SQLite drops them with it).
REBUILT = {
    "saga_search_keys": (("ix_saga_search_keys_value_name", ("value", "name")),),
}


def upgrade() -> None:
    op.drop_index("ix_outbox_key", table_name="outbox")
    if op.get_bind().dialect.name == "sqlite":
        for table, indexes in REBUILT.items():
            _rebuild(table, indexes, without_rowid=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, indexes in REBUILT.items():
            _rebuild(table, indexes, without_rowid=False)
    op.create_index("ix_outbox_key", "outbox", ["key"])


def _rebuild(
    table: str, indexes: Sequence[tuple[str, Sequence[str]]], *, without_rowid: bool
) -> None:
    """Copy `table` into a table of the same definition, with or without a rowid, and swap them:
    SQLite cannot change that of an existing table. The rows keep their primary key order."""
    conn = op.get_bind()
    ddl = conn.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": table},
    ).scalar_one()
    body = ddl[ddl.index("(") :].rstrip()
    suffix = " WITHOUT ROWID"
    if body.upper().endswith(suffix):
        body = body[: -len(suffix)].rstrip()
    staging = f"_{table}_rebuilt"
    op.execute(f"CREATE TABLE {staging} {body}{suffix if without_rowid else ''}")
    op.execute(f"INSERT INTO {staging} SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {staging} RENAME TO {table}")
    for name, columns in indexes:
        op.create_index(name, table, list(columns))
