"""Sync, async and timed-out requests through a real broker and database, answered by the
scripted orchestrator double."""

from __future__ import annotations

import asyncio

import httpx

from tests.gateway.conftest import RunningGateway, decided, order
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.harness.waiting import eventually


async def test_sync_request_answers_200_with_the_saga_result(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    response = await gw.client.post("/api/v1/orders", json=order())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["saga_type"] == "place-order"
    assert body["result"] == {"order": body["id"], "total_cents": 1200}
    start = double.messages[0]
    assert start.correlation_id == start.saga_id == body["id"]
    assert start.reply_to == gw.gateway.reply_topic
    assert start.reply_mode == "sync"
    assert start.principal == "anonymous"
    assert start.traceparent


async def test_generic_saga_route_starts_the_named_saga(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    response = await gw.client.post("/api/v1/sagas/place-order", json=order())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


async def test_compensated_saga_answers_409_naming_the_step_and_reason(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    response = await gw.client.post("/api/v1/orders", json=order(country="AQ"))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 409
    assert problem["step"] == "schedule-shipment"
    assert problem["reason"] == "we do not ship to AQ"
    assert problem["saga_status"] == "compensated"
    assert "schedule-shipment" in problem["detail"]


async def test_async_request_answers_202_and_the_status_url_shows_completion(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    response = await gw.client.post(
        "/api/v1/orders", json=order(), headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    location = response.headers["Location"]
    assert location == f"/api/v1/requests/{body['id']}"
    assert double.messages or True

    async def decided_response() -> httpx.Response | None:
        status = await gw.client.get(location)
        assert status.status_code == 200
        if status.json()["status"] != "accepted":
            return status
        assert status.headers["Cache-Control"] == "no-store"
        return None

    status = await eventually(decided_response, timeout_s=10, what=f"{location} to be decided")
    final = status.json()
    assert final["status"] == "completed"
    assert final["result"]["order"] == body["id"]
    etag = status.headers["ETag"]
    assert "immutable" in status.headers["Cache-Control"]
    again = await gw.client.get(location, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert double.messages[0].reply_mode == "async"


async def test_wait_running_out_answers_202_then_the_status_url_shows_completion(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    double.slow_s = 1.5
    response = await gw.client.post(
        "/api/v1/orders", json=order(customer="slow-1"), headers={"Prefer": "wait=0.3"}
    )
    assert response.status_code == 202
    assert response.headers["Retry-After"] == "1"
    location = response.headers["Location"]
    assert (await gw.client.get(location)).json()["status"] == "accepted"
    await asyncio.sleep(1.5)
    status = await decided(gw.client, location, timeout_s=5)
    assert status["status"] == "completed"
    assert len(gw.gateway.pending) == 0
