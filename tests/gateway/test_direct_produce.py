"""Direct produce: the start commands of requests committed together are published together, in
one produce, and every one of them is still in the outbox for the relay (nothing relies on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa

from sagaway.messaging.records import Record
from sagaway.outbox.models import outbox
from tests.gateway.conftest import MakeGateway, order
from tests.harness.waiting import eventually


async def test_start_commands_committed_together_are_produced_together(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway("gw-a", gateway_run_relay=False, gateway_direct_produce=True)
    topic = gw.gateway.requests_topic
    produced: list[list[Record]] = []
    real_produce = gw.transport.produce

    async def counting_produce(records: Sequence[Record]) -> None:
        ours = [record for record in records if record.topic == topic]
        if ours:
            produced.append(ours)
        await real_produce(records)

    gw.transport.produce = counting_produce  # type: ignore[method-assign]
    responses = await asyncio.gather(
        *(
            gw.client.post("/api/v1/orders", json=order(), headers={"Prefer": "respond-async"})
            for _ in range(30)
        )
    )
    assert [r.status_code for r in responses] == [202] * 30
    ids = {r.json()["id"] for r in responses}
    await eventually(
        lambda: sum(len(batch) for batch in produced) >= 30,
        timeout_s=5,
        what="30 start commands produced",
    )
    keys = [record.key.decode() for batch in produced for record in batch if record.key]
    assert sorted(keys) == sorted(ids)  # each start command once
    assert len(produced) < 30  # shared produces, not one each
    async with gw.engine.connect() as conn:
        waiting = set(
            (
                await conn.execute(sa.select(outbox.c.key).where(outbox.c.published_at.is_(None)))
            ).scalars()
        )
    assert waiting == ids  # the relay (off here) would still send every one
