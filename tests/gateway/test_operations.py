"""/healthz, /readyz, /metrics (internal listener only, unless configured) and /openapi.json."""

from __future__ import annotations

import httpx

from gateway.app import create_internal_app
from tests.gateway.conftest import MakeGateway, RunningGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble


async def test_health_and_readiness(gw: RunningGateway) -> None:
    assert (await gw.client.get("/healthz")).status_code == 200
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "replier": "ok"}


async def test_metrics_are_on_the_internal_listener_only(
    gw: RunningGateway, double: OrchestratorDouble
) -> None:
    assert (await gw.client.post("/api/v1/orders", json=order())).status_code == 200
    await gw.client.get("/api/v1/requests/unknown")
    assert (await gw.client.get("/metrics")).status_code == 404
    internal = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_internal_app(gw.gateway)), base_url="http://i"
    )
    async with internal:
        text = (await internal.get("/metrics")).text
    assert (
        'sagaway_gateway_http_requests_total{method="POST",route="/api/v1/orders",status="200"} 1.0'
        in text
    )
    assert 'route="/api/v1/requests/{request_id}",status="404"' in text
    assert "sagaway_gateway_http_request_duration_seconds_bucket" in text
    assert "sagaway_gateway_pending_sync_requests 0.0" in text
    assert "sagaway_gateway_reply_lag_seconds_count 1.0" in text


async def test_metrics_are_on_the_public_listener_too_only_when_configured(
    make_gateway: MakeGateway,
) -> None:
    running = await make_gateway("gw-public-metrics", gateway_public_metrics=True)
    answer = await running.client.get("/metrics")
    assert answer.status_code == 200
    assert "sagaway_gateway_pending_sync_requests" in answer.text


async def test_openapi_lists_the_routes_with_the_saga_input_models(gw: RunningGateway) -> None:
    document = (await gw.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    for path in ("/api/v1/sagas/place-order", "/api/v1/orders"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": "#/components/schemas/PlaceOrder"}
    schema = document["components"]["schemas"]["PlaceOrder"]
    assert set(schema["required"]) == {"customer_id", "items", "total_cents", "country"}
    assert "OrderLine" in document["components"]["schemas"]
    assert "/api/v1/requests/{id}" in document["paths"]
