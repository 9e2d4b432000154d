"""The gateway's request store on SQLite and PostgreSQL. Accepts are group-committed: concurrent
requests share a transaction, yet each keeps its own answer — a taken idempotency key fails only
its request, an outage fails all and stores none, and a client that goes away does not take the
others' batch with it. Final results are stored by batch, each request once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.models import callbacks, requests
from gateway.problems import DatabaseUnavailable
from gateway.store import FinalResult, RequestStore
from sagaway.messaging.envelope import Message, command
from sagaway.outbox.models import outbox
from sagaway.storage.database import create_database_engine


@pytest.fixture
async def engine(migrated_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(migrated_db_url)
    yield engine
    await engine.dispose()


def request_values(idempotency_key: str | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "saga_type": "place-order",
        "route": "/api/v1/orders",
        "mode": "sync",
        "reply_to": "gateway.replies",
        "callback_url": None,
        "idempotency_key": idempotency_key,
        "body_hash": "h",
        "principal": None,
        "gateway_id": "gw-1",
        "status": "accepted",
        "received_at": datetime.now(UTC),
    }


def start_of(values: dict[str, Any]) -> tuple[str, Message]:
    message = command("orchestrator.start", {"n": 1}, saga_id=values["id"], saga_type="x")
    return ("orchestrator.requests", message)


async def stored_ids(engine: AsyncEngine) -> tuple[set[str], set[str]]:
    """The ids in `requests`, and the saga ids of start commands in the outbox."""
    async with engine.connect() as conn:
        rows = set((await conn.execute(sa.select(requests.c.id))).scalars())
        keys = set((await conn.execute(sa.select(outbox.c.key))).scalars())
    return rows, keys


def count_commits(engine: AsyncEngine) -> list[int]:
    commits = [0]

    @event.listens_for(engine.sync_engine, "commit")
    def _counted(conn: Any) -> None:
        commits[0] += 1

    return commits


async def test_concurrent_accepts_share_transactions_and_all_commit(engine: AsyncEngine) -> None:
    store = RequestStore(engine)
    commits = count_commits(engine)
    batch = [request_values() for _ in range(50)]
    await asyncio.gather(*(store.accept(values, start_of(values)) for values in batch))
    rows, keys = await stored_ids(engine)
    expected = {values["id"] for values in batch}
    assert rows == expected and keys == expected
    assert commits[0] < 10  # 50 requests, far fewer transactions


async def test_a_taken_idempotency_key_fails_only_its_own_request(engine: AsyncEngine) -> None:
    store = RequestStore(engine)
    first = request_values("key-1")
    await store.accept(first, start_of(first))
    again = request_values("key-1")
    others = [request_values() for _ in range(10)]
    batch = [*others[:5], again, *others[5:]]
    outcomes = await asyncio.gather(
        *(store.accept(values, start_of(values)) for values in batch), return_exceptions=True
    )
    assert isinstance(outcomes[5], sa.exc.IntegrityError)
    assert [outcome for i, outcome in enumerate(outcomes) if i != 5] == [None] * 10
    rows, keys = await stored_ids(engine)
    expected = {first["id"], *(values["id"] for values in others)}
    assert rows == expected and keys == expected  # the refused request left nothing behind


async def test_an_outage_fails_every_request_of_the_batch_and_stores_none(
    engine: AsyncEngine, db_kind: str, tmp_path: Path
) -> None:
    store = RequestStore(engine)
    dead = create_database_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:1/none"
        if db_kind == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path}"  # a directory: cannot be opened
    )
    store.engine = dead
    try:
        batch = [request_values() for _ in range(5)]
        outcomes = await asyncio.gather(
            *(store.accept(values, start_of(values)) for values in batch), return_exceptions=True
        )
    finally:
        store.engine = engine
        await dead.dispose()
    assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes), outcomes
    assert await stored_ids(engine) == (set(), set())
    # Back up: the next requests are stored.
    values = request_values()
    await store.accept(values, start_of(values))
    assert (await stored_ids(engine))[0] == {values["id"]}


async def test_a_cancelled_request_does_not_cancel_the_others(engine: AsyncEngine) -> None:
    store = RequestStore(engine)
    batch = [request_values() for _ in range(20)]
    tasks = [asyncio.create_task(store.accept(values, start_of(values))) for values in batch]
    await asyncio.sleep(0)  # all submitted; the writer has not run yet
    tasks[3].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[3], asyncio.CancelledError)
    assert outcomes[:3] + outcomes[4:] == [None] * 19
    rows, _ = await stored_ids(engine)
    # The cancelled one was committed with its batch, as if the commit had won the race.
    assert rows == {values["id"] for values in batch}


async def test_a_batch_of_results_stores_each_waiting_request_once(engine: AsyncEngine) -> None:
    store = RequestStore(engine)
    batch = [request_values() for _ in range(4)]
    batch[2]["callback_url"] = "http://127.0.0.1:9/hook"
    await asyncio.gather(*(store.accept(values, start_of(values)) for values in batch))
    done, failed, hooked, later = (values["id"] for values in batch)
    await store.store_results([FinalResult(done, "completed", {"ok": 1}, None)], lambda s: {})
    stored = await store.store_results(
        [
            FinalResult(done, "failed", None, {"reason": "a late duplicate"}),  # already final
            FinalResult(failed, "failed", None, {"step": "pay", "reason": "declined"}),
            FinalResult("no-such-request", "completed", {}, None),
            FinalResult(hooked, "compensated", None, {"step": "ship", "reason": "no"}),
        ],
        lambda state: {"id": state.id, "status": state.status},
    )
    assert [(s.id, s.status) for s in stored] == [(failed, "failed"), (hooked, "compensated")]
    assert stored[0].error == {"step": "pay", "reason": "declined"}
    assert stored[0].completed_at is not None and stored[0].received_at is not None
    assert stored[1].callback_url == "http://127.0.0.1:9/hook"
    # What the answers were built from is what a reader of the table gets.
    for state in stored:
        assert await store.get(state.id) == state
    assert (await store.get(done)).status == "completed"  # type: ignore[union-attr]
    assert (await store.get(later)).status == "accepted"  # type: ignore[union-attr]
    async with engine.connect() as conn:
        hooks = (await conn.execute(sa.select(callbacks.c.request_id, callbacks.c.body))).all()
    assert hooks == [(hooked, {"id": hooked, "status": "compensated"})]
