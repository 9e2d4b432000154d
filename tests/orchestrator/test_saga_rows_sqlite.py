"""On inline SQLite a saga step's statements run on the sqlite3 connection itself
(orchestrator/saga_rows_sqlite.py); the console's SQLite engine (aiosqlite's thread) still runs
SQLAlchemy's. Both must store the same text and read back the same saga, or the console and the
orchestrator would disagree about a saga."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.dsl import saga, step
from orchestrator.engine.events import Reply
from orchestrator.models import saga_steps
from orchestrator.registry import SagaRegistry
from orchestrator.saga_rows import LoadedSaga
from orchestrator.session import SagaSession
from sagaway.messaging.topics import TopicNames
from sagaway.sqlite.direct import holding_inline_transaction
from sagaway.storage.database import create_database_engine
from sagaway.storage.migrate import upgrade
from tests.harness.sqlite_rows import typed_rows
from tests.orchestrator import sagas

# The three-step test saga, with search keys (stored with a new saga).
KEYED = saga(
    "test-three-steps",
    version=1,
    steps=[
        step("reserve", "alpha.reserve", compensate="alpha.release",
             on_reply=sagas.remember("reserve"), **sagas.FAST),
        step("charge", "beta.charge", compensate="beta.refund",
             on_reply=sagas.remember("charge"), **sagas.FAST),
        step("ship", "gamma.ship", on_reply=sagas.remember("ship"), pivot=True, **sagas.FAST),
    ],
    search_keys=("order", "note"),
)  # fmt: skip
REGISTRY = SagaRegistry([KEYED])
TOPICS = TopicNames("")
SAGA_ID = "5a9a0000-0000-4000-8000-000000000001"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?$")


def masked(value: Any) -> Any:
    """`value` with its times' digits replaced: the two runs happen at different moments."""
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    if isinstance(value, float):
        return "<epoch seconds>"
    if isinstance(value, str) and TIMESTAMP.match(value):
        return re.sub(r"\d", "9", value)  # its format kept: both paths must write the same
    return value


def stored(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the saga left, as SQLite holds it: each value's storage type, and the value
    (JSON decoded, times masked)."""
    tables = {
        "saga_instances": "id, saga_type, definition_version, status, current_step, data, state,"
        " result, failure, correlation_id, reply_to, reply_mode, principal, created_at,"
        " updated_at, version",
        "saga_search_keys": "saga_id, name, value",
        "saga_steps": "step_name, kind, status, attempt, command_message_id, command, sent_at,"
        " replied_at, reply_payload, error",
        "timers": "kind, step, attempt, due_at, payload, created_at",
    }
    # saga_search_keys is a WITHOUT ROWID table: its rows in primary key order.
    order_by = {"saga_search_keys": "saga_id, name"}
    return {
        table: [
            tuple(_cell(kind, value) for kind, value in row)
            for row in typed_rows(
                path, table, [c.strip() for c in columns.split(",")], order_by.get(table, "rowid")
            )
        ]
        for table, columns in tables.items()
    }


def _cell(kind: str, value: Any) -> tuple[str, Any]:
    if kind == "text" and value[:1] in ("{", "[", "n", '"'):
        with contextlib.suppress(orjson.JSONDecodeError):
            return kind, masked(orjson.loads(value))
    return kind, masked(value)


async def run_saga(url: str, inline: bool) -> tuple[LoadedSaga, LoadedSaga]:
    """Start the saga, then answer its first command; returns the saga as loaded before the
    reply and after it."""
    engine = create_database_engine(url, sqlite_inline=inline)
    try:
        async with engine.begin() as conn:
            assert (holding_inline_transaction(conn) is not None) is inline
            session = SagaSession(conn, REGISTRY, TOPICS)
            session.start(
                SAGA_ID, "corr-1", "test-three-steps", {"order": 7, "note": "é"},
                reply_to="gateway.replies", reply_mode="sync", principal="alice",
                origin={"traceparent": None},
            )  # fmt: skip
            await session.flush()
        async with engine.begin() as conn:
            session = SagaSession(conn, REGISTRY, TOPICS)
            assert await session.load([SAGA_ID]) == {SAGA_ID}
            before = session.sagas[SAGA_ID]
            (_, (_, step, _, attempt)), *_ = before.timers
            (command,) = [row for row in await _steps(conn) if row["step_name"] == step]
            reply = Reply(
                step=step, causation_id=command["command_message_id"], attempt=attempt,
                outcome="success", payload={"reserved": True}, now=time.time(),
            )  # fmt: skip
            assert session.apply(SAGA_ID, reply) is not None
            await session.flush()
        async with engine.begin() as conn:
            session = SagaSession(conn, REGISTRY, TOPICS)
            await session.load([SAGA_ID])
            return before, session.sagas[SAGA_ID]
    finally:
        await engine.dispose()


async def _steps(conn: AsyncConnection) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in await conn.execute(sa.select(saga_steps))]


def _comparable(saga: LoadedSaga) -> dict[str, Any]:
    fields = {name: getattr(saga, name) for name in LoadedSaga.__slots__}  # type: ignore[attr-defined]
    fields["state"] = saga.state.to_stored(include_data=True) if saga.state else None
    fields["timers"] = [key for _, key in saga.timers]
    return masked({k: v for k, v in fields.items() if k != "created_at"})


async def test_both_paths_store_and_load_a_saga_alike(tmp_path: Path) -> None:
    runs = {}
    for inline in (True, False):
        path = tmp_path / f"{'inline' if inline else 'plain'}.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        loaded = await run_saga(url, inline)
        runs[inline] = (loaded, stored(path))
    (direct_loads, direct_rows), (plain_loads, plain_rows) = runs[True], runs[False]
    assert direct_rows == plain_rows
    assert len(direct_rows["saga_steps"]) == 3  # sent, replied, the next one sent
    assert len(direct_rows["timers"]) == 1  # the first step's timeout gone, the next one's set
    assert [row[1:] for row in direct_rows["saga_search_keys"]] == [
        (("text", "note"), ("text", "é")),
        (("text", "order"), ("text", "7")),
    ]
    for direct, plain in zip(direct_loads, plain_loads, strict=True):
        assert _comparable(direct) == _comparable(plain)
        assert direct.created_at.tzinfo is not None and plain.created_at.tzinfo is not None
    assert direct_loads[1].version == 2


async def test_a_step_that_keeps_the_status_does_not_set_it(tmp_path: Path) -> None:
    """SQLite rewrites the entries of every index on a column an UPDATE sets, even to the same
    value, and three of `saga_instances`' indexes hold `status`: a step that leaves the saga
    running must not name it, and the step that ends the saga must."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'o.db'}"
    upgrade(url)
    engine = create_database_engine(url)
    updates: list[list[str]] = []
    try:
        async with engine.begin() as conn:
            session = SagaSession(conn, REGISTRY, TOPICS)
            session.start(
                SAGA_ID, "corr-1", "test-three-steps", {"order": 7, "note": "x"},
                reply_to="gateway.replies", reply_mode="sync", principal=None,
                origin={"traceparent": None},
            )  # fmt: skip
            await session.flush()
        for _ in range(3):  # reserve, charge, ship: each succeeds
            async with engine.begin() as conn:
                sqlite = holding_inline_transaction(conn)
                assert sqlite is not None
                seen: list[str] = []
                sqlite.set_trace_callback(seen.append)
                session = SagaSession(conn, REGISTRY, TOPICS)
                await session.load([SAGA_ID])
                (_, (_, step, _, attempt)), *_ = session.sagas[SAGA_ID].timers
                (command,) = [
                    row for row in await _steps(conn)
                    if row["step_name"] == step and row["status"] == "sent"
                ]  # fmt: skip
                reply = Reply(
                    step=step, causation_id=command["command_message_id"], attempt=attempt,
                    outcome="success", payload={}, now=time.time(),
                )  # fmt: skip
                assert session.apply(SAGA_ID, reply) is not None
                await session.flush()
                sqlite.set_trace_callback(None)
                updates.append([sql for sql in seen if sql.startswith("UPDATE saga_instances")])
        async with engine.connect() as conn:
            status = await conn.scalar(sa.text("SELECT status FROM saga_instances"))
    finally:
        await engine.dispose()
    assert [len(statements) for statements in updates] == [1, 1, 1]
    assert ["status =" in statements[0] for statements in updates] == [False, False, True]
    assert status == "completed"
