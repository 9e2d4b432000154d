"""Two gateway instances sharing one database and reply group: every held request gets its
result, whichever instance consumed the reply, and results outlive the instance that held them."""

from __future__ import annotations

import asyncio

from tests.gateway.conftest import MakeGateway, decided, order
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.harness.waiting import eventually


async def test_every_reply_reaches_the_instance_holding_the_request(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    a = await make_gateway("gw-a")
    b = await make_gateway("gw-b")
    # Both are members of the one reply group: each owns some of the reply partitions.

    def split() -> bool:
        owned_a = a.gateway.replier.processor.subscription.assignment()  # type: ignore[union-attr]
        owned_b = b.gateway.replier.processor.subscription.assignment()  # type: ignore[union-attr]
        return bool(owned_a and owned_b and not owned_a & owned_b)

    await eventually(split, timeout_s=15, what="each instance to own some reply partitions")

    responses = await asyncio.gather(
        *(
            (a if i % 2 else b).client.post("/api/v1/orders", json=order(customer=f"c-{i}"))
            for i in range(40)
        )
    )
    assert [r.status_code for r in responses] == [200] * 40
    assert all(r.json()["result"]["order"] == r.json()["id"] for r in responses)
    # Some replies were consumed by the instance that did not hold the request.
    assert a.gateway.replier.processor.handled > 0 and b.gateway.replier.processor.handled > 0
    assert a.gateway.poller.completed > 0 or b.gateway.poller.completed > 0
    assert len(a.gateway.pending) == len(b.gateway.pending) == 0


async def test_a_result_is_readable_from_any_instance_after_the_holder_stopped(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    a = await make_gateway("gw-a")
    b = await make_gateway("gw-b")
    double.slow_s = 1.0
    response = await a.client.post(
        "/api/v1/orders", json=order(customer="slow-x"), headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    await a.gateway.stop()  # the holder is gone before the reply comes
    status = await decided(b.client, response.headers["Location"], timeout_s=10)
    assert status["status"] == "completed"
