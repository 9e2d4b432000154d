"""Idempotency-Key: one saga per key and body, whatever the concurrency; another body is 422."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from gateway.models import requests
from tests.gateway.conftest import RunningGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble


async def test_same_key_sent_50_times_concurrently_starts_exactly_one_saga(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    headers = {"Idempotency-Key": "order-50"}
    responses = await asyncio.gather(
        *(gw.client.post("/api/v1/orders", json=order(), headers=headers) for _ in range(50))
    )
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses[:3]]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert {r.json()["result"]["order"] for r in responses} == ids
    async with gw.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(requests)) == 1
    await asyncio.sleep(0.3)  # the relay's copy of the start command arrives too
    assert list(double.sagas) == list(ids)
    assert sum(1 for r in responses if r.headers.get("Idempotent-Replayed")) == 49


async def test_same_key_and_body_after_completion_returns_the_same_result(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = await gw.client.post("/api/v1/orders", json=order(), headers=headers)
    second = await gw.client.post("/api/v1/orders", json=order(), headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    failed = await gw.client.post(
        "/api/v1/orders", json=order(country="AQ"), headers={"Idempotency-Key": "k-2"}
    )
    again = await gw.client.post(
        "/api/v1/orders", json=order(country="AQ"), headers={"Idempotency-Key": "k-2"}
    )
    assert failed.status_code == again.status_code == 409
    assert failed.json()["id"] == again.json()["id"]
    assert len(double.sagas) == 2
    # A replayed 409 says so, like a replayed 200 (docs/gateway.md), and both say where to look.
    assert "Idempotent-Replayed" not in failed.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert failed.headers["Location"] == again.headers["Location"]
    assert again.headers["Location"].endswith(f"/api/v1/requests/{again.json()['id']}")


async def test_same_key_with_another_body_is_422(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    headers = {"Idempotency-Key": "k-3"}
    first = await gw.client.post("/api/v1/orders", json=order(total=1), headers=headers)
    assert first.status_code == 200
    other = await gw.client.post("/api/v1/orders", json=order(total=2), headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["request_id"] == first.json()["id"]
    assert len(double.sagas) == 1


async def test_keys_are_scoped_by_principal(make_gateway, double: OrchestratorDouble) -> None:  # type: ignore[no-untyped-def]
    from gateway.auth import hash_api_key

    running = await make_gateway(
        "gw-keys", api_keys={"alice": hash_api_key("ka"), "bob": hash_api_key("kb")}
    )
    a = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Idempotency-Key": "same", "X-API-Key": "ka"}
    )
    b = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Idempotency-Key": "same", "X-API-Key": "kb"}
    )
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] != b.json()["id"]
    assert {m.principal for m in double.messages} == {"alice", "bob"}


async def test_keys_past_their_retention_are_freed(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    from datetime import UTC, datetime, timedelta

    first = await gw.client.post("/api/v1/orders", json=order(), headers={"Idempotency-Key": "old"})
    freed = await gw.gateway.store.forget_idempotency_keys(datetime.now(UTC) + timedelta(seconds=1))
    assert freed == 1
    second = await gw.client.post(
        "/api/v1/orders", json=order(), headers={"Idempotency-Key": "old"}
    )
    assert second.json()["id"] != first.json()["id"]
    assert (await gw.client.get(f"/api/v1/requests/{first.json()['id']}")).status_code == 200
