"""Found by fuzzing the stacks: a NUL character (U+0000) in a saga's input made the gateway on
PostgreSQL fail with a 500 (text and jsonb cannot hold it). Now it is a 422 on every database,
and nothing is stored or started."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from gateway.models import requests
from tests.gateway.conftest import MakeGateway, order
from tests.gateway.orchestrator_double import OrchestratorDouble

CASES: list[tuple[dict[str, Any], str]] = [
    (order(customer="c-1\u0000"), "customer_id"),
    ({**order(), "note\u0000": "x"}, "note\\u0000"),
    ({**order(), "items": [{"sku": "sku-1", "quantity": 1, "x": ["a", "\u0000"]}]}, "items.0.x.1"),
]


async def test_input_with_a_nul_character_is_refused_with_422(
    make_gateway: MakeGateway, double: OrchestratorDouble
) -> None:
    running = await make_gateway("gw-nul")
    for body, field in CASES:
        response = await running.client.post(
            "/api/v1/orders", json=body, headers={"Prefer": "respond-async"}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["errors"] == [
            {"field": field, "message": "contains \\u0000", "type": "nul_character"}
        ]
    async with running.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(requests))).scalar() == 0
    # The same order without the NUL goes through.
    ok = await running.client.post(
        "/api/v1/orders", json=order(), headers={"Prefer": "respond-async"}
    )
    assert ok.status_code == 202
    await asyncio.sleep(0.3)
    assert len(double.starts) <= 1
