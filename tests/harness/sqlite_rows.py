"""Rows of a SQLite table as the file holds them: each value with its storage type, for tests that
compare what two write paths stored."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TypedRow = tuple[tuple[str, Any], ...]


def typed_rows(
    path: Path, table: str, columns: Sequence[str], order_by: str = "rowid"
) -> list[TypedRow]:
    """Each row of `table`: ((typeof(column), value), ...) for `columns`, in `order_by` order."""
    typed = ", ".join(f"typeof({c}), {c}" for c in columns)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT {typed} FROM {table} ORDER BY {order_by}").fetchall()
    return [tuple(zip(row[::2], row[1::2], strict=True)) for row in rows]
