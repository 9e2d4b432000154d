"""Gateway fixtures: a gateway in process (httpx over ASGI) on each stack — embedded broker +
SQLite, and Kafka protocol (tansu) + PostgreSQL — with the scripted orchestrator double."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import SERVICE, Gateway, create_gateway_app
from orchestrator.registry import load_registry
from sagaway.messaging.factory import make_transport
from sagaway.messaging.transport import Transport
from sagaway.outbox.choose import Relay, make_relay
from sagaway.settings import GatewaySettings, RouteConfig
from sagaway.settings.composed import Settings
from sagaway.storage.database import create_database_engine
from tests.fixtures.broker import tuned_settings
from tests.gateway.orchestrator_double import OrchestratorDouble
from tests.harness.waiting import eventually

SAGA_MODULES = ["examples.place_order.saga"]
ORDERS_ROUTE = RouteConfig(method="POST", path="/api/v1/orders", saga="place-order")
CALLBACK_SECRET = "test-callback-secret"


def routes_variable(routes: Sequence[RouteConfig]) -> str:
    """SAGAWAY_ROUTES for a subprocess that serves `routes`."""
    return orjson.dumps([route.model_dump() for route in routes]).decode()


def order(customer: str = "c-1", country: str = "FR", total: int = 1200) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"sku": "sku-1", "quantity": 2}],
        "total_cents": total,
        "country": country,
    }


def gateway_test_settings(
    data_dir: Path, kafka_bootstrap: str | None, database_url: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "sagas": SAGA_MODULES,
        "routes": [ORDERS_ROUTE],
        "gateway_pending_poll_ms": 50,
        "gateway_default_wait_s": 10.0,
        "callback_secret": CALLBACK_SECRET,
        "callback_allowed_hosts": ["127.0.0.1"],
        "callback_backoff_s": 0.2,
        "callback_timeout_s": 3.0,
        "rate_limit_per_s": 0,
        "relay_poll_interval_ms": 10,
        "relay_heartbeat_interval_s": 30.0,
        "relay_slot_name": f"gw_{uuid.uuid4().hex[:12]}",
    }
    values.update(overrides)
    return tuned_settings(data_dir, kafka_bootstrap, **values)


async def decided(client: httpx.AsyncClient, location: str, timeout_s: float) -> dict[str, Any]:
    """The document at a request's status URL once its status is no longer `accepted`."""

    async def document() -> dict[str, Any] | None:
        found: dict[str, Any] = (await client.get(location)).json()
        return found if found["status"] != "accepted" else None

    return await eventually(
        document, timeout_s=timeout_s, what=f"{location} to be more than accepted"
    )


@pytest.fixture(params=["embedded", "kafka"])
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway_settings(stack: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if stack == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        url = request.getfixturevalue("migrated_pg_url")
    else:
        bootstrap = None
        url = request.getfixturevalue("migrated_sqlite_url")
    return gateway_test_settings(tmp_path / "data", bootstrap, url)


@dataclass
class RunningGateway:
    gateway: Gateway
    client: httpx.AsyncClient
    transport: Transport
    engine: AsyncEngine
    app: Starlette

    def client_from(self, address: str) -> httpx.AsyncClient:
        """Another in-process client, whose requests come from `address` (the caller closes)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30)

    @property
    def settings(self) -> GatewaySettings:
        return self.gateway.settings


MakeGateway = Callable[..., Awaitable[RunningGateway]]


def gateway_relay(settings: Settings, engine: AsyncEngine, transport: Transport) -> Relay | None:
    """The relay `sagaway gateway` would run beside the gateway (None: gateway_run_relay off)."""
    if not settings.gateway.gateway_run_relay:
        return None
    return make_relay(
        settings.relay, SERVICE, engine, transport, settings.gateway.gateway_relay_mode
    )


@pytest.fixture
async def make_gateway(gateway_settings: Settings) -> AsyncIterator[MakeGateway]:
    running: list[RunningGateway] = []

    async def make(
        instance_id: str | None = None, *, start: bool = True, **overrides: Any
    ) -> RunningGateway:
        settings = gateway_settings.replace(**overrides) if overrides else gateway_settings
        assert settings.storage.database_url is not None
        engine = create_database_engine(settings.storage.database_url, pool_size=5)
        transport = make_transport(settings.messaging)
        await transport.start()
        registry = load_registry(settings.orchestrator.sagas or [])
        app = create_gateway_app(
            settings.gateway,
            registry,
            engine,
            transport,
            relay=gateway_relay(settings, engine, transport),
            instance_id=instance_id,
            manage_lifecycle=False,
        )
        gateway: Gateway = app.state.gateway
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", timeout=30
        )
        item = RunningGateway(gateway, client, transport, engine, app)
        running.append(item)
        if start:
            await gateway.start()
            await gateway.replier.processor.wait_assigned()
        return item

    yield make
    for item in reversed(running):
        await item.client.aclose()
        if item.gateway.started:
            await item.gateway.stop()
        await item.transport.close()
        await item.engine.dispose()


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> RunningGateway:
    return await make_gateway("gw-a")


@pytest.fixture
async def double(gateway_settings: Settings) -> AsyncIterator[OrchestratorDouble]:
    transport = make_transport(gateway_settings.messaging)
    await transport.start()
    orchestrator = OrchestratorDouble(transport)
    await orchestrator.start()
    yield orchestrator
    await orchestrator.stop()
    await transport.close()
