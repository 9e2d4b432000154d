"""The gateway in front of the real orchestrator and example participants, on both stacks:
the done-when list of the gateway issue, ending with kill -9 of a `sagaway gateway` process while
100 sync requests wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from examples.place_order.saga import place_order
from gateway.callbacks import SIGNATURE_HEADER, verify_signature
from gateway.models import requests
from orchestrator.models import saga_instances
from orchestrator.registry import SagaRegistry
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.gateway.conftest import (
    CALLBACK_SECRET,
    ORDERS_ROUTE,
    SAGA_MODULES,
    MakeGateway,
    RunningGateway,
    decided,
    order,
)
from tests.gateway.receiver import CallbackReceiver, start_receiver, stop_receiver
from tests.harness.stack import EXAMPLE_SERVICES, Servers, Stack, open_stack
from tests.harness.waiting import eventually
from tests.servers.tansu import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def system(
    stack: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The example system's stack, with a database for the gateway too."""
    services = (*EXAMPLE_SERVICES, "gateway")
    opened = await open_stack(stack, tmp_path / "data", Servers.of(stack, request), services)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def gateway_settings(system: Stack) -> Settings:
    """The gateway joins the system's broker and topics, on a database of its own."""
    return system.service_settings("gateway").replace(
        database_url=system.urls["gateway"],
        sagas=SAGA_MODULES,
        routes=[ORDERS_ROUTE],
        gateway_pending_poll_ms=50,
        gateway_default_wait_s=20.0,
        callback_secret=SecretStr(CALLBACK_SECRET),
        callback_allowed_hosts=["127.0.0.1"],
        callback_backoff_s=0.2,
        callback_timeout_s=3.0,
        rate_limit_per_s=0.0,
    )


@pytest.fixture
async def running(system: Stack, make_gateway: MakeGateway) -> RunningGateway:
    await system.roles.start_examples()
    await system.roles.start_orchestrator(SagaRegistry([place_order]))
    return await make_gateway("gw-e2e")


async def _saga_count(system: Stack) -> int:
    rows = await system.rows(
        "orchestrator", sa.select(sa.func.count().label("n")).select_from(saga_instances)
    )
    return int(rows[0]["n"])


async def test_sync_order_completes_with_200(running: RunningGateway) -> None:
    response = await running.client.post("/api/v1/orders", json=order())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"]["customer_id"] == "c-1"
    assert {"reservation_id", "payment_id", "shipment_id"} <= set(body["result"])


async def test_order_to_antarctica_is_409_naming_the_shipping_step(running: RunningGateway) -> None:
    response = await running.client.post("/api/v1/orders", json=order(country="AQ"))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["step"] == place_order.step_names[-1]  # shipping, the pivot
    assert "shipping" in problem["step"]
    assert problem["saga_status"] == "compensated"
    assert "AQ" in problem["reason"]


async def test_async_order_is_202_then_completed_at_the_status_url(running: RunningGateway) -> None:
    response = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    status = await decided(running.client, response.headers["Location"], timeout_s=10)
    assert status["status"] == "completed"


async def test_wait_timeout_is_202_then_the_status_url_shows_completion(
    running: RunningGateway,
) -> None:
    response = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Prefer": "wait=0"}
    )
    assert response.status_code == 202
    assert response.headers["Retry-After"]
    status = await decided(running.client, response.headers["Location"], timeout_s=10)
    assert status["status"] == "completed"


async def test_callback_is_delivered_signed_after_the_receiver_first_fails(
    running: RunningGateway,
) -> None:
    receiver = CallbackReceiver(statuses=[503])
    server, task = await start_receiver(receiver)
    try:
        response = await running.client.post(
            "/api/v1/orders", json=order(), headers={"Callback-Url": receiver.url()}
        )
        assert response.status_code == 202
        await receiver.wait_for(2)
    finally:
        await stop_receiver(server, task)
    last = receiver.received[-1]
    assert verify_signature(CALLBACK_SECRET, last.headers[SIGNATURE_HEADER.lower()], last.body)
    document = orjson.loads(last.body)
    assert document["id"] == response.json()["id"]
    assert document["status"] == "completed"


async def test_same_idempotency_key_50_times_concurrently_is_one_saga(
    running: RunningGateway, system: Stack
) -> None:
    responses = await asyncio.gather(
        *(
            running.client.post("/api/v1/orders", json=order(), headers={"Idempotency-Key": "once"})
            for _ in range(50)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    await asyncio.sleep(0.5)  # the relay's duplicate start command has arrived by now
    assert await _saga_count(system) == 1


async def test_kill_9_while_100_sync_requests_wait_loses_nothing_and_starts_nothing_twice(
    system: Stack,
    gateway_settings: Settings,
) -> None:
    await system.roles.start_examples()
    # The orchestrator is not running yet: every request is accepted and held when the gateway dies.
    port = free_port()
    process = system.start_role(
        "gateway",
        "gateway",
        settings=gateway_settings,
        url=f"http://127.0.0.1:{port}",
        gateway_port=port,
        gateway_internal_port=0,
    )
    process.wait_ready(30)
    bodies = [order(customer=f"c-{1 + i % 5}", total=100 + i) for i in range(100)]
    results: dict[int, httpx.Response] = {}
    killed = asyncio.Event()

    async def client(i: int) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            while True:
                try:
                    response = await http.post(
                        process.url + "/api/v1/orders",
                        json=bodies[i],
                        headers={"Idempotency-Key": f"order-{i}", "Prefer": "wait=60"},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code in (200, 409):
                    results[i] = response
                    return
                assert response.status_code in (202, 503), response.text
                await asyncio.sleep(0.2)

    clients = [asyncio.create_task(client(i)) for i in range(100)]
    assert gateway_settings.storage.database_url is not None
    engine = create_database_engine(gateway_settings.storage.database_url, pool_size=1)
    try:

        async def all_accepted() -> bool:
            async with engine.connect() as conn:
                accepted = await conn.scalar(sa.select(sa.func.count()).select_from(requests))
            return accepted == 100

        await eventually(
            all_accepted,
            timeout_s=30,
            what=lambda: f"100 requests accepted:\n{process.log_tail(5000)}",
            interval_s=0.1,
        )
        await asyncio.sleep(0.3)  # the clients are all held now
        process.kill9()
        killed.set()
        await system.roles.start_orchestrator(SagaRegistry([place_order]))
        process.start()
        process.wait_ready(30)
        await asyncio.wait_for(asyncio.gather(*clients), 120)
    finally:
        for task in clients:
            task.cancel()
        process.stop()
        await engine.dispose()
    assert len(results) == 100
    ids = {i: r.json()["id"] for i, r in results.items()}
    assert len(set(ids.values())) == 100
    assert all(r.status_code == 200 for r in results.values()), [
        r.text for r in results.values() if r.status_code != 200
    ][:3]
    sagas = await system.rows(
        "orchestrator", sa.select(saga_instances.c.id, saga_instances.c.correlation_id)
    )
    assert len(sagas) == 100
    assert {row["correlation_id"] for row in sagas} == set(ids.values())
    assert {row["id"] for row in sagas} == set(ids.values())
