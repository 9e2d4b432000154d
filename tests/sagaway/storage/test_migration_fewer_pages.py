"""Migration 0036: `outbox (key)` goes, and on SQLite `saga_search_keys` becomes a WITHOUT ROWID
table — with every row kept, both ways, and the models saying the same."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from sagaway.cli.schema import all_metadata
from sagaway.storage.database import sync_url
from sagaway.storage.migrate import downgrade, upgrade

BEFORE = "0035_operator_audit"
REBUILT = ("saga_search_keys",)
KEY_ROWS = [(f"saga-{i:04d}", "order_id", f"order-{i}") for i in range(300)]


def _file(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def _without_rowid(path: Path, table: str) -> bool:
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    return bool(str(sql).upper().split()[-2:] == ["WITHOUT", "ROWID"])


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }


def _keys(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT saga_id, name, value FROM saga_search_keys ORDER BY saga_id"
        ).fetchall()


def test_sqlite_tables_lose_their_rowid_and_keep_every_row_both_ways(sqlite_url: str) -> None:
    path = _file(sqlite_url)
    upgrade(sqlite_url, BEFORE)
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO saga_search_keys VALUES (?, ?, ?)", KEY_ROWS)
    assert "ix_outbox_key" in _indexes(path)

    upgrade(sqlite_url)

    for table in REBUILT:
        assert _without_rowid(path, table)
    assert _keys(path) == KEY_ROWS
    assert "ix_saga_search_keys_value_name" in _indexes(path)
    assert "ix_outbox_key" not in _indexes(path)
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO saga_search_keys VALUES (?, ?, ?)", KEY_ROWS[0])

    downgrade(sqlite_url, BEFORE)

    for table in REBUILT:
        assert not _without_rowid(path, table)
    assert _keys(path) == KEY_ROWS
    assert {"ix_outbox_key", "ix_saga_search_keys_value_name"} <= _indexes(path)


def test_the_models_make_the_same_sqlite_tables_as_the_migration(tmp_path: Path) -> None:
    """Alembic's comparison does not look at WITHOUT ROWID: the models must say it themselves."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    try:
        all_metadata().create_all(engine)
    finally:
        engine.dispose()

    for table in REBUILT:
        assert _without_rowid(tmp_path / "models.db", table)
    assert "ix_outbox_key" not in _indexes(tmp_path / "models.db")


def test_postgresql_only_loses_the_outbox_key_index(pg_url: str) -> None:
    upgrade(pg_url)

    engine = sa.create_engine(sync_url(pg_url))
    try:
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("outbox")}
        downgrade(pg_url, BEFORE)
        restored = {ix["name"] for ix in sa.inspect(engine).get_indexes("outbox")}
    finally:
        engine.dispose()
    assert "ix_outbox_key" not in indexes
    assert "ix_outbox_key" in restored
