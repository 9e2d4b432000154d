"""The request store's per-saga statements on an inline SQLite transaction's own sqlite3
connection: the accepted request's insert, and its final result's select and update.

Through SQLAlchemy, storing a final reply (an expanding IN, compiled again per call, and an
update) took ~500 µs of the gateway's CPU per saga, ~250 µs here; SQLAlchemy's execution costs
several times the statements themselves (sagaway/sqlite/direct.py says why). `RequestStore`
uses these on inline SQLite and its SQLAlchemy statements elsewhere; both read and write the same
text: JSON through the engines' serializer and timestamps as SQLAlchemy's SQLite DATETIME writes
them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from gateway.request_state import RequestState
from sagaway.sqlite.direct import run_many_direct, select_direct
from sagaway.storage.database import from_json_text, json_text
from sagaway.storage.models import from_sqlite_timestamp_text, sqlite_timestamp_text

# The columns the gateway's routes give an accepted request, in the INSERT's order.
REQUEST_COLUMNS = (
    "id", "saga_type", "route", "mode", "reply_to", "callback_url", "idempotency_key",
    "body_hash", "principal", "gateway_id", "status", "received_at",
)  # fmt: skip
REQUEST_KEYS = frozenset(REQUEST_COLUMNS)
_TEXT_COLUMNS = REQUEST_COLUMNS[:-1]  # all but received_at
_INSERT_REQUEST = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_STILL_ACCEPTED = (
    "SELECT id, saga_type, route, mode, status, principal, body_hash, callback_url, result,"
    " error, received_at, completed_at FROM requests"
    " WHERE id IN (SELECT value FROM json_each(?)) AND status = 'accepted'"
)
_STORE_RESULT = (
    "UPDATE requests SET status = ?, result = ?, error = ?, completed_at = ?"
    " WHERE id = ? AND status = 'accepted'"
)


def insert_requests(sqlite: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert accepted requests, each with exactly `REQUEST_COLUMNS`. A taken idempotency key
    raises `sa.exc.IntegrityError`, as SQLAlchemy's insert does."""
    params = [
        (*(row[column] for column in _TEXT_COLUMNS), sqlite_timestamp_text(row["received_at"]))
        for row in rows
    ]
    run_many_direct(sqlite, _INSERT_REQUEST, params)


def still_accepted(sqlite: sqlite3.Connection, ids: Sequence[str]) -> list[RequestState]:
    """The requests among `ids` that no final result has reached yet."""
    rows = select_direct(sqlite, _STILL_ACCEPTED, (orjson.dumps(list(ids)),))
    return [
        RequestState(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
            from_json_text(row[8]),
            from_json_text(row[9]),
            from_sqlite_timestamp_text(row[10]),
            None if row[11] is None else from_sqlite_timestamp_text(row[11]),
        )  # fmt: skip
        for row in rows
    ]


def store_results(
    sqlite: sqlite3.Connection, results: Sequence[tuple[str, str, Any, Any]], now: datetime
) -> int:
    """Write (request id, status, result, error) to requests still accepted; returns how many
    rows changed."""
    stamp = sqlite_timestamp_text(now)
    return run_many_direct(
        sqlite,
        _STORE_RESULT,
        [
            (status, json_text(result), json_text(error), stamp, request_id)
            for request_id, status, result, error in results
        ],
    )
