"""Storing final results on an inline SQLite transaction's own sqlite3 connection.

Every saga ends with one final reply, and the replier stored it with two statements through
SQLAlchemy: the select of the requests still waiting (an expanding IN, compiled again per call)
and the update. SQLAlchemy's execution cost several times the statements themselves
(sagaway/sqlite/direct.py says why). `RequestStore.store_results` uses these on inline SQLite and
its SQLAlchemy statements elsewhere; both read and write the same text: JSON through the engines'
serializer and timestamps as SQLAlchemy's SQLite DATETIME writes them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from sagaway.sqlite.direct import run_many_direct, select_direct
from sagaway.storage.database import json_text
from sagaway.storage.models import from_sqlite_timestamp_text, sqlite_timestamp_text


class WaitingRequest(NamedTuple):
    """A `requests` row still accepted, with the columns `RequestState.from_row` reads."""

    id: str
    saga_type: str
    route: str
    mode: str
    status: str
    principal: str | None
    body_hash: str | None
    callback_url: str | None
    result: Any
    error: Any
    received_at: datetime
    completed_at: datetime | None


_STILL_ACCEPTED = (
    "SELECT id, saga_type, route, mode, status, principal, body_hash, callback_url, result,"
    " error, received_at, completed_at FROM requests"
    " WHERE id IN (SELECT value FROM json_each(?)) AND status = 'accepted'"
)
_STORE_RESULT = (
    "UPDATE requests SET status = ?, result = ?, error = ?, completed_at = ?"
    " WHERE id = ? AND status = 'accepted'"
)


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def still_accepted(sqlite: sqlite3.Connection, ids: Sequence[str]) -> list[WaitingRequest]:
    """The requests among `ids` that no final result has reached yet."""
    rows = select_direct(sqlite, _STILL_ACCEPTED, (orjson.dumps(list(ids)),))
    return [
        WaitingRequest(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
            _json(row[8]),
            _json(row[9]),
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
