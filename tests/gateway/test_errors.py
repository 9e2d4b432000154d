"""Every error status of the gateway, produced for real and answered as problem+json."""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa

from gateway.auth import hash_api_key, issue_token
from gateway.models import requests
from tests.gateway.conftest import MakeGateway, RunningGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.servers.tansu import TansuServer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    if slug is not None:
        assert problem["type"].endswith("/" + slug), problem["type"]
    return problem  # type: ignore[no-any-return]


async def test_malformed_json_is_400(gw: RunningGateway) -> None:
    response = await gw.client.post(
        "/api/v1/orders", content=b'{"customer_id": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "malformed-json")


async def test_bad_prefer_wait_is_400(gw: RunningGateway) -> None:
    response = await gw.client.post("/api/v1/orders", json=order(), headers={"Prefer": "wait=soon"})
    assert_problem(response, 400, "bad-request")


async def test_not_json_is_415(gw: RunningGateway) -> None:
    response = await gw.client.post(
        "/api/v1/orders", content=b"customer=1", headers={"Content-Type": "text/plain"}
    )
    assert_problem(response, 415)


async def test_body_over_the_limit_is_413_declared_or_streamed(make_gateway: MakeGateway) -> None:
    running = await make_gateway("gw-413", start=False, gateway_body_limit_bytes=100)
    big = {**order(), "customer_id": "x" * 200}
    assert_problem(await running.client.post("/api/v1/orders", json=big), 413, "payload-too-large")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 50

    streamed = await running.client.post(
        "/api/v1/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(streamed, 413)


async def test_input_failing_the_saga_model_is_422_with_field_errors(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    body = {**order(), "total_cents": -5, "country": "XX"}
    del body["customer_id"]
    problem = assert_problem(
        await gw.client.post("/api/v1/orders", json=body), 422, "invalid-input"
    )
    fields = {error["field"] for error in problem["errors"]}
    assert {"customer_id", "total_cents", "country"} <= fields
    assert_problem(await gw.client.post("/api/v1/orders", json=[1, 2]), 422)
    assert not double.starts


async def test_unknown_saga_request_and_path_are_404(gw: RunningGateway) -> None:
    problem = assert_problem(
        await gw.client.post("/api/v1/sagas/nope", json={}), 404, "saga-not-found"
    )
    assert problem["known"] == ["place-order"]
    assert_problem(
        await gw.client.get("/api/v1/requests/00000000-0000-0000-0000-000000000000"),
        404,
        "request-not-found",
    )
    assert_problem(await gw.client.get("/nowhere"), 404)
    assert_problem(await gw.client.get("/api/v1/orders"), 405)


async def test_missing_or_wrong_credentials_are_401(make_gateway: MakeGateway) -> None:
    running = await make_gateway(
        "gw-401", start=False, api_keys={"shop": hash_api_key("k1")}, bearer_secret="tok-secret"
    )
    assert_problem(
        await running.client.post("/api/v1/orders", json=order()), 401, "unauthenticated"
    )
    assert_problem(
        await running.client.post("/api/v1/orders", json=order(), headers={"X-API-Key": "nope"}),
        401,
    )
    forged = issue_token("other-secret", "mallory")
    assert_problem(
        await running.client.post(
            "/api/v1/orders", json=order(), headers={"Authorization": f"Bearer {forged}"}
        ),
        401,
    )
    expired = issue_token("tok-secret", "late", ttl_s=-10)
    assert_problem(
        await running.client.get(
            "/api/v1/requests/x", headers={"Authorization": f"Bearer {expired}"}
        ),
        401,
    )


async def test_not_allowed_saga_or_another_principals_request_is_403(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    running = await make_gateway(
        "gw-403",
        api_keys={
            "shop": {"hash": hash_api_key("k-shop")},
            "reports": {"hash": hash_api_key("k-rep"), "sagas": []},
        },
        bearer_secret="tok-secret",
    )
    assert_problem(
        await running.client.post("/api/v1/orders", json=order(), headers={"X-API-Key": "k-rep"}),
        403,
        "forbidden",
    )
    ok = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Authorization": "ApiKey k-shop"}
    )
    assert ok.status_code == 200
    location = ok.headers["Location"]
    assert (await running.client.get(location, headers={"X-API-Key": "k-shop"})).status_code == 200
    assert_problem(await running.client.get(location, headers={"X-API-Key": "k-rep"}), 403)
    token = issue_token("tok-secret", "shop")
    assert (
        await running.client.get(location, headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200
    assert double.messages[0].principal == "shop"


async def test_rate_limited_caller_gets_429_with_retry_after(make_gateway: MakeGateway) -> None:
    running = await make_gateway("gw-429", start=False, rate_limit_per_s=0.5, rate_limit_burst=2)
    for _ in range(2):
        assert (await running.client.get("/api/v1/requests/x")).status_code == 404
    response = await running.client.get("/api/v1/requests/x")
    assert_problem(response, 429, "rate-limited")
    assert int(response.headers["Retry-After"]) >= 1


async def test_database_down_is_503_and_nothing_is_accepted(
    make_gateway: MakeGateway, stack: str, tmp_path: Path
) -> None:
    dead = (
        "postgresql+asyncpg://postgres@127.0.0.1:1/none"
        if stack == "kafka"
        else f"sqlite+aiosqlite:///{tmp_path}"  # a directory: SQLite cannot open it
    )
    running = await make_gateway("gw-503-db", start=False, database_url=dead)
    response = await running.client.post("/api/v1/orders", json=order())
    problem = assert_problem(response, 503, "database-unavailable")
    assert response.headers["Retry-After"]
    assert "database" in problem["detail"]
    ready = await running.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"


async def test_broker_down_is_503_and_nothing_is_accepted(
    make_gateway: MakeGateway, stack: str, gw: RunningGateway
) -> None:
    if stack == "kafka":
        server = TansuServer().start()
        try:
            running = await make_gateway(
                "gw-503-broker", start=False, kafka_bootstrap=server.bootstrap
            )
        finally:
            server.stop()
    else:
        running = await make_gateway("gw-503-broker", start=False)
        await running.transport.close()
    assert not await running.gateway.broker_health.check()
    response = await running.client.post("/api/v1/orders", json=order())
    assert_problem(response, 503, "broker-unavailable")
    assert response.headers["Retry-After"]
    assert (await running.client.get("/readyz")).status_code == 503
    # Nothing was stored: the shared database has no request.
    async with gw.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(requests)) == 0
