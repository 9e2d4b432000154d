"""`ship-parcel` sagas (tests/orchestrator/contract_sagas.py, declared with `Command` contracts)
in the console tests' databases, made by the real engine, and a console that loads that saga
beside the console tests' own."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from console.app import create_console_app
from orchestrator.engine.events import Reply
from orchestrator.registry import SagaRegistry, load_registry
from orchestrator.session import SagaSession
from sagaway.messaging.topics import TopicNames
from sagaway.settings.composed import Settings
from tests.orchestrator.contract_sagas import ship_parcel

REGISTRY = SagaRegistry([ship_parcel])
TOPICS = TopicNames("")
SAGA_MODULES = ["tests.console.sagas", "tests.orchestrator.contract_sagas"]


def contract_console(settings: Settings) -> Starlette:
    return create_console_app(
        settings.console,
        messaging=settings.messaging,
        storage=settings.storage,
        registry=load_registry(SAGA_MODULES),
        background=False,
    )


async def start_parcel(engine: AsyncEngine) -> str:
    """A ship-parcel saga waiting for the reply of its first step, `hold`."""
    saga_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        session = SagaSession(conn, REGISTRY, TOPICS)
        session.start(
            saga_id, f"corr-{saga_id}", "ship-parcel", {"parcel_id": "p-1", "weight_g": 900},
            reply_to="gateway.replies", reply_mode="async", principal="alice", origin={},
        )
        await session.flush()
    return saga_id


async def answer(engine: AsyncEngine, saga_id: str, step: str, payload: dict[str, Any]) -> str:
    """Answer `step`'s awaiting command with success, as its participant would."""
    async with engine.begin() as conn:
        session = SagaSession(conn, REGISTRY, TOPICS)
        await session.load([saga_id])
        saga = session.get(saga_id)
        assert saga is not None and saga.state is not None
        track = saga.state.steps[step].track("forward")
        assert track.message_id is not None
        decision = session.apply(
            saga_id,
            Reply(step, track.message_id, track.attempt, "success", payload, time.time()),
        )
        assert decision is not None and decision.rejected is None, decision
        await session.flush()
        return decision.state.status


async def waiting_at_pay(engine: AsyncEngine) -> str:
    """A ship-parcel saga past `hold` and the `tell` group, waiting for `pay` (the pivot)."""
    saga_id = await start_parcel(engine)
    await answer(engine, saga_id, "hold", {"hold_id": "h-1", "shelf": 3})
    await answer(engine, saga_id, "notify", {})
    await answer(engine, saga_id, "log", {})
    return saga_id
