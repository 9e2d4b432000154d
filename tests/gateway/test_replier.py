"""The replier stores each final reply once; it waits out a database outage instead of
dead-lettering replies, and sends malformed ones to the DLQ."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.replier import MalformedFinalReply, parse_final_reply
from sagaway.messaging.envelope import Message
from sagaway.storage.database import create_database_engine
from tests.gateway.conftest import RunningGateway, order
from tests.gateway.orchestrator_double import final_reply


async def test_replies_wait_out_a_database_outage_and_are_stored_after_it(
    gw: RunningGateway, stack: str, tmp_path: Path
) -> None:
    response = await gw.client.post(
        "/api/v1/orders", json=order(), headers={"Prefer": "respond-async"}
    )
    request_id = response.json()["id"]
    start = Message(
        message_type="command",
        command="orchestrator.start",
        payload=order(),
        saga_id=request_id,
        saga_type="place-order",
        correlation_id=request_id,
        reply_mode="async",
    )
    reply = final_reply(start, "completed", {"done": True}, None)
    record = reply.to_record(gw.gateway.reply_topic)
    store = gw.gateway.store
    real_engine = store.engine
    dead = create_database_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:1/none"
        if stack == "kafka"
        else f"sqlite+aiosqlite:///{tmp_path}"
    )
    store.engine = dead
    try:
        handling = asyncio.create_task(gw.gateway.replier.handle_batch([(record, reply)]))
        await asyncio.sleep(0.6)
        assert not handling.done()  # still retrying, not failed (which would dead-letter)
        store.engine = real_engine
        await asyncio.wait_for(handling, 10)
    finally:
        store.engine = real_engine
        await dead.dispose()
    status = (await gw.client.get(f"/api/v1/requests/{request_id}")).json()
    assert status["status"] == "completed"
    assert status["result"] == {"done": True}
    # A duplicate of the reply changes nothing.
    duplicate = final_reply(start, "compensated", None, {"step": "x", "reason": "late"})
    await gw.gateway.replier.handle_batch([(record, duplicate)])
    assert (await gw.client.get(f"/api/v1/requests/{request_id}")).json()["status"] == "completed"


def test_a_reply_that_is_not_final_is_refused() -> None:
    start = Message(
        message_type="command",
        command="orchestrator.start",
        payload={},
        saga_id="s",
        correlation_id="s",
    )
    with pytest.raises(MalformedFinalReply):
        parse_final_reply(final_reply(start, "running", None, None))
    with pytest.raises(MalformedFinalReply):
        parse_final_reply(start)
    result = parse_final_reply(final_reply(start, "failed", None, None))
    assert result.failure == {"step": None, "reason": "the saga ended failed"}
