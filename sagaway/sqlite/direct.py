"""Statements on an inline engine's own sqlite3 connection, outside SQLAlchemy.

Below the peak each saga hop is a batch of one message, and a handful of statements ran once
per message through SQLAlchemy: the polling relay's read and mark, the outbox insert, the
inbox's claim and stored reply, the orchestrator's load and write of a saga. For each,
SQLAlchemy's execution (its context, the bind and result processing of a few columns) cost
three to five times the statement: the relay's one-row read took ~125 µs, ~35 µs here; an
outbox insert ~65 µs, ~13 µs here (docs/benchmarks.md, "Round nine"). Those statements use
these functions on inline engines; everything else stays on SQLAlchemy.

- `read_direct` and `write_direct` run in autocommit: a SELECT sees its own snapshot, a write is
  its own transaction. A busy write lock is waited for on the event loop, as every inline
  transaction does (`call_when_unlocked`). They use the engine's kept connections (kept.py).
- `run_direct`, `run_many_direct` and `select_direct` run inside the caller's transaction, which
  holds the write lock already (`holding_inline_transaction`).
- Errors are raised as SQLAlchemy's (`sa.exc.OperationalError`, ...), as from any statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sagaway.sqlite.inline import (
    InlineAdaptedConnection,
    InlineAsyncEngine,
    call_when_unlocked,
    holds_transaction,
)


def _driver_of(conn: AsyncConnection) -> InlineAdaptedConnection:
    adapted = conn.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    assert isinstance(adapted, InlineAdaptedConnection), "not an inline engine's connection"
    return adapted


def _as_sqlalchemy_error(sql: str, params: Any, exc: sqlite3.Error) -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError.instance(sql, params, exc, sqlite3.Error)  # type: ignore[return-value]


async def _run(adapted: InlineAdaptedConnection, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
    connection = adapted.sqlite_connection
    if connection.in_transaction:
        # Kept connections never are; a statement here would join someone's transaction.
        raise RuntimeError("a direct statement on a connection inside a transaction")
    try:
        cursor: sqlite3.Cursor = await call_when_unlocked(
            lambda: connection.execute(sql, params), adapted.busy_timeout_s
        )
    except sqlite3.Error as exc:
        raise _as_sqlalchemy_error(sql, params, exc) from exc
    return cursor


def holding_inline_transaction(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn` if it is an inline engine's connection whose
    transaction has begun (so it holds its lock or snapshot), else None."""
    if not holds_transaction(conn):
        return None
    return _driver_of(conn).sqlite_connection


def run_many_direct(connection: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """Run `sql` once per parameter set in `rows` (an executemany) inside the transaction
    `connection` holds (`holding_inline_transaction`); returns the rows changed in all."""
    try:
        return int(connection.executemany(sql, rows).rowcount)
    except sqlite3.Error as exc:
        raise _as_sqlalchemy_error(sql, rows, exc) from exc


def select_direct(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one SELECT inside the transaction `connection` holds."""
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise _as_sqlalchemy_error(sql, params, exc) from exc


def run_direct(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    """One statement inside the transaction `connection` holds; returns the rows it changed."""
    try:
        return int(connection.execute(sql, params).rowcount)
    except sqlite3.Error as exc:
        raise _as_sqlalchemy_error(sql, params, exc) from exc


async def read_direct(engine: InlineAsyncEngine, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """The rows of one SELECT, as sqlite3 gives them (text for JSON and timestamps)."""
    async with engine.reading() as conn:
        cursor = await _run(_driver_of(conn), sql, params)
        return cursor.fetchall()


async def write_direct(engine: InlineAsyncEngine, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one writing statement as its own transaction; returns the rows it changed."""
    async with engine.writing() as conn:
        cursor = await _run(_driver_of(conn), sql, params)
        return int(cursor.rowcount)
