"""Sagas in every state for the console tests, made by the real engine (SagaSession), not by
hand-written rows: the pages are tested against what the orchestrator actually stores."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.models import requests
from orchestrator.engine.events import Reply
from orchestrator.registry import SagaRegistry
from orchestrator.session import SagaSession
from sagaway.messaging.topics import TopicNames
from tests.console.sagas import CHARGE, HOLD, ISSUE, book_trip

XSS = "<script>alert('pwned')</script>"
REGISTRY = SagaRegistry([book_trip])
TOPICS = TopicNames("")


def trip(traveller: str = "t-1") -> dict[str, Any]:
    return {"traveller": traveller, "seat": "12A", "price_cents": 1200}


async def start(
    engine: AsyncEngine,
    *,
    principal: str = "alice",
    saga_type: str = "book-trip",
    body: dict[str, Any] | None = None,
) -> str:
    saga_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        session = SagaSession(conn, REGISTRY, TOPICS)
        session.start(
            saga_id,
            f"corr-{saga_id}",
            saga_type,
            body or trip(),
            reply_to="gateway.replies",
            reply_mode="async",
            principal=principal,
            origin={},
        )
        await session.flush()
    return saga_id


async def reply(
    engine: AsyncEngine,
    saga_id: str,
    step: str,
    outcome: str,
    payload: dict[str, Any],
    *,
    kind: str = "forward",
) -> str:
    """Answer the awaiting command of `step` as its participant would; returns the new status."""
    async with engine.begin() as conn:
        session = SagaSession(conn, REGISTRY, TOPICS)
        await session.load([saga_id])
        saga = session.get(saga_id)
        assert saga is not None and saga.state is not None
        track = saga.state.steps[step].track(kind)
        assert track.message_id is not None
        decision = session.apply(
            saga_id,
            Reply(step, track.message_id, track.attempt, outcome, payload, time.time()),  # type: ignore[arg-type]
        )
        assert decision is not None and decision.rejected is None, decision
        await session.flush()
        return decision.state.status


async def completed(engine: AsyncEngine, principal: str = "alice") -> str:
    saga_id = await start(engine, principal=principal)
    await reply(engine, saga_id, HOLD, "success", {"hold_id": "h-1"})
    await reply(engine, saga_id, CHARGE, "success", {"payment_id": "p-1"})
    status = await reply(engine, saga_id, ISSUE, "success", {"ticket": "k-1"})
    assert status == "completed"
    return saga_id


async def waiting_at_charge(engine: AsyncEngine, principal: str = "bob") -> str:
    """Running, seat held (the hold id a participant sent holds markup), awaiting the card
    charge's answer."""
    saga_id = await start(engine, principal=principal)
    await reply(engine, saga_id, HOLD, "success", {"hold_id": XSS})
    return saga_id


async def awaiting(engine: AsyncEngine, saga_id: str) -> list[tuple[str, str]]:
    """The (step, kind) pairs whose command the saga is waiting on."""
    async with engine.connect() as conn:
        session = SagaSession(conn, REGISTRY, TOPICS)
        await session.load([saga_id])
        saga = session.get(saga_id)
        assert saga is not None and saga.state is not None
        return [
            (name, kind)
            for name, step in saga.state.steps.items()
            for kind in ("forward", "compensation")
            if step.track(kind).status == "awaiting"
        ]


async def compensated(engine: AsyncEngine) -> str:
    saga_id = await start(engine, principal="carol")
    await reply(engine, saga_id, HOLD, "success", {"hold_id": "h-9"})
    status = await reply(engine, saga_id, CHARGE, "failure", {"reason": "card declined"})
    assert status == "compensating"
    for _ in range(5):  # every compensation the engine asks for succeeds
        for step, kind in await awaiting(engine, saga_id):
            status = await reply(engine, saga_id, step, "success", {}, kind=kind)
        if status == "compensated":
            return saga_id
    raise AssertionError(f"saga {saga_id} did not finish compensating: {status}")


async def failed_on_arrival(engine: AsyncEngine) -> str:
    return await start(engine, saga_type="no-such-saga", principal="dave")


async def accepted_request(
    engine: AsyncEngine, request_id: str, *, mode: str = "sync", gateway_id: str = "gw-1"
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(requests).values(
                id=request_id,
                saga_type="book-trip",
                route="/api/v1/orders",
                mode=mode,
                gateway_id=gateway_id,
                status="accepted",
                received_at=datetime.now(UTC),
            )
        )


async def failed_compensation(engine: AsyncEngine) -> str:
    """Failed: the card was declined and then the seat could not be released."""
    saga_id = await start(engine, principal="erin")
    await reply(engine, saga_id, HOLD, "success", {"hold_id": "h-5"})
    await reply(engine, saga_id, CHARGE, "failure", {"reason": "card declined"})
    status = await reply(
        engine, saga_id, HOLD, "failure", {"reason": "seat system down"}, kind="compensation"
    )
    assert status == "failed"
    return saga_id
