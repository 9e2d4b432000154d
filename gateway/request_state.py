"""`RequestState`: one row of the gateway's `requests` table as the routes answer it, built by
the request store from SQLAlchemy's rows or, on inline SQLite, from sqlite3's (store_sqlite.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

TERMINAL = frozenset({"completed", "compensated", "failed"})


@dataclass(frozen=True, slots=True)
class RequestState:
    """One row of `requests`, as the routes answer it."""

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

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: Any) -> RequestState:
        return cls(
            id=row.id,
            saga_type=row.saga_type,
            route=row.route,
            mode=row.mode,
            status=row.status,
            principal=row.principal,
            body_hash=row.body_hash,
            callback_url=row.callback_url,
            result=row.result,
            error=row.error,
            received_at=row.received_at,
            completed_at=row.completed_at,
        )
