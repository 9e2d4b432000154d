"""On inline SQLite accepted requests and their final results are stored on the sqlite3
connection itself (gateway/store_sqlite.py); other engines run SQLAlchemy's statements. Both must
store the same text and answer the same states, or a request would read differently by engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.request_state import RequestState
from gateway.store import FinalResult, RequestStore
from sagaway.messaging.envelope import command
from sagaway.sqlite.direct import holding_inline_transaction
from sagaway.storage.database import create_database_engine
from sagaway.storage.migrate import upgrade
from tests.harness.sqlite_rows import typed_rows

RECEIVED = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
IDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
RESULTS = [
    FinalResult(IDS[0], "completed", {"order": 7, "note": "é", "items": [1, 2]}, None),
    FinalResult(IDS[1], "failed", None, {"step": "pay", "reason": "declined"}),
    FinalResult(IDS[2], "compensated", None, {"step": "ship", "reason": "no van"}),
    FinalResult(IDS[3], "completed", None, None),
    FinalResult("not-a-request-here", "completed", {}, None),
]


def _values(request_id: str, n: int) -> dict[str, Any]:
    return {
        "id": request_id,
        "saga_type": "place-order",
        "route": "/api/v1/orders",
        "mode": "sync",
        "reply_to": "gateway.replies",
        "callback_url": None,
        "idempotency_key": f"alice:key-{n}" if n % 2 else None,
        "body_hash": "h",
        "principal": "alice" if n % 2 else None,
        "gateway_id": "gw-1",
        "status": "accepted",
        "received_at": RECEIVED + timedelta(seconds=n),
    }


async def _run(url: str, inline: bool) -> tuple[list[RequestState], list[RequestState]]:
    """Accept five requests, store results for four of them (and one unknown id) twice; returns
    what each store answered."""
    engine = create_database_engine(url, sqlite_inline=inline)
    try:
        async with engine.begin() as conn:
            assert (holding_inline_transaction(conn) is not None) is inline
        store = RequestStore(engine)
        for n, request_id in enumerate(IDS):
            start = command("orchestrator.start", {}, saga_id=request_id, saga_type="x")
            await store.accept(_values(request_id, n), ("orchestrator.requests", start))
        first = await store.store_results(RESULTS, lambda state: {})
        again = await store.store_results(RESULTS, lambda state: {})  # duplicates: no change
        return first, again
    finally:
        await engine.dispose()


def _rows(path: Path) -> list[tuple[Any, ...]]:
    """Each request's columns as SQLite holds them: storage type and value (completion times
    reduced to their format, as the two runs store them at different moments)."""
    columns = [
        "id", "status", "result", "error", "received_at", "completed_at", "principal", "saga_type",
        "route", "mode", "reply_to", "callback_url", "idempotency_key", "body_hash", "gateway_id",
    ]  # fmt: skip
    out = []
    for row in typed_rows(path, "requests", columns, order_by="id"):
        cells = list(row)
        kind, completed = cells[5]
        if completed is not None:
            cells[5] = (kind, "".join("9" if c.isdigit() else c for c in completed))
        out.append(tuple(cells))
    return out


def _without_completion_time(states: list[RequestState]) -> list[tuple[Any, ...]]:
    return [
        (s.id, s.status, s.result, s.error, s.received_at, s.principal, s.completed_at is None)
        for s in states
    ]


async def test_both_paths_store_the_same_text_and_answer_the_same_states(tmp_path: Path) -> None:
    runs = {}
    for inline in (True, False):
        path = tmp_path / f"{'inline' if inline else 'plain'}.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        first, again = await _run(url, inline)
        runs[inline] = (_without_completion_time(first), again, _rows(path))
    assert runs[True] == runs[False]
    answered, again, rows = runs[True]
    assert [state[:2] for state in answered] == [(r.request_id, r.status) for r in RESULTS[:4]]
    assert answered[0][2] == {"order": 7, "note": "é", "items": [1, 2]}
    assert answered[0][4] == RECEIVED and answered[0][6] is False
    assert again == []
    statuses = [row[1][1] for row in rows]
    assert statuses == ["completed", "failed", "compensated", "completed", "accepted"]
