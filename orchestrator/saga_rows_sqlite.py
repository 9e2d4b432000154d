"""A saga step's statements on an inline SQLite transaction's own sqlite3 connection.

Each reply that moves a saga loads it and its timers, updates it, records its steps and
replaces its timer, and each start looks for its correlation id and inserts the saga with its
search keys: about nine statements a step, and through SQLAlchemy each cost three to five
times what SQLite spent on it (sagaway/sqlite/direct.py says why, docs/benchmarks.md "Round
nine" gives the figures). `SagaSession` uses these on inline SQLite and the statements of
`saga_rows` elsewhere; both read and write the same text: JSON through the engines' serializer
(Python None is JSON `null`, as SQLAlchemy's JSON type stores it) and timestamps as
SQLAlchemy's SQLite DATETIME writes them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from orchestrator.saga_rows import LoadedSaga
from sagaway.sqlite.direct import run_direct, run_many_direct, select_direct
from sagaway.storage.database import from_json_text, json_text
from sagaway.storage.models import from_sqlite_timestamp_text, sqlite_timestamp_text


class StoredSaga(NamedTuple):
    """A saga_instances row as `LOAD_SAGAS` gives it (the columns `LoadedSaga.from_row` reads)."""

    id: str
    saga_type: str
    definition_version: int
    status: str
    data: Any
    state: Any
    result: Any
    failure: Any
    correlation_id: str
    reply_to: str | None
    reply_mode: str | None
    principal: str | None
    created_at: datetime
    version: int


class StoredTimer(NamedTuple):
    """A timers row as `LOAD_TIMERS` gives it."""

    id: int
    saga_id: str
    kind: str
    step: str
    attempt: int
    payload: Any


_SAGA_COLUMNS = (
    "id", "saga_type", "definition_version", "status", "current_step", "data", "state", "result",
    "failure", "correlation_id", "reply_to", "reply_mode", "principal", "created_at",
    "updated_at", "version",
)  # fmt: skip
_INSERT_SAGAS = (
    f"INSERT INTO saga_instances ({', '.join(_SAGA_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_SAGA_COLUMNS))})"
)
_INSERT_SEARCH_KEYS = "INSERT INTO saga_search_keys (saga_id, name, value) VALUES (?, ?, ?)"
# Two indexed lookups: an OR of both would scan the table.
_STARTS_BY_CORRELATION = (
    "SELECT id, correlation_id FROM saga_instances"
    " WHERE correlation_id IN (SELECT value FROM json_each(?))"
)
_STARTS_BY_ID = (
    "SELECT id, correlation_id FROM saga_instances WHERE id IN (SELECT value FROM json_each(?))"
)
_LOAD_SAGAS = (
    "SELECT id, saga_type, definition_version, status, data, state, result, failure,"
    " correlation_id, reply_to, reply_mode, principal, created_at, version"
    " FROM saga_instances WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_LOAD_TIMERS = (
    "SELECT id, saga_id, kind, step, attempt, payload FROM timers"
    " WHERE saga_id IN (SELECT value FROM json_each(?))"
)
_UPDATE_SAGA = (
    "UPDATE saga_instances SET status = ?, current_step = ?, data = ?, state = ?, result = ?,"
    " failure = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?"
)
# A step that leaves the status as it was: SQLite rewrites the entries of every index on a
# column the SET names, even to the same value, and `saga_instances` has three on `status`
# (two WAL pages of each step's ~15).
_UPDATE_SAGA_SAME_STATUS = (
    "UPDATE saga_instances SET current_step = ?, data = ?, state = ?, result = ?,"
    " failure = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?"
)
_INSERT_STEPS = (
    "INSERT INTO saga_steps (saga_id, step_name, kind, status, attempt, command_message_id,"
    " command, sent_at, replied_at, reply_payload, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TIMERS = (
    "INSERT INTO timers (saga_id, kind, step, attempt, due_at, payload, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_TIMERS = "DELETE FROM timers WHERE id IN (SELECT value FROM json_each(?))"


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else sqlite_timestamp_text(value)


def load_sagas(sqlite: sqlite3.Connection, ids: Sequence[str]) -> list[StoredSaga]:
    rows = select_direct(sqlite, _LOAD_SAGAS, (orjson.dumps(list(ids)),))
    return [
        StoredSaga(
            row[0], row[1], row[2], row[3],
            from_json_text(row[4]), from_json_text(row[5]),
            from_json_text(row[6]), from_json_text(row[7]),
            row[8], row[9], row[10], row[11],
            from_sqlite_timestamp_text(row[12]), row[13],
        )  # fmt: skip
        for row in rows
    ]


def load_timers(sqlite: sqlite3.Connection, saga_ids: Sequence[str]) -> list[StoredTimer]:
    rows = select_direct(sqlite, _LOAD_TIMERS, (orjson.dumps(list(saga_ids)),))
    return [
        StoredTimer(row[0], row[1], row[2], row[3], row[4], from_json_text(row[5])) for row in rows
    ]


def existing_starts(
    sqlite: sqlite3.Connection, correlation_ids: Sequence[str], saga_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(id, correlation id) of the sagas that have one of these correlation ids or ids."""
    found = select_direct(sqlite, _STARTS_BY_CORRELATION, (orjson.dumps(list(correlation_ids)),))
    return found + select_direct(sqlite, _STARTS_BY_ID, (orjson.dumps(list(saga_ids)),))


def insert_sagas(sqlite: sqlite3.Connection, sagas: Sequence[LoadedSaga], now: datetime) -> None:
    """The saga_instances rows of sagas not stored yet (lock version 1), and their search keys."""
    rows: list[tuple[Any, ...]] = []
    keys: list[tuple[str, str, str]] = []
    for saga in sagas:
        row = saga.insert_row(now)
        rows.append(
            (
                row["id"], row["saga_type"], row["definition_version"], row["status"],
                row["current_step"], json_text(row["data"]), json_text(row["state"]),
                json_text(row["result"]), json_text(row["failure"]), row["correlation_id"],
                row["reply_to"], row["reply_mode"], row["principal"],
                sqlite_timestamp_text(row["created_at"]), sqlite_timestamp_text(now),
                row["version"],
            )  # fmt: skip
        )
        keys.extend((saga.id, name, value) for name, value in saga.search_keys.items())
    run_many_direct(sqlite, _INSERT_SAGAS, rows)
    if keys:
        run_many_direct(sqlite, _INSERT_SEARCH_KEYS, keys)


def update_sagas(sqlite: sqlite3.Connection, sagas: Sequence[LoadedSaga], now: datetime) -> int:
    """Write the sagas' rows where their lock version still matches; returns how many did.
    A saga whose status did not change is written without setting it."""
    moved: list[tuple[Any, ...]] = []
    same: list[tuple[Any, ...]] = []
    stamp = sqlite_timestamp_text(now)
    for saga in sagas:
        row = saga.row(now)
        values = (
            row["current_step"], json_text(row["data"]), json_text(row["state"]),
            json_text(row["result"]), json_text(row["failure"]), stamp, saga.id, saga.version,
        )  # fmt: skip
        if saga.stored_status == row["status"]:
            same.append(values)
        else:
            moved.append((row["status"], *values))
    matched = run_many_direct(sqlite, _UPDATE_SAGA_SAME_STATUS, same) if same else 0
    return matched + (run_many_direct(sqlite, _UPDATE_SAGA, moved) if moved else 0)


def insert_steps(sqlite: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """saga_steps rows as `saga_rows.step_row` makes them."""
    run_many_direct(
        sqlite,
        _INSERT_STEPS,
        [
            (
                r["saga_id"], r["step_name"], r["kind"], r["status"], r["attempt"],
                r["command_message_id"], json_text(r["command"]), _stamp(r["sent_at"]),
                _stamp(r["replied_at"]), json_text(r["reply_payload"]), r["error"],
            )  # fmt: skip
            for r in rows
        ],
    )


def insert_timers(sqlite: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """timers rows as `saga_rows.timer_row` makes them."""
    run_many_direct(
        sqlite,
        _INSERT_TIMERS,
        [
            (
                r["saga_id"], r["kind"], r["step"], r["attempt"],
                sqlite_timestamp_text(r["due_at"]), json_text(r["payload"]),
                sqlite_timestamp_text(r["created_at"]),
            )  # fmt: skip
            for r in rows
        ],
    )


def delete_timers(sqlite: sqlite3.Connection, ids: Sequence[int]) -> None:
    run_direct(sqlite, _DELETE_TIMERS, (orjson.dumps(list(ids)),))
