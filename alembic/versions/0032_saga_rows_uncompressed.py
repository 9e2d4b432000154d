"""Keep saga rows inline and uncompressed on PostgreSQL.

A saga row (its state, input and result as JSONB) is ~2.5 KB, just over the 2 KB at which
PostgreSQL compresses a row's largest values (pglz) — so every step compressed the state on
UPDATE and decompressed it on the next load. `toast_tuple_target` raises that threshold to
what fits a page: rows up to ~8 KB now stay as they are, and larger ones are still compressed
(and moved out of line) as before. Nothing to do on SQLite, which never compresses.

Revision ID: 0032_saga_rows_uncompressed
Revises: 0031_operator_actions
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0032_saga_rows_uncompressed"
down_revision: str | Sequence[str] | None = "0031_operator_actions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The most PostgreSQL accepts with 8 KB pages (BLCKSZ minus the page and tuple headers).
TOAST_TUPLE_TARGET = 8160


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE saga_instances SET (toast_tuple_target = {TOAST_TUPLE_TARGET})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE saga_instances RESET (toast_tuple_target)")
